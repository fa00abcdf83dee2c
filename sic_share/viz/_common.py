"""What every result writer shares: input checks, the cell each patch owns, atomic output."""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sic_share._jsonstore import atomic_write_bytes
from sic_share.errors import SicShareError
from sic_share.annotations import check_class_names


@dataclass(frozen=True)
class PatchClasses:
    """Checked inputs of a writer: level-0 centres, class per patch, class names."""

    coords: np.ndarray  # (n, 2) float64
    labels: np.ndarray  # (n,) int8, -1 unlabelled
    classes: tuple[str, ...]

    @property
    def labelled(self) -> np.ndarray:
        return np.flatnonzero(self.labels >= 0)


def check_inputs(coords: Any, labels: Any, classes: Sequence[str]) -> PatchClasses:
    points = np.asarray(coords)
    if points.ndim != 2 or points.shape[1] != 2 or not np.issubdtype(points.dtype, np.number):
        raise SicShareError(f"coords of shape {points.shape} should be (n_patches, 2) level-0 patch centres")
    if not np.isfinite(points).all():
        raise SicShareError("coords hold NaN or infinite values: give level-0 patch centres")
    values = np.asarray(labels)
    if values.shape != (points.shape[0],) or not np.issubdtype(values.dtype, np.integer):
        raise SicShareError(
            f"labels of shape {values.shape} and dtype {values.dtype} should be ({points.shape[0]},) class indices"
        )
    names = check_class_names(classes, SicShareError)
    if values.size and (values.min() < -1 or values.max() >= len(names)):
        bad = int(values.max()) if values.max() >= len(names) else int(values.min())
        raise SicShareError(
            f"labels hold the class index {bad} but only {len(names)} classes {list(names)} are named: "
            "name every class (-1 is unlabelled)"
        )
    return PatchClasses(points.astype(np.float64), values.astype(np.int8), names)


def import_extra(module: str, *, package: str, extra: str, needed_for: str, instead: str = "") -> Any:
    """Import an optional dependency, or raise one sentence saying what to install (and what else to do).

    ``package`` is its name on PyPI, ``extra`` the sic-share extra that
    installs it, ``needed_for`` what needs it (``"writing .h5ad"``), and
    ``instead`` an alternative that needs nothing (``"use method='pca'"``).
    A dependency of the package that is missing is named as such.
    """
    fix = f"pip install 'sic-share[{extra}]'" + (f", or {instead}" if instead else "")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module:
            raise SicShareError(f"{package} cannot be imported, it lacks {exc.name}: reinstall it with {fix}") from None
        raise SicShareError(f"{needed_for} needs {package}, which is not installed: {fix}") from None
    except ImportError as exc:
        raise SicShareError(f"{package} cannot be imported ({exc}): reinstall it with {fix}") from None


def check_max_side(max_side: Any) -> int:
    """The longest side of an image in pixels: an integer in 16-20000, or one sentence."""
    if not isinstance(max_side, int) or isinstance(max_side, bool) or not 16 <= max_side <= 20000:
        raise SicShareError(f"max_side={max_side!r} should be an integer number of pixels in 16-20000")
    return max_side


def check_patch_size(patch_size: Any) -> float:
    try:
        size = float(patch_size)
    except (TypeError, ValueError):
        size = float("nan")
    if not (np.isfinite(size) and size > 0):
        raise SicShareError(f"patch_size={patch_size!r} should be a positive number of level-0 pixels")
    return size


