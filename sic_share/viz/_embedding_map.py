"""The embedding seen on the slide: a 3-D UMAP (or PCA) of the patch embeddings drawn as RGB squares.

The paper's visualisation: patches that the network finds alike get alike
colours, so tissue structure appears at the patches' places without a single
pixel of the slide. :func:`embedding_rgb` turns embeddings into colours,
:func:`render_embedding_map` draws them, :func:`write_embedding_map` is the
``sic-share umap`` workflow on one slide of a local or hub dataset, with
optional seed and SIC-result overlays and a TissUUmaps CSV.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sic_share.errors import SicShareError
from sic_share.viz._common import (
    PixelIndex,
    atomic_write,
    check_max_side,
    check_patch_size,
    check_target,
    import_extra,
    pixel_index,
)
from sic_share.viz._palette import class_colors, hex_color
from sic_share.viz._render import add_caption, png_bytes, render_overlay

__all__ = ["METHODS", "MapResult", "embedding_rgb", "read_result", "render_embedding_map", "write_embedding_map"]

#: Ways to reduce embeddings to three colour channels.
METHODS = ("umap", "pca")
_BACKGROUNDS = {"white": (255, 255, 255, 255), "black": (0, 0, 0, 255), "transparent": (255, 255, 255, 0)}
_SMALL_DATA = 4096  # below this, umap-learn computes exact neighbours itself (and compiles much faster)
_GAP = 8  # pixels between the map and the result panel


# -- colours from embeddings -----------------------------------------------------------------------


def import_umap() -> Any:
    return import_extra("umap", package="umap-learn", extra="umap", needed_for="method 'umap'",
                        instead="use method='pca'")


def check_method(method: Any) -> str:
    if method not in METHODS:
        raise SicShareError(f"method={method!r} is not known: use 'umap' or 'pca'")
    return str(method)


def _check_X(X: Any) -> np.ndarray:
    values = np.asarray(X)
    if values.ndim != 2 or values.shape[1] == 0 or values.dtype.kind not in "fiu":
        raise SicShareError(f"embeddings of shape {values.shape} and dtype {values.dtype} should be a numeric "
                            "(n_patches, dim) array")
    values = values.astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        raise SicShareError("embeddings hold NaN or infinite values: re-export the slide or drop those patches")
    return values


def _check_clip(clip: Any) -> tuple[float, float]:
    if clip is None:
        return 0.0, 100.0
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not (0.0 <= lo < hi <= 100.0):
        raise SicShareError(f"clip={clip!r} should be two percentiles (low, high) with 0 <= low < high <= 100")
    return lo, hi


def _pca(X: np.ndarray, n_components: int, random_state: int | None) -> np.ndarray:
    """Principal components with a sign fixed by the data, padded with zeros when dim < n_components."""
    from sklearn.decomposition import PCA

    k = min(n_components, X.shape[0], X.shape[1])
    pca = PCA(n_components=k, random_state=random_state)
    scores = pca.fit_transform(X)
    # Sign convention: each component's largest loading (by magnitude) is positive.
    top = np.argmax(np.abs(pca.components_), axis=1)
    signs = np.sign(pca.components_[np.arange(k), top])
    scores = scores * np.where(signs == 0, 1.0, signs)
    out = np.zeros((X.shape[0], n_components), np.float32)
    out[:, :k] = scores
    return out


def _umap(
    X: np.ndarray,
    dims: Sequence[int],
    *,
    random_state: int | None,
    n_neighbors: int,
    min_dist: float,
    metric: str,
    n_epochs: int | None,
) -> list[np.ndarray]:
    """One UMAP per entry of ``dims``, sharing the nearest-neighbour graph on large inputs."""
    import warnings

    umap = import_umap()
    n = X.shape[0]
    if n < max(dims) + 2:
        raise SicShareError(f"UMAP to {max(dims)}-D needs at least {max(dims) + 2} patches, this slide has {n}: "
                            "use method='pca'")
    options: dict[str, Any] = {
        "n_neighbors": n_neighbors, "min_dist": min_dist, "metric": metric, "n_epochs": n_epochs,
        "random_state": random_state, "n_jobs": 1 if random_state is not None else -1,
    }
    out = []
    try:
        with warnings.catch_warnings():
            # "n_neighbors is larger than the dataset size" and the like: the result is still usable.
            warnings.simplefilter("ignore", UserWarning)
            if n >= _SMALL_DATA:  # one neighbour search for every fit; the same path whatever dims
                from sklearn.utils import check_random_state
                from umap.umap_ import nearest_neighbors

                options["precomputed_knn"] = nearest_neighbors(
                    X, n_neighbors, metric, {}, False, check_random_state(random_state),
                    low_memory=True, n_jobs=options["n_jobs"])
            for dim in dims:
                out.append(np.asarray(umap.UMAP(n_components=dim, **options).fit_transform(X), np.float32))
    except ValueError as exc:
        raise SicShareError(f"UMAP failed on these embeddings ({str(exc).splitlines()[0]}): "
                            "check n_neighbors and metric, or use method='pca'") from None
    return out


def reduce_embeddings(
    X: Any,
    dims: Sequence[int],
    *,
    method: str,
    random_state: int | None,
    n_neighbors: int,
    min_dist: float,
    metric: str,
    n_epochs: int | None,
) -> list[np.ndarray]:
    """Check the inputs once, then ``len(dims)`` embeddings of ``X`` (PCA: the first components)."""
    method = check_method(method)
    values = _check_X(X)
    if not isinstance(n_neighbors, (int, np.integer)) or isinstance(n_neighbors, bool) or n_neighbors < 2:
        raise SicShareError(f"n_neighbors={n_neighbors!r} should be an integer >= 2")
    if not (isinstance(min_dist, (int, float)) and 0.0 <= float(min_dist)):
        raise SicShareError(f"min_dist={min_dist!r} should be a number >= 0")
    if n_epochs is not None and (not isinstance(n_epochs, (int, np.integer)) or n_epochs < 1):
        raise SicShareError(f"n_epochs={n_epochs!r} should be a positive integer or None")
    if method == "pca":
        if values.shape[0] < 2:
            raise SicShareError(f"PCA needs at least 2 patches, this slide has {values.shape[0]}")
        scores = _pca(values, max(dims), random_state)
        return [scores[:, :d] for d in dims]
    return _umap(values, dims, random_state=random_state, n_neighbors=int(n_neighbors), min_dist=float(min_dist),
                 metric=metric, n_epochs=n_epochs)


def scale_to_unit(coords: np.ndarray, clip: tuple[float, float] | None = (1, 99)) -> np.ndarray:
    """Scale each column to [0, 1] between two of its percentiles, clipping beyond them.

    Parameters
    ----------
    coords : ndarray of shape (n_patches, k)
    clip : (float, float) or None, default=(1, 99)
        Low and high percentile; None (or ``(0, 100)``) is plain min-max.

    Returns
    -------
    ndarray of shape (n_patches, k), float32, in [0, 1]
        A constant column is 0.5 (mid grey on its channel).
    """
    lo_q, hi_q = _check_clip(clip)
    values = np.asarray(coords, np.float64)
    if values.shape[0] == 0:
        return np.zeros(values.shape, np.float32)
    lo, hi = np.percentile(values, [lo_q, hi_q], axis=0)
    span = hi - lo
    flat = span <= 0
    scaled = (values - lo) / np.where(flat, 1.0, span)
    scaled[:, flat] = 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def embedding_rgb(
    X: Any,
    *,
    method: str = "umap",
    random_state: int | None = 0,
    clip: tuple[float, float] | None = (1, 99),
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    n_epochs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One RGB colour per patch from its embedding: the paper's 3-D UMAP read as red, green and blue.

    Parameters
    ----------
    X : array-like of shape (n_patches, dim)
        Patch embeddings (``SlideData.embeddings``).
    method : {"umap", "pca"}, default="umap"
        ``"umap"``: a 3-D UMAP (umap-learn, the optional extra
        ``sic-share[umap]``). ``"pca"``: the first three principal components
        (scikit-learn), much faster and linear.
    random_state : int or None, default=0
        Seed of UMAP (and of PCA's randomized solver on large inputs). The same
        seed gives the same colours on the same data and machine. None lets
        UMAP run in parallel, with colours that change from run to run.
    clip : (float, float) or None, default=(1, 99)
        Percentiles of each axis that map to 0 and 1; values beyond are
        clipped. None is plain min-max, as the authors did.
    n_neighbors, min_dist, metric : default 15, 0.1, "euclidean"
        UMAP's neighbourhood size, packing and input metric (umap-learn's
        defaults). Ignored by PCA.
    n_epochs : int, optional
        UMAP's optimisation epochs; None is umap-learn's default (200 on
        10 000 patches or more, else 500). Fewer is faster and rougher.

    Returns
    -------
    rgb : ndarray of shape (n_patches, 3), float32
        Colours in [0, 1].
    coords3 : ndarray of shape (n_patches, 3), float32
        The 3-D embedding before scaling (UMAP coordinates, or PCA scores).

    Raises
    ------
    SicShareError
        One sentence: embeddings not a finite numeric 2-D array, an unknown
        method, bad settings, too few patches (UMAP to 3-D needs 5), or
        umap-learn not installed (says what to install, or to use PCA).

    Notes
    -----
    Scaling. Each axis is scaled separately between its 1st and 99th
    percentile and clipped, where the authors (DEPICTER) scale by the minimum
    and maximum. UMAP often throws a few patches far away (debris, pen marks,
    folds); with min-max, one such patch squeezes every other patch into a
    narrow band of one channel and the map turns flat. Clipping costs the
    outliers their distinct colour (they saturate at 0 or 1), which is the
    trade we want for seeing tissue structure. ``clip=None`` reproduces the
    authors' scaling.

    Reproducibility. A fixed ``random_state`` makes umap-learn run its
    optimisation on one thread (its rule, so that the result is repeatable);
    expect a few minutes for 100 000 patches. PCA components have no
    intrinsic sign, so each is flipped to make its largest loading positive:
    the same data always gives the same colours, whatever the solver's sign.

    Metric. DEPICTER L2-normalises embeddings before its UMAP; on normalised
    vectors Euclidean distance ranks neighbours as cosine distance does, so
    ``metric="cosine"`` follows the authors where vector length is noise.

    Cost. The first UMAP in a process compiles umap-learn's numba code
    (about 20 s; on 4096 patches or more, where approximate neighbours are
    used, about a minute more).
    """
    (coords3,) = reduce_embeddings(X, (3,), method=method, random_state=random_state, n_neighbors=n_neighbors,
                         min_dist=min_dist, metric=metric, n_epochs=n_epochs)
    return scale_to_unit(coords3, clip), coords3


