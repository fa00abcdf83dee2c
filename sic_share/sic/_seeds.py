"""Seeds for SIC: a few labelled points, polygons or patch indices, mapped onto a slide's patches.

A seed file says "this spot is tumour, that one is stroma"; :func:`read_seeds`
turns it into what the estimators take, one class index per patch with ``-1``
for unlabelled, and reports the seeds that hit no patch so that the caller can
tell the user. Three sources are understood:

- a CSV with a header ``x,y,label`` (level-0 pixels, origin top-left) or
  ``index,label`` (patch row indices of the slide file);
- a QuPath GeoJSON export (FeatureCollection, one Feature, or a bare list of
  features) of classified Point/MultiPoint and Polygon/MultiPolygon objects;
- patch indices written inline, ``"12:tumour,40:stroma"``, or a mapping
  ``{12: "tumour", 40: 1}``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry import shape

from sic_share.errors import SeedError
from sic_share.annotations import class_name, geojson_features

__all__ = ["MissedSeed", "Seeds", "class_counts", "read_seeds"]

_MAX_CLASSES = int(np.iinfo(np.int8).max)  # seeds are int8 like the dataset's label column
_INDEX_SPEC = re.compile(r"^\s*\d+\s*:[^,:]+(,\s*\d+\s*:[^,:]+)*,?\s*$")
_SHOWN = 3  # seeds named in a message before "..."

#: The largest seeds file read: seeds are a few points and polygons, and a bigger
#: GeoJSON would take several times its size in memory to parse.
MAX_SEEDS_BYTES = 256 << 20


@dataclass(frozen=True)
class MissedSeed:
    """A seed that landed on no patch.

    Attributes
    ----------
    where : str
        Where it came from: ``"row 4"`` of a CSV, ``"feature 'id'"`` or
        ``"feature 3"`` of a GeoJSON (0-based position when it has no id).
    label : str
        Its class name.
    x, y : float
        The point, or a point inside the polygon, in level-0 pixels.
    """

    where: str
    label: str
    x: float
    y: float


def class_counts(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    """Patches per class in ``labels`` (class indices, ``-1`` for none), every class included."""
    found = np.bincount(labels[labels >= 0].astype(np.int64), minlength=len(classes))
    return {name: int(n) for name, n in zip(classes, found, strict=True)}


@dataclass(frozen=True)
class Seeds:
    """Seed labels per patch, and what did not land.

    Attributes
    ----------
    labels : ndarray of shape (n_patches,), int8
        Class index of each seeded patch, ``-1`` for unlabelled: what
        ``SeededKMeans.fit(X, seeds)`` and SIC take.
    classes : tuple of str
        Class names; ``labels`` value ``k`` means ``classes[k]``.
    n_seeds : int
        Seeds read: points (each point of a MultiPoint), polygons (a
        MultiPolygon counts once), CSV rows, patch indices.
    missed : tuple of MissedSeed
        Seeds that landed on no patch (on glass, off the tissue, or a polygon
        holding no patch centre).
    ignored : dict of str to int, default={}
        GeoJSON features that could not be seeds, counted by why:
        ``"unclassified"``, ``"without a geometry"``, ``"not a Feature"``,
        ``"empty"``, or the geometry type (``"LineString"``...).
    """

    labels: np.ndarray
    classes: tuple[str, ...]
    n_seeds: int
    missed: tuple[MissedSeed, ...] = ()
    ignored: Mapping[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        """GeoJSON features ignored, all reasons together (see ``ignored``)."""
        return sum(self.ignored.values())

    @property
    def counts(self) -> dict[str, int]:
        """Seeded patches per class, every class included (0 for a class without seeds)."""
        return class_counts(self.labels, self.classes)

    def under(self, classes: Sequence[str]) -> Seeds:
        """The same seeds indexed by ``classes``, which must name each of this one's classes (case ignored).

        What reading the seeds again with ``classes`` would give, without mapping them onto the
        patches a second time (about 0.7 s for a million patches).
        """
        index = {name.casefold(): i for i, name in enumerate(classes)}
        remap = np.array([index[name.casefold()] for name in self.classes], dtype=np.int8)
        labels = np.where(self.labels >= 0, remap[np.maximum(self.labels, 0)], -1).astype(np.int8)
        missed = tuple(replace(m, label=classes[index[m.label.casefold()]]) for m in self.missed)
        return Seeds(labels, tuple(classes), self.n_seeds, missed, dict(self.ignored))


    @property
    def missed_classes(self) -> tuple[str, ...]:
        """Classes that had seeds, none of which landed on a patch."""
        counts = self.counts
        return tuple(dict.fromkeys(m.label for m in self.missed if counts[m.label] == 0))

    def summary(self) -> str | None:
        """One sentence on what did not land (for the CLI to print as a warning), or None when all did."""
        if not self.missed and not self.skipped:
            return None
        parts = []
        if self.missed:
            shown = ", ".join(f"{m.label} at ({m.x:.0f}, {m.y:.0f})" for m in self.missed[:_SHOWN])
            more = ", ..." if len(self.missed) > _SHOWN else ""
            parts.append(f"{len(self.missed)} of {self.n_seeds} seeds hit no patch ({shown}{more})")
        if self.missed_classes:
            lost = self.missed_classes
            noun = "class" if len(lost) == 1 else "classes"
            verb = "has" if len(lost) == 1 else "have"
            parts.append(f"{noun} {', '.join(map(repr, lost))} {verb} no seeded patch")
        if self.skipped:
            parts.append(f"{_ignored_text(self.ignored)}: a seed is a point or polygon with a class "
                         "(in QuPath: Set class)")
        return "; ".join(parts)


def _ignored_text(ignored: Mapping[str, int], *, brackets: str = "()") -> str:
    """``3 GeoJSON features ignored (1 LineString, 1 unclassified, 1 without a geometry)``."""
    total = sum(ignored.values())
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(ignored.items(), key=lambda item: (-item[1], item[0])))
    return f"{total} GeoJSON {'feature' if total == 1 else 'features'} ignored {brackets[0]}{why}{brackets[1]}"


# -- input checks ---------------------------------------------------------------------------------


def _check_classes(classes: Sequence[str] | None) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        raise SeedError(f"classes={classes!r} should be a sequence of class names, not one string")
    names = tuple(classes)
    folded = [n.strip().casefold() for n in names if isinstance(n, str)]
    if not names or len(folded) != len(names) or not all(folded) or len(set(folded)) != len(names):
        raise SeedError(f"classes={list(names)!r} should be distinct non-empty class names (case is ignored)")
    if len(names) > _MAX_CLASSES:
        raise SeedError(f"{len(names)} classes were named, at most {_MAX_CLASSES} fit the int8 seed labels")
    return names


def _check_grid(coords: Any, patch_size: Any) -> tuple[np.ndarray, float]:
    points = np.asarray(coords)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0 or not np.issubdtype(
        points.dtype, np.number
    ):
        raise SeedError(f"coords of shape {points.shape} should be (n_patches, 2) level-0 patch centres")
    try:
        size = float(patch_size)
    except (TypeError, ValueError):
        size = math.nan
    if not (math.isfinite(size) and size > 0):
        raise SeedError(f"patch_size={patch_size!r} should be a positive number of level-0 pixels")
    return points.astype(np.float64), size


@dataclass
class _Grid:
    """The slide's patches, and the extent they span."""

    centres: np.ndarray  # (n, 2) float64
    size: float

    @property
    def extent(self) -> tuple[float, float, float, float]:
        half = self.size / 2
        (x0, y0), (x1, y1) = self.centres.min(axis=0), self.centres.max(axis=0)
        return x0 - half, y0 - half, x1 + half, y1 + half

    def describe(self) -> str:
        x0, y0, x1, y1 = self.extent
        return f"x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f} level-0 pixels"


