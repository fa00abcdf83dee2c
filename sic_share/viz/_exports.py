"""Per-patch results out: label tables, TissUUmaps CSV, and one dispatcher over every format.

Every writer takes level-0 patch centres, the class index of each patch
(``-1`` for none), the class names and, where drawn, the patch size in level-0
pixels and optional colours; every writer builds the file in memory and puts it
in place by rename, so a failure leaves the old file or none, never half of one.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sic_share.errors import SicShareError
from sic_share.viz._common import PatchClasses, atomic_write, check_inputs, check_target
from sic_share.viz._geojson import write_geojson
from sic_share.viz._palette import class_colors, hex_color
from sic_share.viz._render import write_png

__all__ = ["FORMATS", "format_for", "write_labels", "write_result", "write_tissuumaps"]

#: Output formats of :func:`write_result`.
FORMATS = ("parquet", "csv", "geojson", "tissuumaps", "png")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".geojson": "geojson", ".json": "geojson",
             ".png": "png"}


def _coord_column(values: np.ndarray, source: np.ndarray) -> pa.Array:
    if np.issubdtype(source.dtype, np.integer) or np.array_equal(values, np.round(values)):
        return pa.array(values.astype(np.int64)).cast(pa.int32() if np.abs(values).max(initial=0) < 2**31
                                                      else pa.int64())
    return pa.array(values)


def _table(slide_id: str, data: PatchClasses, source: np.ndarray, confidence: np.ndarray | None = None) -> pa.Table:
    names = np.array([*data.classes, None], dtype=object)
    columns = {
        "slide_id": pa.array([slide_id] * len(data.labels), pa.string()),
        "x": _coord_column(data.coords[:, 0], source),
        "y": _coord_column(data.coords[:, 1], source),
        "label": pa.array(data.labels, pa.int8()),
        "class": pa.array(names[data.labels.astype(np.int64)], pa.string()),  # -1 picks the trailing None
    }
    if confidence is not None:
        columns["confidence"] = pa.array(confidence, pa.float32())
    return pa.table(columns)


def check_confidence(confidence: Any, n: int) -> np.ndarray | None:
    """Per-patch confidence as float32 in [0, 1], or None; one sentence when it does not fit."""
    if confidence is None:
        return None
    values = np.asarray(confidence)
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.number):
        raise SicShareError(f"confidence of shape {values.shape} should be ({n},), one number per patch")
    values = values.astype(np.float32)
    if not np.isfinite(values).all() or values.min(initial=0) < 0 or values.max(initial=0) > 1:
        raise SicShareError("confidence should hold finite numbers in [0, 1], one per patch")
    return values


def write_labels(
    path: str | os.PathLike[str],
    *,
    slide_id: str,
    coords: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    fmt: str = "parquet",
    confidence: np.ndarray | None = None,
) -> Path:
    """Write one row per patch: ``slide_id, x, y, label, class`` (and ``confidence`` when given).

    Parameters
    ----------
    path : path-like
        Output file, in an existing folder.
    slide_id : str
        Written in every row, so that tables of several slides concatenate.
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y), written as ``x`` and ``y``.
    labels : array-like of shape (n_patches,), int
        Class index per patch (``label``), ``-1`` for none.
    classes : sequence of str
        Class names; ``class`` is ``classes[label]``.
    fmt : {"parquet", "csv"}, default="parquet"
    confidence : array-like of shape (n_patches,), optional
        Per-patch confidence in [0, 1] (a method's ``confidence_``), written as a
        float32 column ``confidence``.

    Returns
    -------
    Path

    Notes
    -----
    Every patch has a row, in the slide file's order (row ``i`` is patch
    ``i``). Columns: ``x``/``y`` int32 when the centres are whole numbers
    (they are in a dataset), else float64; ``label`` int8 as in the dataset;
    ``class`` null in Parquet and empty in CSV for ``label = -1``.
    """
    if fmt not in ("parquet", "csv"):
        raise SicShareError(f"fmt={fmt!r} should be 'parquet' or 'csv' for a label table")
    check_target(path)
    source = np.asarray(coords)
    data = check_inputs(coords, labels, classes)
    table = _table(str(slide_id), data, source, check_confidence(confidence, len(data.labels)))
    if fmt == "parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return atomic_write(path, sink.getvalue().to_pybytes())
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table.column_names)
    columns = [table.column(name).to_pylist() for name in table.column_names]
    writer.writerows(zip(*columns))
    return atomic_write(path, text.getvalue().encode())


def write_tissuumaps(
    path: str | os.PathLike[str],
    *,
    coords: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    colors: Mapping[str, Any] | Sequence[Any] | None = None,
    confidence: np.ndarray | None = None,
) -> Path:
    """Write a TissUUmaps marker CSV: ``x, y, class, color`` (and ``confidence``), one row per labelled patch.

    Parameters
    ----------
    path : path-like
        Output CSV, in an existing folder.
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y).
    labels : array-like of shape (n_patches,), int
        Class index per patch; ``-1`` patches are left out.
    classes : sequence of str
        Class names.
    colors : mapping or sequence, optional
        Class colours, see :func:`class_colors`.
    confidence : array-like of shape (n_patches,), optional
        Per-patch confidence in [0, 1], written as a column (TissUUmaps can size or
        filter markers by it).

    Returns
    -------
    Path

    Notes
    -----
    In TissUUmaps, load the CSV as markers and pick ``x`` and ``y`` as the
    coordinates, ``class`` as the group key and ``color`` (``#rrggbb``) as the
    colour column. Coordinates are level-0 patch centres, the pixels of the
    slide's full-resolution image TissUUmaps shows.
    """
    check_target(path)
    data = check_inputs(coords, labels, classes)
    conf = check_confidence(confidence, len(data.labels))
    palette = [hex_color(c) for c in class_colors(data.classes, colors)]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["x", "y", "class", "color"] + (["confidence"] if conf is not None else []))
    keep = data.labelled
    xy = data.coords[keep]
    if np.array_equal(xy, np.round(xy)):
        xy = xy.astype(np.int64)
    k = data.labels[keep].astype(np.int64)
    names, hexes = np.array(data.classes, dtype=object), np.array(palette, dtype=object)
    columns = [xy[:, 0].tolist(), xy[:, 1].tolist(), names[k], hexes[k]]
    if conf is not None:
        columns.append([f"{v:.4f}" for v in conf[keep].tolist()])
    writer.writerows(zip(*columns))
    return atomic_write(path, text.getvalue().encode())


def format_for(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The output format: ``fmt`` when given, else from the suffix of ``path``.

    ``.parquet``/``.pq`` -> parquet, ``.csv`` -> csv, ``.geojson``/``.json``
    -> geojson, ``.png`` -> png. TissUUmaps output is a ``.csv`` too: it is
    chosen by ``fmt="tissuumaps"`` or by the double suffix ``.tissuumaps.csv``.
    """
    if fmt is not None:
        value = str(fmt).strip().lower()
        if value not in FORMATS:
            raise SicShareError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        return value
    name = Path(path).name.lower()
    if name.endswith(".tissuumaps.csv"):
        return "tissuumaps"
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise SicShareError(
            f"cannot tell the output format of {Path(path).name} from its suffix: name it .parquet, .csv, "
            f".geojson, .tissuumaps.csv or .png, or give the format ({', '.join(FORMATS)})"
        )
    return _SUFFIXES[suffix]


def write_result(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    slide_id: str,
    coords: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    patch_size: float,
    colors: Mapping[str, Any] | Sequence[Any] | None = None,
    tiles: bool = False,
    max_side: int = 1500,
    background: str = "transparent",
    legend: bool = False,
    confidence: np.ndarray | None = None,
    title: str | None = None,
    slide_size: tuple[int, int] | None = None,
) -> Path:
    """Write a slide's patch classes in any output format, with per-patch confidence where it fits.

    Parameters
    ----------
    path : path-like
        Output file; its folder must exist.
    fmt : {"parquet", "csv", "geojson", "tissuumaps", "png"}, optional
        Defaults to the format of the suffix (see :func:`format_for`).
    slide_id : str
        The slide's id (label tables; GeoJSON ids).
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y), as ``SlideData.coords``.
    labels : array-like of shape (n_patches,), int
        Class index per patch, ``-1`` for none.
    classes : sequence of str
        Class names, index order.
    patch_size : float
        Patch side in level-0 pixels (``metadata.patching.level0_size_px``).
    colors : mapping or sequence, optional
        Class colours (GeoJSON, TissUUmaps, PNG), see :func:`class_colors`.
    tiles : bool, default=False
        GeoJSON only: add one tile object per patch.
    max_side, background, legend, title, slide_size
        PNG only, see :func:`render_overlay`.
    confidence : array-like of shape (n_patches,), optional
        Per-patch confidence in [0, 1]: a ``confidence`` column in Parquet, CSV and
        TissUUmaps output, a QuPath measurement in GeoJSON (mean per class
        annotation, and per tile with ``tiles``). A PNG overlay holds one colour per
        patch and no number: asking it for confidence is an error that points to
        :func:`write_confidence_png`, which draws the confidence as its own layer.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    SicShareError
        One sentence: an unknown format or suffix, a missing output folder,
        inputs that do not fit together (labels beyond the classes, shapes).

    Notes
    -----
    Options that do not apply to the chosen format are ignored, so that a CLI
    can pass all of them. Writing goes to a hidden temporary file beside
    ``path`` that is renamed into place, so an interrupted or failed write
    leaves the previous file, or nothing. Outputs are local files.
    """
    kind = format_for(path, fmt)
    check_target(path)
    if confidence is not None and kind == "png":
        raise SicShareError(f"a PNG overlay holds one colour per patch, not a confidence: write {Path(path).name} "
                            "without confidence and the confidence as its own layer (--confidence-png FILE), or "
                            "write .parquet, .csv or .geojson, which hold it")
    if kind in ("parquet", "csv"):
        return write_labels(path, slide_id=slide_id, coords=coords, labels=labels, classes=classes, fmt=kind,
                            confidence=confidence)
    if kind == "tissuumaps":
        return write_tissuumaps(path, coords=coords, labels=labels, classes=classes, colors=colors,
                                confidence=confidence)
    if kind == "geojson":
        return write_geojson(path, slide_id=slide_id, coords=coords, labels=labels, classes=classes,
                             patch_size=patch_size, colors=colors, tiles=tiles, confidence=confidence)
    return write_png(path, coords=coords, labels=labels, classes=classes, patch_size=patch_size, colors=colors,
                     max_side=max_side, background=background, legend=legend, title=title, slide_size=slide_size)