def hex_colors(rgb: np.ndarray) -> list[str]:
    """Colours in [0, 1] of shape (n, 3) as ``#rrggbb`` strings."""
    return [hex_color(c) for c in _to_uint8(rgb).tolist()]


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(rgb, np.float64), 0.0, 1.0) * 255).astype(np.uint8)


# -- drawing ---------------------------------------------------------------------------------------


def _check_rgb(rgb: Any, n: int) -> np.ndarray:
    values = np.asarray(rgb)
    if values.shape != (n, 3) or values.dtype.kind not in "fiu" or not np.isfinite(values).all():
        raise SicShareError(f"rgb of shape {values.shape} should be ({n}, 3) finite colours in [0, 1], one per patch")
    return values


def _check_labels(labels: Any, n: int, n_classes: int, what: str) -> np.ndarray:
    values = np.asarray(labels)
    if values.shape != (n,) or values.dtype.kind not in "iu":
        raise SicShareError(f"{what} of shape {values.shape} should be ({n},) class indices, -1 for none")
    if values.size and (values.min() < -1 or values.max() >= n_classes):
        raise SicShareError(f"{what} hold class indices beyond the {n_classes} classes named: name every class")
    return values.astype(np.int64)


def _draw_seeds(image: Any, coords: np.ndarray, seeds: np.ndarray, colors: list[tuple[int, int, int]],
                pixels: PixelIndex) -> None:
    """A disc in the class colour, ringed in black, at each seeded patch's centre."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    radius = max(3.0, 0.3 * pixels.cell_px)
    ring = max(1, round(radius / 4))
    for i in np.flatnonzero(seeds >= 0):
        x, y = coords[i] / pixels.scale
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(*colors[seeds[i]], 255),
                     outline=(0, 0, 0, 255), width=ring)


def render_embedding_map(
    *,
    coords: np.ndarray,
    rgb: np.ndarray,
    patch_size: float,
    max_side: int = 1500,
    background: str = "white",
    seeds: np.ndarray | None = None,
    result: np.ndarray | None = None,
    classes: Sequence[str] = (),
    colors: Mapping[str, Any] | Sequence[Any] | None = None,
    title: str | None = None,
) -> Any:
    """Draw each patch's cell in its own colour, with optional seeds and a SIC result beside it.

    Parameters
    ----------
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y).
    rgb : array-like of shape (n_patches, 3)
        Colour of each patch in [0, 1] (:func:`embedding_rgb`).
    patch_size : float
        Patch side in level-0 pixels.
    max_side : int, default=1500
        Longest side of the map in pixels, 16 to 20000 (of each panel when a
        result is drawn beside it).
    background : {"white", "black", "transparent"}, default="white"
        Where there is no patch (glass, background removed at export).
    seeds : array-like of shape (n_patches,), int, optional
        Seed class per patch, -1 for none: drawn as discs in the class colour.
    result : array-like of shape (n_patches,), int, optional
        SIC class per patch, -1 for none: drawn as a second panel on the
        right, in class colours, the same size and scale as the map.
    classes : sequence of str
        Class names of ``seeds`` and ``result`` (needed with either).
    colors : mapping or sequence, optional
        Class colours, see :func:`class_colors`.
    title : str, optional
        A line of text in a band below the panels (see :func:`add_caption`).

    Returns
    -------
    PIL.Image.Image
        RGBA. ``Image.info["level0_per_pixel"]`` holds the scale; the map
        starts at the slide's origin (0, 0), like :func:`render_overlay`.

    Notes
    -----
    Each patch paints its cell (the stride-sized square around its centre, see
    :func:`sic_share.viz.class_geometries`), exactly where
    :func:`render_overlay` would paint its class. Seeds are discs rather than
    outlines so that they stay visible on any colour and at any zoom (at least
    3 pixels in radius). A SIC result is a panel of its own rather than
    boundaries over the map: class boundaries drawn over a map of many colours
    are hard to tell from the colour edges themselves, while two aligned
    panels let the eye compare "where the embedding changes" with "where SIC
    drew the line". With seeds or a result, a legend of the classes is added
    below.
    """
    from PIL import Image

    data = np.asarray(coords)
    if data.ndim != 2 or data.shape[1:] != (2,) or data.dtype.kind not in "fiu" or not np.isfinite(data).all():
        raise SicShareError(f"coords of shape {data.shape} should be (n_patches, 2) finite level-0 patch centres")
    points = data.astype(np.float64)
    n = len(points)
    colours = _check_rgb(rgb, n)
    size = check_patch_size(patch_size)
    check_max_side(max_side)
    if background not in _BACKGROUNDS:
        raise SicShareError(f"background={background!r} should be one of {sorted(_BACKGROUNDS)}")
    names = tuple(classes)
    if (seeds is not None or result is not None) and not names:
        raise SicShareError("seeds or a result were given without their class names: pass classes")
    seed_labels = None if seeds is None else _check_labels(seeds, n, len(names), "seeds")
    result_labels = None if result is None else _check_labels(result, n, len(names), "result labels")
    palette = class_colors(names, colors) if names else []

    pixels = pixel_index(points, size, max_side)
    lut = np.concatenate([np.column_stack([_to_uint8(colours), np.full(n, 255, np.uint8)]),
                          np.array([_BACKGROUNDS[background]], np.uint8)])
    rgba = lut[np.where(pixels.index >= 0, pixels.index, n)]
    image = Image.fromarray(rgba, "RGBA")
    panels = [image]
    if result_labels is not None:
        right = render_overlay(coords=points, labels=result_labels.astype(np.int8), classes=names, patch_size=size,
                               colors=colors, max_side=max_side,
                               background="transparent" if background == "transparent" else "white")
        panels.append(right)
    if seed_labels is not None:
        for panel in panels:
            _draw_seeds(panel, points, seed_labels, palette, pixels)
    if len(panels) > 1:  # a result: the panels side by side
        canvas = Image.new("RGBA", (sum(p.width for p in panels) + _GAP * (len(panels) - 1),
                                    max(p.height for p in panels)), _BACKGROUNDS[background])
        left = 0
        for panel in panels:
            canvas.paste(panel, (left, 0))
            left += panel.width + _GAP
        image = canvas
    if names or title:  # the title and the classes' legend in a band below
        image = add_caption(image, title=title, legend=list(zip(names, palette)), background=_BACKGROUNDS[background])
    image.info["level0_per_pixel"] = pixels.scale
    return image


# -- the workflow ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapResult:
    """What :func:`write_embedding_map` wrote.

    Attributes
    ----------
    path : Path
        The PNG.
    tissuumaps : Path or None
        The TissUUmaps CSV, when asked for.
    slide_id : str
    source : str
        The dataset folder, or the hub reference with its version.
    n_patches : int
    method : str
        ``"umap"`` or ``"pca"``.
    size : (int, int)
        Width and height of the PNG in pixels.
    level0_per_pixel : float
        Level-0 pixels per PNG pixel.
    seeds : Seeds or None
        The seeds as mapped onto the patches (``summary()`` says what missed).
    """

    path: Path
    tissuumaps: Path | None
    slide_id: str
    source: str
    n_patches: int
    method: str
    size: tuple[int, int]
    level0_per_pixel: float
    seeds: Any = field(default=None, repr=False)


def _read_table(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(path)
        options = pacsv.ConvertOptions(column_types={"slide_id": pa.string(), "class": pa.string()},
                                       strings_can_be_null=True)
        return pacsv.read_csv(path, convert_options=options)
    except (pa.ArrowException, OSError) as exc:
        raise SicShareError(f"result {path} cannot be read ({str(exc).splitlines()[0]}): give the Parquet or CSV "
                            "labels file written by 'sic-share sic'") from None


def _xy_keys(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per (x, y) of whole, non-negative pixels below 2**31; ``valid`` is False elsewhere."""
    valid = np.isfinite(xy).all(axis=1) & (xy >= 0).all(axis=1) & (xy < 2**31).all(axis=1)
    valid &= (xy == np.round(xy)).all(axis=1)
    safe = np.where(valid[:, None], xy, -1).astype(np.int64)
    return np.where(valid, safe[:, 0] * (1 << 32) + safe[:, 1], -1), valid