# -- class names ----------------------------------------------------------------------------------


class _Classes:
    """Resolves a seed's label (class name, any case, or integer index) to a class index."""

    def __init__(self, classes: tuple[str, ...] | None, source: str) -> None:
        self.fixed = classes is not None
        self.names: list[str] = list(classes or ())
        self.source = source

    def index(self, raw: Any, where: str) -> int:
        if isinstance(raw, bool) or raw is None:
            raise SeedError(f"seed {where} of {self.source} has no label: give a class name or index")
        text = str(raw).strip()
        if not text:
            raise SeedError(f"seed {where} of {self.source} has an empty label: give a class name or index")
        folded = text.casefold()
        for i, name in enumerate(self.names):
            if name.strip().casefold() == folded:
                return i
        if re.fullmatch(r"[+-]?\d+", text):
            value = int(text)
            if not self.fixed:
                raise SeedError(
                    f"seed {where} of {self.source} has the class index {value} but no class names were "
                    "given: name the classes (--classes), index 0 first"
                )
            if not 0 <= value < len(self.names):
                raise SeedError(
                    f"seed {where} of {self.source} has the class index {value}, outside 0-{len(self.names) - 1} "
                    f"for classes {self.names}: use an index in range or a class name"
                )
            return value
        if self.fixed:
            raise SeedError(
                f"seed {where} of {self.source} has the unknown class {text!r}: use one of {self.names} "
                "(case is ignored) or add it to the classes"
            )
        if len(self.names) >= _MAX_CLASSES:
            raise SeedError(f"{self.source} names more than {_MAX_CLASSES} classes, more than int8 seed labels hold")
        self.names.append(text)
        return len(self.names) - 1

    def order(self) -> tuple[tuple[str, ...], np.ndarray]:
        """Final class names and the map from indices handed out to final indices."""
        if self.fixed:
            return tuple(self.names), np.arange(len(self.names))
        order = sorted(range(len(self.names)), key=lambda i: (self.names[i].casefold(), self.names[i]))
        remap = np.empty(len(self.names), np.int64)
        remap[order] = np.arange(len(order))
        return tuple(self.names[i] for i in order), remap


