"""QuPath GeoJSON of patch classes: one merged annotation per class, optionally one tile per patch."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping

from sic_share.viz._common import (
    PatchClasses,
    atomic_write,
    check_inputs,
    check_patch_size,
    check_target,
    patch_cells,
)
from sic_share.viz._palette import class_colors

__all__ = ["class_geometries", "qupath_geojson", "write_geojson"]

# uuid5 namespace of sic-share GeoJSON objects: the same slide, class and patch give the same id.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/sic-share/sic-share/geojson")


def _class_boxes(data: PatchClasses, patch_size: float) -> tuple[list[np.ndarray], Any]:
    """Per class, the boxes (x0, y0, x1, y1) of runs of same-class cells along each grid row."""
    cells = patch_cells(data.coords, patch_size)
    keep = data.labelled
    # Row by row, left to right; a run breaks at a class change, a new row or a gap between cells.
    order = keep[np.lexsort((cells.col[keep], cells.row[keep]))]
    cls, row, x0, x1 = data.labels[order], cells.row[order], cells.x0[order], cells.x1[order]
    start = np.ones(len(order), bool)
    start[1:] = (cls[1:] != cls[:-1]) | (row[1:] != row[:-1]) | (x0[1:] != x1[:-1])
    first = np.flatnonzero(start)
    last = np.append(first[1:], len(order)) - 1
    boxes = np.column_stack([x0[first], cells.y0[order][first], x1[last], cells.y1[order][first]])
    run_class = cls[first]
    return [boxes[run_class == k] for k in range(len(data.classes))], cells


def class_geometries(
    coords: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    patch_size: float,
) -> list[Any]:
    """The region of each class: the union of the cells of its patches.

    Parameters
    ----------
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y).
    labels : array-like of shape (n_patches,), int
        Class index per patch, ``-1`` for none.
    classes : sequence of str
        Class names, index order.
    patch_size : float
        Patch side in level-0 pixels.

    Returns
    -------
    list of shapely geometry
        One per class: an empty ``Polygon``, a ``Polygon`` or a
        ``MultiPolygon`` (disjoint parts), holes kept, valid.

    Notes
    -----
    A patch owns the stride-sized square around its centre (see
    :func:`sic_share.viz._common.patch_cells`), not the whole patch: whole
    overlapping patches would make neighbouring classes overlap by half a
    patch. So classes never overlap, and on a grid without overlap (stride =
    size) a class's area is its number of patches times the patch area.

    Cost: same-class neighbours along a row are merged into one rectangle
    first (numpy), then ``shapely.union_all`` merges the rectangles, so the
    union sees about one box per run rather than one per patch.
    """
    data = check_inputs(coords, labels, classes)
    boxes, _ = _class_boxes(data, check_patch_size(patch_size))
    out = []
    for class_boxes in boxes:
        if not len(class_boxes):
            out.append(shapely.Polygon())
            continue
        merged = shapely.union_all(shapely.box(*class_boxes.T))
        if not merged.is_valid:  # pragma: no cover - a union of axis-aligned boxes is valid
            merged = shapely.make_valid(merged)
        out.append(merged)
    return out


def _feature(geometry: Any, object_type: str, fid: uuid.UUID, name: str, color: tuple[int, int, int],
             measurements: dict[str, float]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": str(fid),
        "geometry": mapping(geometry),
        "properties": {
            "objectType": object_type,
            "classification": {"name": name, "color": list(color)},
            "measurements": measurements,
        },
    }


def qupath_geojson(
    *,
    slide_id: str,
    coords: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    patch_size: float,
    colors: Mapping[str, Any] | Sequence[Any] | None = None,
    tiles: bool = False,
    confidence: np.ndarray | None = None,
) -> dict[str, Any]:
    """Patch classes as a QuPath GeoJSON FeatureCollection (a dict, ready for ``json.dumps``).

    Parameters
    ----------
    slide_id : str
        Seeds the object ids, so that one slide's result always has the same ids.
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y).
    labels : array-like of shape (n_patches,), int
        Class index per patch, ``-1`` for none (left out).
    classes : sequence of str
        Class names, index order.
    patch_size : float
        Patch side in level-0 pixels.
    colors : mapping or sequence, optional
        Class colours, see :func:`class_colors`; defaults to its palette.
    tiles : bool, default=False
        Also write one ``"tile"`` object per labelled patch (its cell), for
        per-patch measurements in QuPath. Large: about 300 bytes per patch.
    confidence : array-like of shape (n_patches,), optional
        Per-patch confidence in [0, 1]: each class annotation gets the measurement
        ``mean_confidence`` and each tile ``confidence``, which QuPath can colour by
        (Measure > Show measurement maps).

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}``: first one
        ``"annotation"`` per class that has patches, with the measurement
        ``n_patches``, then the tiles with the measurement ``patch_index``.

    Notes
    -----
    What QuPath imports as is (drag and drop, or File > Import objects):
    ``id`` a UUID string, ``properties.objectType``, and
    ``properties.classification`` with both ``name`` and ``color``
    (QuPath rejects a name without a colour). Coordinates are level-0 pixels
    with the origin top-left, as QuPath's own. Ids are uuid5 of the slide id
    and the class (or patch index), so writing the same result twice gives
    the same file. Geometries are those of :func:`class_geometries`.
    """
    from sic_share.viz._exports import check_confidence

    data = check_inputs(coords, labels, classes)
    size = check_patch_size(patch_size)
    conf = check_confidence(confidence, len(data.labels))
    palette = class_colors(data.classes, colors)
    features = []
    counts = np.bincount(data.labels[data.labelled].astype(np.int64), minlength=len(data.classes))
    for k, geometry in enumerate(class_geometries(data.coords, data.labels, data.classes, size)):
        if geometry.is_empty:
            continue
        fid = uuid.uuid5(_NAMESPACE, f"{slide_id}/annotation/{data.classes[k]}")
        measurements: dict[str, float] = {"n_patches": int(counts[k])}
        if conf is not None:
            measurements["mean_confidence"] = round(float(conf[data.labels == k].mean()), 4)
        features.append(_feature(geometry, "annotation", fid, data.classes[k], palette[k], measurements))
    if tiles:
        cells = patch_cells(data.coords, size)
        for i in data.labelled:
            k = int(data.labels[i])
            box = shapely.box(cells.x0[i], cells.y0[i], cells.x1[i], cells.y1[i])
            fid = uuid.uuid5(_NAMESPACE, f"{slide_id}/tile/{i}")
            measurements = {"patch_index": int(i)}
            if conf is not None:
                measurements["confidence"] = round(float(conf[i]), 4)
            features.append(_feature(box, "tile", fid, data.classes[k], palette[k], measurements))
    return {"type": "FeatureCollection", "features": features}


def write_geojson(
    path: str | os.PathLike[str],
    *,
    slide_id: str,
    coords: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    patch_size: float,
    colors: Mapping[str, Any] | Sequence[Any] | None = None,
    tiles: bool = False,
    confidence: np.ndarray | None = None,
) -> Path:
    """Write :func:`qupath_geojson` to ``path`` atomically; returns the path.

    Raises
    ------
    SicShareError
        When the output folder does not exist or the inputs do not fit
        together (see :func:`qupath_geojson` for the parameters).
    """
    check_target(path)
    document = qupath_geojson(slide_id=slide_id, coords=coords, labels=labels, classes=classes,
                              patch_size=patch_size, colors=colors, tiles=tiles, confidence=confidence)
    return atomic_write(path, json.dumps(document, separators=(",", ":")).encode())