def read_result(source: str | os.PathLike[str], *, slide_id: str, coords: np.ndarray,
                classes: Sequence[str] = ()) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class per patch from a label table written by ``sic-share sic`` (Parquet or CSV).

    Parameters
    ----------
    source : path-like
        A table with the columns ``x, y, label`` and optionally ``slide_id``
        and ``class`` (:func:`sic_share.viz.write_labels`).
    slide_id : str
        Rows of other slides are ignored when the table has ``slide_id``.
    coords : ndarray of shape (n_patches, 2)
        The slide's level-0 patch centres; rows are matched on exact (x, y).
    classes : sequence of str, optional
        Fallback class names (the dataset's) for labels without a ``class``.

    Returns
    -------
    labels : ndarray of shape (n_patches,), int8
        -1 for patches without a row.
    classes : tuple of str
    """
    path = Path(source)
    if not path.is_file():
        raise SicShareError(f"result {path} does not exist: give the labels file written by 'sic-share sic'")
    table = _read_table(path)
    missing = [c for c in ("x", "y", "label") if c not in table.column_names]
    if missing:
        raise SicShareError(f"result {path} lacks the columns {missing}: give the Parquet or CSV labels file "
                            "written by 'sic-share sic' (slide_id, x, y, label, class)")
    if "slide_id" in table.column_names:
        ids = np.array(table.column("slide_id").to_pylist(), dtype=object)
        keep = ids == slide_id
        if not keep.any():
            found = sorted({str(v) for v in ids if v is not None})[:5]
            raise SicShareError(f"result {path} has no rows of slide {slide_id!r} (it has {', '.join(found)}): "
                                "give the result of this slide")
        table = table.filter(keep)
    try:
        x = np.asarray(table.column("x").to_numpy(zero_copy_only=False), np.float64)
        y = np.asarray(table.column("y").to_numpy(zero_copy_only=False), np.float64)
        label = np.asarray(table.column("label").fill_null(-1).to_numpy(zero_copy_only=False), np.float64)
    except (TypeError, ValueError):
        raise SicShareError(f"result {path} has x, y or label values that are not numbers: "
                            "give the labels file written by 'sic-share sic'") from None
    if not (np.isfinite(label).all() and np.array_equal(label, np.round(label)) and label.min(initial=0) >= -1
            and label.max(initial=0) < 127):
        raise SicShareError(f"result {path} has labels that are not class indices (-1 to 126): "
                            "give the labels file written by 'sic-share sic'")
    label = label.astype(np.int64)
    # Class names: from the table's class column, else the fallback, else "class k".
    k = int(label.max(initial=-1)) + 1
    fallback = tuple(classes)
    names: list[str | None] = [fallback[i] if i < len(fallback) else None for i in range(max(k, len(fallback)))]
    if "class" in table.column_names:
        named = np.array(table.column("class").to_pylist(), dtype=object)
        for index in range(k):
            found = {str(v) for v in named[label == index] if v is not None and str(v)}
            if len(found) > 1:
                raise SicShareError(f"result {path} names label {index} as {sorted(found)}: "
                                    "one class name per label")
            if found:
                names[index] = found.pop()
    final = tuple(name if name is not None else f"class {i}" for i, name in enumerate(names))
    if len(set(final)) != len(final):
        raise SicShareError(f"result {path} uses one class name for several labels ({list(final)}): "
                            "give the labels file written by 'sic-share sic'")
    # Rows to patches, on exact centres (whole level-0 pixels, as the dataset stores them).
    patch_keys, _ = _xy_keys(np.asarray(coords, np.float64))
    row_keys, valid = _xy_keys(np.column_stack([x, y]))
    order = np.argsort(patch_keys, kind="stable")
    ordered = patch_keys[order]
    at = np.minimum(np.searchsorted(ordered, row_keys), max(len(order) - 1, 0))
    hit = valid & (ordered[at] == row_keys) if len(order) else np.zeros(len(x), bool)
    labels = np.full(len(patch_keys), -1, np.int8)
    labels[order[at[hit]]] = label[hit]
    if not hit.all():
        miss = int((~hit).sum())
        first = int(np.flatnonzero(~hit)[0])
        raise SicShareError(f"result {path} has {miss} of {len(x)} rows of slide {slide_id!r} at no patch centre "
                            f"(first at {x[first]:.0f}, {y[first]:.0f}): give the result computed on this dataset")
    return labels, final


def _tissuumaps_csv(coords: np.ndarray, rgb: np.ndarray, coords3: np.ndarray, method: str) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["x", "y", "color", f"{method}_1", f"{method}_2", f"{method}_3"])
    xy = np.asarray(coords)
    xy = xy.astype(np.int64) if np.array_equal(xy, np.round(xy)) else xy.astype(np.float64)
    emb = [[f"{v:.6g}" for v in row] for row in coords3.tolist()]
    writer.writerows([x, y, c, *e] for (x, y), c, e in zip(xy.tolist(), hex_colors(rgb), emb, strict=True))
    return text.getvalue().encode()


def write_embedding_map(
    dataset: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    slide_id: str | None = None,
    hub: str | None = None,
    method: str = "umap",
    seeds: str | os.PathLike[str] | Mapping[int, str | int] | None = None,
    result: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    colors: Mapping[str, Any] | None = None,
    tissuumaps: str | os.PathLike[str] | None = None,
    max_side: int = 1500,
    random_state: int | None = 0,
    background: str = "white",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> MapResult:
    """``sic-share umap``: a slide's embedding map as a PNG, and optionally as a TissUUmaps CSV.

    Parameters
    ----------
    dataset : path-like or str
        A dataset folder, or a hub reference ``publisher/name[@version]``
        (only that slide is fetched and verified).
    out_png : path-like
        The PNG, in an existing folder.
    slide_id : str, optional
        The slide; may be omitted when the dataset has one slide.
    hub : str, optional
        Hub URL for a reference (default: the configured hub).
    method : {"umap", "pca"}, default="umap"
        See :func:`embedding_rgb`.
    seeds : path-like, str or mapping, optional
        Seeds to mark (a seed CSV, QuPath GeoJSON or ``"12:tumour,40:stroma"``,
        see :func:`sic_share.sic.read_seeds`).
    result : path-like, optional
        A labels file written by ``sic-share sic`` (Parquet or CSV), drawn as
        a panel beside the map.
    classes : sequence of str, optional
        The seeds' class names in index order, as ``sic --classes`` takes them (the
        palette follows that order). Not with ``result``, which names its classes.
    colors : mapping, optional
        Class colours by name (a QuPath seeds file's, :func:`sic_share.viz.seeds_file_colors`),
        matched to the classes without regard to case; classes without one take the palette's.
    tissuumaps : path-like, optional
        Also write a TissUUmaps CSV here: ``x, y, color`` and the 3-D
        coordinates ``umap_1, umap_2, umap_3`` (``pca_1..3`` with PCA).
    max_side : int, default=1500
        Longest side of the map (of each panel) in pixels.
    random_state : int or None, default=0
        Seed of the embedding; the same seed gives the same colours.
    background : {"white", "black", "transparent"}, default="white"
    n_neighbors, min_dist, n_epochs
        UMAP settings, see :func:`embedding_rgb`.
    progress : callable, optional
        Called as ``progress(step, done, 3)`` as each of its three steps starts (reading
        the slide, reducing the embeddings, drawing), and once more with ``done=3``.

    Returns
    -------
    MapResult

    Raises
    ------
    SicShareError
        One sentence: an output folder that does not exist (checked before
        anything is read or computed), a dataset without that slide, unusable
        seeds or result, umap-learn missing, bad settings.

    Notes
    -----
    Every input (output folders, slide, seeds, result, umap-learn) is checked
    before the embedding is computed, the slow step. Both files are built in
    memory and then each renamed into place, so a failure leaves old files or
    none, never half of one. CSV coordinates are level-0 patch centres, the
    pixels of the slide's full-resolution image that TissUUmaps shows; every
    patch has a row. In TissUUmaps, load it as markers with ``x``/``y`` as
    coordinates and ``color`` as the colour column. Seeds are mapped with the
    dataset's ground-truth class names when they use them (as ``sic-share
    sic`` does), or the result's names when a result is given, or ``classes``,
    so that a class has one colour in both; with ``colors`` (``sic-share umap``
    passes a seeds file's) a class has the colour it has in QuPath, in the app and
    in every output of ``sic-share sic`` with the same seeds.
    """
    from sic_share.sic import load_slide, map_seeds, read_seeds
    from sic_share.viz._palette import colors_for

    method = check_method(method)
    if classes is not None and result is not None:
        raise SicShareError("classes were given with a result, which names its own classes: drop the classes")
    check_target(out_png)
    if tissuumaps is not None:
        check_target(tissuumaps)
        if Path(tissuumaps).resolve() == Path(out_png).resolve():
            raise SicShareError(f"the map and the TissUUmaps CSV would both be {out_png}: give two file names")
    if method == "umap":
        import_umap()
    step = progress or (lambda *_: None)
    step("reading the slide", 0, 3)
    slide, where = load_slide(dataset, slide_id, hub)
    patch = float(slide.metadata.patching.level0_size_px)
    names: tuple[str, ...] = tuple(classes or ())
    result_labels = None
    if result is not None:
        result_labels, names = read_result(result, slide_id=slide.slide_id, coords=slide.coords,
                                           classes=slide.metadata.classes)
    mapped = None
    if seeds is not None:
        mapped = read_seeds(seeds, slide.coords, patch, names) if names else map_seeds(seeds, slide, None, strict=False)
        names = mapped.classes
    step(f"{method.upper()} of {len(slide)} patches", 1, 3)
    rgb, coords3 = embedding_rgb(slide.embeddings, method=method, random_state=random_state,
                                 n_neighbors=n_neighbors, min_dist=min_dist, n_epochs=n_epochs)
    step("drawing", 2, 3)
    image = render_embedding_map(coords=slide.coords, rgb=rgb, patch_size=patch, max_side=max_side,
                                 background=background, seeds=None if mapped is None else mapped.labels,
                                 result=result_labels, classes=names, colors=colors_for(names, colors),
                                 title=f"slide {slide.slide_id}: {slide.embeddings.shape[1]}-d embeddings of "
                                       f"{slide.metadata.model.id} by {method.upper()} to RGB"
                                       + (" | right: the result" if result_labels is not None else ""))
    png_data = png_bytes(image)
    table = None if tissuumaps is None else _tissuumaps_csv(slide.coords, rgb, coords3, method)
    png = atomic_write(out_png, png_data)
    csv_path = None if table is None else atomic_write(tissuumaps, table)
    step("done", 3, 3)
    return MapResult(png, csv_path, slide.slide_id, where, len(slide), method, image.size,
                     float(image.info["level0_per_pixel"]), mapped)