# -- parsed seeds ---------------------------------------------------------------------------------


@dataclass
class _Parsed:
    """Seeds as read, before they meet the patches."""

    px: list[float]  # points
    py: list[float]
    p_class: list[int]
    p_where: list[str]
    indices: list[tuple[int, int, str]]  # (patch index, class, where)
    polygons: list[tuple[Any, int, str]]  # (shapely geometry, class, where)
    ignored: dict[str, int] = field(default_factory=dict)  # GeoJSON features that are no seed, by why

    def ignore(self, why: str) -> None:
        self.ignored[why] = self.ignored.get(why, 0) + 1

    @classmethod
    def empty(cls) -> _Parsed:
        return cls([], [], [], [], [], [])

    @property
    def n_seeds(self) -> int:
        return len(self.px) + len(self.indices) + len(self.polygons)


def _read_text(path: Path, source: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SEEDS_BYTES + 1)
    except IsADirectoryError:
        raise SeedError(f"seeds {source} is a folder: give a CSV or GeoJSON file") from None
    except OSError as exc:
        raise SeedError(f"seeds {source} cannot be read ({exc.strerror or exc}): check the path") from None
    if len(data) > MAX_SEEDS_BYTES:
        raise SeedError(
            f"seeds {source} is larger than {MAX_SEEDS_BYTES >> 20} MiB: export only the seed annotations "
            "(in QuPath: select them, then File > Export objects as GeoJSON > Selected objects)"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SeedError(f"seeds {source} is not a text file: give a CSV or GeoJSON file (UTF-8)") from None


def _number(value: str, column: str, where: str, source: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise SeedError(f"seed {where} of {source} has {column}={value!r}, which is not a number: fix that row")
    return number


def _parse_csv(text: str, source: str, names: _Classes) -> _Parsed:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    columns = [c.strip().casefold() for c in header or []]
    label = "label" if "label" in columns else "class" if "class" in columns else None
    if label is not None and {"x", "y"} <= set(columns):
        kind = "points"
    elif label is not None and "index" in columns:
        kind = "indices"
    else:
        raise SeedError(
            f"seeds {source} has the columns {columns}: it needs a header x,y,label (level-0 pixels) "
            "or index,label (patch indices)"
        )
    at = {c: columns.index(c) for c in ("x", "y", "index", label) if c in columns}
    parsed = _Parsed.empty()
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"row {line}"
        if len(row) < len(columns):
            raise SeedError(f"seed {where} of {source} has {len(row)} of the {len(columns)} columns: fix that row")
        cls = names.index(row[at[label]], where)
        if kind == "points":
            parsed.px.append(_number(row[at["x"]], "x", where, source))
            parsed.py.append(_number(row[at["y"]], "y", where, source))
            parsed.p_class.append(cls)
            parsed.p_where.append(where)
        else:
            value = _number(row[at["index"]], "index", where, source)
            if value != int(value):
                raise SeedError(f"seed {where} of {source} has index={row[at['index']]!r}: a patch index is an integer")
            parsed.indices.append((int(value), cls, where))
    return parsed


def _parse_geojson(text: str, source: str, names: _Classes) -> _Parsed:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SeedError(f"seeds {source} is not valid JSON ({exc}): export it again from QuPath as GeoJSON") from None
    except RecursionError:
        raise SeedError(
            f"seeds {source} is JSON nested too deeply to be GeoJSON: export it again from QuPath as GeoJSON"
        ) from None
    parsed = _Parsed.empty()
    for position, feature in enumerate(geojson_features(document, f"seeds {source}", SeedError)):
        if not isinstance(feature, dict) or feature.get("type", "Feature") != "Feature":
            parsed.ignore("not a Feature")
            continue
        where = f"feature {feature['id']!r}" if isinstance(feature.get("id"), str) else f"feature {position}"
        raw = feature.get("geometry")
        if not isinstance(raw, dict):
            parsed.ignore("without a geometry")
            continue
        try:
            geometry = shape(raw)
            if not np.isfinite(shapely.get_coordinates(geometry)).all():
                raise ValueError("a coordinate is not a finite number")
            parts = list(shapely.get_parts(shapely.get_parts(geometry)))  # collections of multi-parts too
        except RecursionError:
            raise SeedError(
                f"{where} of seeds {source} has a geometry nested too deeply: export it again from QuPath"
            ) from None
        except (GEOSException, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise SeedError(
                f"{where} of seeds {source} has a malformed {raw.get('type')} geometry ({exc}): "
                "export it again from QuPath"
            ) from None
        points = [p for p in parts if p.geom_type == "Point" and not p.is_empty]
        areas = [p for p in parts if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
        if not points and not areas:
            kinds = {p.geom_type for p in parts if not p.is_empty}
            parsed.ignore(", ".join(sorted(kinds)) if kinds else "empty")
            continue
        label = class_name(feature.get("properties"))
        if label is None:
            parsed.ignore("unclassified")
            continue
        cls = names.index(label, where)
        for point in points:
            parsed.px.append(point.x)
            parsed.py.append(point.y)
            parsed.p_class.append(cls)
            parsed.p_where.append(where)
        if areas:
            polygon = shapely.union_all([shapely.make_valid(a) for a in areas])  # a drawn bow-tie is fine
            parsed.polygons.append((polygon, cls, where))
    return parsed


def _parse_index_spec(spec: str | Mapping[Any, Any], source: str, names: _Classes) -> _Parsed:
    items = spec.items() if isinstance(spec, Mapping) else (
        item.split(":", 1) for item in spec.split(",") if item.strip()
    )
    parsed = _Parsed.empty()
    for index, label in items:
        where = f"index {str(index).strip()}"
        try:
            value = int(str(index).strip())
        except ValueError:
            raise SeedError(
                f"seed {where} of {source} is not an integer patch index: write index:label pairs"
            ) from None
        parsed.indices.append((value, names.index(label, where), where))
    return parsed


def _load(source: Any, names: _Classes) -> tuple[_Parsed, str]:
    names.source = "patch indices"
    if isinstance(source, Mapping):
        return _parse_index_spec(source, "patch indices", names), "patch indices"
    if not isinstance(source, str | os.PathLike):
        raise SeedError(
            f"seeds of type {type(source).__name__} are not understood: give a CSV or GeoJSON path, "
            "'index:label,...' or a mapping of patch index to label"
        )
    path = Path(source)
    if not path.exists():
        if isinstance(source, str) and _INDEX_SPEC.match(source):
            return _parse_index_spec(source, "patch indices", names), "patch indices"
        raise SeedError(
            f"seeds file {source} does not exist: give a CSV (x,y,label) or QuPath GeoJSON file, "
            "or patch indices like '12:tumour,40:stroma'"
        )
    name = path.name
    names.source = name
    text = _read_text(path, name)
    suffix = path.suffix.casefold()
    if suffix in (".geojson", ".json") or (suffix != ".csv" and text.lstrip()[:1] in ("{", "[")):
        return _parse_geojson(text, name, names), name
    return _parse_csv(text, name, names), name


# -- seeds onto patches ---------------------------------------------------------------------------


def _point_patches(grid: _Grid, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Patch of each point (nearest centre among the patches containing it), -1 for none."""
    half = grid.size / 2
    found = np.full(len(x), -1, np.int64)
    if not len(x):
        return found
    from sklearn.neighbors import KDTree  # a second to import: only once points come

    tree = KDTree(grid.centres, metric="chebyshev")
    queries = np.column_stack([x, y])
    for i, candidates in enumerate(tree.query_radius(queries, r=half)):
        if not len(candidates):
            continue
        d = grid.centres[candidates] - queries[i]
        inside = (d[:, 0] > -half) & (d[:, 0] <= half) & (d[:, 1] > -half) & (d[:, 1] <= half)
        candidates, d = candidates[inside], d[inside]
        if len(candidates):
            dist = np.einsum("ij,ij->i", d, d)
            best = np.flatnonzero(dist == dist.min())
            found[i] = candidates[best].min()
    return found


def _polygon_patches(grid: _Grid, polygon: Any) -> np.ndarray:
    """Indices of the patches whose centre lies inside the polygon."""
    x0, y0, x1, y1 = polygon.bounds
    cx, cy = grid.centres[:, 0], grid.centres[:, 1]
    near = np.flatnonzero((cx > x0) & (cx < x1) & (cy > y0) & (cy < y1))
    if not len(near):
        return near
    shapely.prepare(polygon)
    return near[shapely.contains_xy(polygon, cx[near], cy[near])]


def _check_beyond(grid: _Grid, x: np.ndarray, y: np.ndarray, where: list[str], source: str) -> None:
    _, _, x1, y1 = grid.extent
    beyond = np.flatnonzero((x < 0) | (y < 0) | (x > x1 + grid.size) | (y > y1 + grid.size))
    if len(beyond):
        first = beyond[0]
        others = f" and {len(beyond) - 1} more" if len(beyond) > 1 else ""
        raise SeedError(
            f"seed {where[first]}{others} of {source} at ({x[first]:.0f}, {y[first]:.0f}) lies beyond the "
            f"slide's patches, which span {grid.describe()}: give x, y in level-0 pixels of this slide, "
            "not of another level or slide"
        )


def read_seeds(
    source: str | os.PathLike[str] | Mapping[int, str | int],
    coords: np.ndarray,
    patch_size: float,
    classes: Sequence[str] | None = None,
) -> Seeds:
    """Read seeds and map each one onto the slide's patches.

    Parameters
    ----------
    source : path-like, str or mapping
        A CSV file with the header ``x,y,label`` (level-0 pixels, origin
        top-left) or ``index,label`` (patch indices); a QuPath GeoJSON file
        (``.geojson``/``.json``, or any file starting with ``{`` or ``[``); a
        string of patch indices ``"12:tumour,40:1"`` when no file of that name
        exists; or a mapping ``{patch index: label}``. A label is a class name
        (case ignored) or a 0-based class index. In a CSV the ``class`` column
        may stand in for ``label``, so a TissUUmaps CSV written by
        :func:`sic_share.viz.write_tissuumaps` reads back.
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y), as ``SlideData.coords``. A patch index is
        a row of this array.
    patch_size : float
        Patch side in level-0 pixels (``metadata.patching.level0_size_px``).
    classes : sequence of str, optional
        The class names the user works with, index 0 first (for binary SIC:
        ``("negative", "positive")``). When None, the names found in the seeds,
        sorted (case ignored); integer labels then need ``classes``.

    Returns
    -------
    Seeds
        ``labels`` of shape (n_patches,), int8, ``-1`` where unseeded, and the
        seeds that landed on no patch.

    Raises
    ------
    SeedError
        One sentence each: a missing or unreadable file; a CSV without
        ``x,y,label`` or ``index,label``; JSON that is not GeoJSON (says what
        was found); a malformed geometry; an unknown class name (lists the
        known ones); an integer label or patch index out of range; a point
        beyond the slide (gives the patches' extent); two point seeds of
        different classes on one patch (names the patch); no seeds at all; or
        no seed landing on any patch.

    Notes
    -----
    Points. A patch covers ``[cx - s/2, cx + s/2) x [cy - s/2, cy + s/2)``
    around its centre. Patches overlap (stride half the size by default), so a
    point usually lies in several: it seeds the one whose centre is nearest
    (Euclidean; on a tie, the lowest index), the patch it is most central in.
    Found with a Chebyshev KD-tree (scikit-learn), O(log n) per point.

    Polygons seed every patch whose centre lies strictly inside (holes
    excluded), with ``shapely.contains_xy`` on the centres within the
    polygon's bounding box. A polygon holding no centre is a missed seed, not
    an error: a small region between centres is a normal miss. The polygons
    of a MultiPolygon feature count as one seed.

    Conflicts. Where polygons of different classes overlap, the smaller
    polygon wins, whatever the file order (necrosis drawn inside tumour is
    necrosis), as in :func:`sic_share.annotations.geojson_labels`. Points and patch
    indices are deliberate clicks: they override polygons, and two of them of
    different classes on one patch are an error naming the patch, since
    neither "last wins" nor "first wins" is what the user meant. Duplicates of
    one class are fine.

    Beyond the slide. The slide's size is not in the dataset, so the extent
    is that of the patches (centres +- s/2). A point at a negative coordinate,
    or more than one patch side right of or below the last patch, is an
    error: that is a coordinate mistake (another slide, a finer level, x and y
    swapped), not a click on glass. A point closer than that, or anywhere
    left of or above the patches (still on the slide, whose origin is 0, 0),
    is a miss, reported. Coordinates of a downsampled level are too small
    rather than too large: they land on the wrong patches or on none, and
    when none land the error names the extent and level-0 pixels.

    GeoJSON. The class is ``properties.classification.name`` (QuPath >= 0.2),
    the legacy string ``properties.classification``, or a derived class's
    ``names`` joined by ``": "``. ``properties.name`` is not used: QuPath
    keeps the user's free-text annotation name there, not a class. Features
    without a class or of another geometry (LineString) are skipped and
    counted by reason in ``Seeds.ignored`` (the CLI says how many and why, in one
    line); ``objectType`` is not checked, so
    annotations, detections and tiles all seed (our own GeoJSON output reads
    back as the same classes). Files are read from the local disk, at most
    ``MAX_SEEDS_BYTES`` (256 MiB); JSON nested too deeply for Python's parser is
    refused in one line.
    """
    names = _Classes(_check_classes(classes), "seeds")
    centres, size = _check_grid(coords, patch_size)
    grid = _Grid(centres, size)
    parsed, label = _load(source, names)
    if parsed.n_seeds == 0:
        extra = f" ({_ignored_text(parsed.ignored, brackets='[]')})" if parsed.ignored else ""
        raise SeedError(
            f"seeds {label} hold no seeds{extra}: add classified points or polygons "
            "(in QuPath: Set class), or rows of x,y,label"
        )
    final_classes, remap = names.order()
    n = len(centres)
    labels = np.full(n, -1, np.int8)
    missed: list[MissedSeed] = []

    # Polygons first, largest first, so that smaller (nested) ones win.
    hit = 0
    for polygon, cls, where in sorted(parsed.polygons, key=lambda item: -item[0].area):
        inside = _polygon_patches(grid, polygon)
        if len(inside):
            labels[inside] = remap[cls]
            hit += 1
        else:
            point = polygon.representative_point()
            missed.append(MissedSeed(where, final_classes[remap[cls]], point.x, point.y))

    # Then points and patch indices, which override polygons and must agree with each other.
    px, py = np.asarray(parsed.px, np.float64), np.asarray(parsed.py, np.float64)
    _check_beyond(grid, px, py, parsed.p_where, label)
    patches = list(_point_patches(grid, px, py))
    classes_of = [int(remap[c]) for c in parsed.p_class]
    wheres = list(parsed.p_where)
    for value, cls, where in parsed.indices:
        if not 0 <= value < n:
            raise SeedError(
                f"seed {where} of {label} names patch index {value}, but this slide has {n} patches (0-{n - 1}): "
                "give row indices of the slide file"
            )
        patches.append(value)
        classes_of.append(int(remap[cls]))
        wheres.append(where)
    claimed: dict[int, tuple[int, str]] = {}
    for i, (patch, cls, where) in enumerate(zip(patches, classes_of, wheres)):
        if patch < 0:
            missed.append(MissedSeed(where, final_classes[cls], float(px[i]), float(py[i])))
            continue
        hit += 1
        if patch in claimed and claimed[patch][0] != cls:
            other_cls, other_where = claimed[patch]
            cx, cy = centres[patch]
            raise SeedError(
                f"seeds {other_where} ({final_classes[other_cls]}) and {where} ({final_classes[cls]}) of {label} "
                f"both fall on patch {patch} centred at ({cx:.0f}, {cy:.0f}): move or drop one of them"
            )
        claimed[patch] = (cls, where)
        labels[patch] = cls

    if hit == 0:
        raise SeedError(
            f"none of the {parsed.n_seeds} seeds of {label} lies on a patch (the slide's patches span "
            f"{grid.describe()}): put seeds on tissue, in level-0 pixels of this slide"
        )
    return Seeds(labels, final_classes, parsed.n_seeds, tuple(missed), dict(parsed.ignored))
