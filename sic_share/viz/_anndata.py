"""A slide as AnnData (.h5ad) in the layout DEPICTER's TissUUmaps plugin reads."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from sic_share.errors import SicShareError
from sic_share.viz._common import check_target, import_extra
from sic_share.viz._embedding_map import check_method, hex_colors, import_umap, reduce_embeddings, scale_to_unit

__all__ = ["COORDINATES", "to_anndata"]

#: What ``obsm["spatial"]`` holds, as recorded in ``uns["sic_share"]["coordinates"]``.
COORDINATES = "level-0 patch centres (x, y) in pixels"
_LAYOUT = 1  # version of the uns["sic_share"] record


def _record(slide: Any, method: str, random_state: int | None, n_neighbors: int, min_dist: float) -> dict[str, Any]:
    """``uns["sic_share"]``: what the numbers mean, and nothing that names a file, a path or a date."""
    patching = slide.metadata.patching
    record: dict[str, Any] = {
        "layout": _LAYOUT,
        "slide_id": slide.slide_id,
        "coordinates": COORDINATES,
        "patch_size_level0": int(patching.level0_size_px),
        "patch_size": int(patching.size_px),
        # DEPICTER's spatial coordinates are at the extraction level: divide ours by this to get them.
        "extraction_downsample": float(patching.level0_size_px) / float(patching.size_px),
        "model": slide.metadata.model.id,
        "embedding_dim": int(slide.embeddings.shape[1]),
        "color": f"3-D {method.upper()}, each axis scaled to [0, 1] between its 1st and 99th percentile",
        "x_umap": "2-D UMAP" if method == "umap" else "first two principal components (method 'pca')",
        "method": method,
    }
    optional = {
        "level0_mpp": patching.level0_mpp,
        "target_mpp": patching.target_mpp,
        "stride_px": patching.stride_px,
        "random_state": random_state,
    }
    record.update({key: value for key, value in optional.items() if value is not None})
    if method == "umap":
        record.update({"n_neighbors": int(n_neighbors), "min_dist": float(min_dist)})
    if slide.metadata.classes:
        record["classes"] = list(slide.metadata.classes)
    return record


def to_anndata(
    dataset: str | os.PathLike[str],
    out_h5ad: str | os.PathLike[str],
    *,
    slide_id: str | None = None,
    hub: str | None = None,
    method: str = "umap",
    random_state: int | None = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
) -> Path:
    """``sic-share to-anndata``: one slide as an .h5ad that DEPICTER's TissUUmaps plugin opens.

    Parameters
    ----------
    dataset : path-like or str
        A dataset folder, or a hub reference ``publisher/name[@version]``
        (only that slide is fetched and verified).
    out_h5ad : path-like
        The .h5ad file, in an existing folder.
    slide_id : str, optional
        The slide; may be omitted when the dataset has one slide.
    hub : str, optional
        Hub URL for a reference (default: the configured hub).
    method : {"umap", "pca"}, default="umap"
        How ``obs["color"]`` and ``obsm["X_umap"]`` are made, see
        :func:`sic_share.viz.embedding_rgb`. With ``"pca"``, ``X_umap`` holds
        the first two principal components (the plugin reads that key).
    random_state : int or None, default=0
        Seed of the embeddings; the colours equal those of
        :func:`sic_share.viz.write_embedding_map` with the same settings.
    n_neighbors, min_dist, n_epochs
        UMAP settings, see :func:`sic_share.viz.embedding_rgb`.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    SicShareError
        One sentence: an output folder that does not exist, anndata (or, for
        UMAP, umap-learn) not installed, a dataset without that slide, bad
        settings, a failed write.

    Notes
    -----
    Layout, one observation per patch, in the slide file's order:

    - ``obsm["spatial"]`` (n, 2) int32: patch centres (x, y) in **level-0**
      pixels. DEPICTER's own files hold centres at the extraction level;
      level-0 centres lie on the slide TissUUmaps shows without a coordinate
      factor. ``uns["sic_share"]["extraction_downsample"]`` converts;
    - ``obsm["features"]`` (n, dim) float32: the embeddings, dense, as the
      plugin reshapes ``/obsm/features`` by the number of markers;
    - ``obsm["X_umap"]`` (n, 2) float32: a 2-D UMAP, which the plugin plots as
      its feature space (``/obsm/X_umap;0`` and ``;1``);
    - ``obsm["X_umap_3d"]`` (n, 3) float32: the 3-D embedding the colours come
      from (``X_pca_3d`` with PCA);
    - ``obs["color"]``: ``#rrggbb`` from the 3-D embedding (as
      :func:`~sic_share.viz.embedding_rgb`, percentile-clipped);
      ``obs["slide_id"]`` categorical; ``obs["class"]`` categorical
      ground-truth class names, only when the slide has labels (missing where
      a patch has none);
    - ``uns["sic_share"]``: what the numbers mean (coordinates, patch size,
      µm/px, model id, method, settings). No file name, path, date or hub
      address is stored, so the file is as shareable as the dataset.

    As in DEPICTER, the 2-D and 3-D UMAPs are fitted separately (a 2-D
    projection of the 3-D map would plot worse); on 4096 patches or more they
    share one nearest-neighbour search, so the second costs only its
    optimisation. ``X`` is empty (``None``), as in DEPICTER's files. The
    file is written beside ``out_h5ad`` under a hidden temporary name and
    renamed into place, so a failure leaves the old file or none.
    Verified against DEPICTER's plugin (``DEPICTER.js``: reads
    ``/obsm/features`` and ``/obsm/X_umap;0``, ``;1``; the user picks
    ``/obsm/spatial;0`` and ``;1`` as X and Y) and its ``csv2h5ad``.
    """
    method = check_method(method)
    target = check_target(out_h5ad)
    anndata = import_extra("anndata", package="anndata", extra="anndata", needed_for="writing .h5ad")
    if method == "umap":
        import_umap()
    import pandas as pd

    from sic_share.sic import load_slide

    slide, _ = load_slide(dataset, slide_id, hub)
    coords3, coords2 = reduce_embeddings(slide.embeddings, (3, 2), method=method, random_state=random_state,
                                         n_neighbors=n_neighbors, min_dist=min_dist, metric="euclidean",
                                         n_epochs=n_epochs)
    n = len(slide)
    obs = pd.DataFrame(
        {"color": hex_colors(scale_to_unit(coords3)),
         "slide_id": pd.Categorical([slide.slide_id] * n)},
        index=pd.Index([str(i) for i in range(n)], name="patch"),
    )
    classes = slide.metadata.classes
    labels = np.asarray(slide.labels, np.int64)
    if classes and (labels >= 0).any() and labels.max() < len(classes):
        obs["class"] = pd.Categorical.from_codes(labels, categories=list(classes))
    obsm = {
        "spatial": np.asarray(slide.coords, np.int32),
        "features": np.asarray(slide.embeddings, np.float32),
        "X_umap": coords2.astype(np.float32),
        f"X_{method}_3d": coords3.astype(np.float32),
    }
    adata = anndata.AnnData(X=None, obs=obs, obsm=obsm,
                            uns={"sic_share": _record(slide, method, random_state, n_neighbors, min_dist)})
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise SicShareError(f"cannot write {target} ({exc.strerror or exc}): check the path and free space") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target