def _axis_cells(values: np.ndarray, half: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per value: its grid line index, and the low and high edge of its cell along this axis."""
    lines, index = np.unique(values, return_inverse=True)
    mid = (lines[:-1] + lines[1:]) / 2
    lo = np.maximum(np.concatenate([[-np.inf], mid]), lines - half)
    hi = np.minimum(np.concatenate([mid, [np.inf]]), lines + half)
    return index, lo[index], hi[index]


@dataclass(frozen=True)
class Cells:
    """The square each patch owns: rows and columns of the patch grid, and level-0 edges."""

    col: np.ndarray  # (n,) grid column index
    row: np.ndarray  # (n,) grid row index
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray


def patch_cells(coords: np.ndarray, patch_size: float) -> Cells:
    """The part of each patch nearer its own grid lines than the neighbouring ones.

    Patches overlap (stride half the size by default), so drawing whole
    patches would paint one place in two classes. Each patch instead owns a
    cell: along x, from the midpoint to the previous column of centres to the
    midpoint to the next, never further than half the patch size from its
    centre (so, beside a gap, the patch's own edge); the same along y. On a
    regular grid that is the stride-sized square centred on the centre, and
    cells tile the tissue without overlap or gaps; it is also the area where
    the patch is the nearest centre, the rule a point seed follows. Edges
    shared by neighbours are computed once, so they match exactly and shapely
    unions them without slivers.
    """
    half = patch_size / 2
    col, x0, x1 = _axis_cells(coords[:, 0], half)
    row, y0, y1 = _axis_cells(coords[:, 1], half)
    return Cells(col, row, x0, y0, x1, y1)


def _covering(edges_lo: np.ndarray, edges_hi: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """For each pixel centre (level-0), the grid line whose cell holds it, or -1."""
    order = np.argsort(edges_lo)
    lo, hi = edges_lo[order], edges_hi[order]
    at = np.searchsorted(lo, centres, side="right") - 1
    ok = (at >= 0) & (centres < hi[np.clip(at, 0, None)])
    return np.where(ok, order[np.clip(at, 0, None)], -1)


@dataclass(frozen=True)
class PixelIndex:
    """For each pixel of an image of the slide, the patch whose cell holds its centre (-1: none)."""

    index: np.ndarray  # (h, w) int64
    scale: float  # level-0 pixels per image pixel
    cell_px: float  # typical cell side in image pixels


def pixel_index(
    coords: np.ndarray,
    patch_size: float,
    max_side: int,
    slide_size: tuple[int, int] | None = None,
    *,
    drawn: np.ndarray | None = None,
) -> PixelIndex:
    """Which patch's cell (see :func:`patch_cells`) each pixel of a ``max_side`` image of the slide shows.

    Parameters
    ----------
    coords : ndarray of shape (n_patches, 2), float64
        Checked level-0 patch centres (x, y).
    patch_size : float
        Checked patch side in level-0 pixels.
    max_side : int
        Longest side of the image in pixels.
    slide_size : (int, int), optional
        Level-0 (width, height) the image spans. Defaults to the far edge of
        the patches' cells.
    drawn : ndarray of int, optional
        Indices of the patches to draw; the cells of the others stay empty
        (-1). Defaults to every patch.

    Returns
    -------
    PixelIndex
        ``index`` of shape (h, w), int64; ``scale`` in level-0 pixels per
        image pixel; ``cell_px``, the median cell side in image pixels.

    Notes
    -----
    The image starts at the slide's origin (0, 0), so every image made here
    with the same inputs lines up pixel for pixel. A pixel shows the cell its
    centre falls in: a grid of patch indices (rows x columns of the patch
    grid), then one lookup per pixel, O(pixels + n_patches log n_patches);
    cells smaller than a pixel may be skipped (pixel centres sample them).
    """
    cells = patch_cells(coords, patch_size)
    if slide_size is not None:
        width, height = (float(v) for v in slide_size)
    elif len(coords):
        width, height = float(cells.x1.max()), float(cells.y1.max())
    else:
        width = height = patch_size
    if not (width > 0 and height > 0):
        raise SicShareError(f"slide_size={slide_size!r} should be a positive level-0 (width, height)")
    scale = max(width, height) / max_side  # level-0 pixels per image pixel
    w, h = max(1, math.ceil(width / scale - 1e-9)), max(1, math.ceil(height / scale - 1e-9))
    grid = np.full((int(cells.row.max(initial=-1)) + 1, int(cells.col.max(initial=-1)) + 1), -1, np.int64)
    keep = np.arange(len(coords)) if drawn is None else drawn
    grid[cells.row[keep], cells.col[keep]] = keep
    col_lo = np.full(grid.shape[1], np.inf)
    col_hi = np.full(grid.shape[1], -np.inf)
    np.minimum.at(col_lo, cells.col, cells.x0)
    np.maximum.at(col_hi, cells.col, cells.x1)
    row_lo = np.full(grid.shape[0], np.inf)
    row_hi = np.full(grid.shape[0], -np.inf)
    np.minimum.at(row_lo, cells.row, cells.y0)
    np.maximum.at(row_hi, cells.row, cells.y1)
    px = _covering(col_lo, col_hi, (np.arange(w) + 0.5) * scale)
    py = _covering(row_lo, row_hi, (np.arange(h) + 0.5) * scale)
    index = np.full((h, w), -1, np.int64)
    inside = (py >= 0)[:, None] & (px >= 0)[None, :]
    index[inside] = grid[np.clip(py, 0, None)[:, None], np.clip(px, 0, None)[None, :]][inside]
    side = float(np.median(np.minimum(cells.x1 - cells.x0, cells.y1 - cells.y0))) if len(coords) else patch_size
    return PixelIndex(index, scale, side / scale)


def check_target(path: str | os.PathLike[str]) -> Path:
    """The output path, once its folder is known to exist (checked before any work is done)."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise SicShareError(f"output folder {folder} does not exist: create it or write the result elsewhere")
    if target.is_dir():
        raise SicShareError(f"output {target} is a folder: give a file name")
    return target


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` (temporary file, then rename): the old file or the new, never half."""
    target = check_target(path)
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise SicShareError(f"cannot write {target} ({exc.strerror or exc}): check the path and free space") from None
    return target
