"""What every result writer shares: input checks, the cell each patch owns, atomic output."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sic_share._jsonstore import atomic_write_bytes
from sic_share.errors import SicShareError

_MAX_CLASSES = int(np.iinfo(np.int8).max)  # labels are int8, as in the dataset


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
    if isinstance(classes, str):
        raise SicShareError(f"classes={classes!r} should be a sequence of class names, not one string")
    names = tuple(classes)
    if not names or not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
        raise SicShareError(f"classes={list(names)!r} should be distinct, non-empty class names")
    if len(names) > _MAX_CLASSES:
        raise SicShareError(f"{len(names)} classes were named, at most {_MAX_CLASSES} fit the int8 label column")
    if values.size and (values.min() < -1 or values.max() >= len(names)):
        bad = int(values.max()) if values.max() >= len(names) else int(values.min())
        raise SicShareError(
            f"labels hold the class index {bad} but only {len(names)} classes {list(names)} are named: "
            "name every class (-1 is unlabelled)"
        )
    return PatchClasses(points.astype(np.float64), values.astype(np.int8), names)


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
