"""The patch grid: where on a slide patches are cut, at which level, and how much tissue each holds."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from sic_share.errors import SlideError
from sic_share.slides._base import SlideReader
from sic_share.slides._mpp import MPP_RANGE
from sic_share.slides._tissue import tissue_mask

__all__ = ["PatchGrid", "make_grid"]


@dataclass(frozen=True, eq=False)
class PatchGrid:
    """Patches to cut from one slide, and how to read them.

    Attributes
    ----------
    coords : ndarray of shape (n, 2), int32, read-only
        Level-0 ``(x, y)`` patch **centres**, row-major (sorted by y, then x). The
        patch's top-left is ``coords - level0_size // 2`` (:attr:`top_left`).
    tissue : ndarray of shape (n,), float32, read-only
        Fraction of each kept patch that the tissue mask covers, in [0, 1].
    level : int
        Pyramid level to read patches from.
    level_size : int
        Patch side in pixels at ``level``: read ``(level_size, level_size)`` there, then
        resize to ``size_px``.
    level0_size : int
        Patch side in level-0 pixels, ``round(size_px * target_mpp / level0_mpp)``.
    size_px : int
        Patch side in pixels at ``target_mpp`` (what the encoder sees).
    stride_px : int
        Grid step in pixels at ``target_mpp``.
    target_mpp : float
        µm/px the patches are resampled to.
    level0_mpp : float
        µm/px of the slide's level 0.
    n_candidates : int
        Grid positions (whole patch inside the slide) before the tissue filter.
    """

    coords: np.ndarray
    tissue: np.ndarray
    level: int
    level_size: int
    level0_size: int
    size_px: int
    stride_px: int
    target_mpp: float
    level0_mpp: float
    n_candidates: int

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def top_left(self) -> np.ndarray:
        """ndarray of shape (n, 2), int64: level-0 top-left corners, the ``location`` for ``read_region``."""
        return self.coords.astype(np.int64) - self.level0_size // 2


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SlideError(f"{name}={value!r} should be a positive integer")
    return int(value)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _axis(length: int, size: int, stride: float, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-left corners along one axis, and their footprint ``[start, stop)`` in mask pixels.

    Corners are ``round(i * stride)`` for every ``i`` that keeps ``[corner, corner + size)``
    inside ``[0, length)``; ``scale`` converts level-0 pixels to mask pixels.
    """
    if size > length:
        empty = np.zeros(0, np.int64)
        return empty, empty.astype(float), empty.astype(float)
    count = int((length - size) / stride) + 2  # one spare; the exact test below trims it
    starts = np.floor(np.arange(count) * stride + 0.5).astype(np.int64)
    starts = starts[starts + size <= length]
    return starts, starts * scale, (starts + size) * scale


def _integral(table: np.ndarray, at: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of a summed-area table at fractional positions along ``axis``.

    For a piecewise-constant mask, bilinear interpolation of its summed-area table is its
    exact area integral up to a fractional corner, so box means need no rounding of
    patch edges to whole mask pixels.
    """
    last = table.shape[axis] - 2
    index = np.clip(np.floor(at).astype(np.intp), 0, last)
    weight = at - index
    below = np.take(table, index, axis=axis)
    above = np.take(table, index + 1, axis=axis)
    shape = [1, 1]
    shape[axis] = -1
    weight = weight.reshape(shape)
    return below * (1 - weight) + above * weight


def _box_fractions(mask: np.ndarray, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray) -> np.ndarray:
    """Mean of ``mask`` over every box ``[x0[j], x1[j]) x [y0[i], y1[i])``: shape (len(y0), len(x0))."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.float64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.float64), axis=1, out=table[1:, 1:])
    columns = _integral(table, x1, axis=1) - _integral(table, x0, axis=1)  # (h + 1, n_x)
    boxes = _integral(columns, y1, axis=0) - _integral(columns, y0, axis=0)  # (n_y, n_x)
    area = np.outer(y1 - y0, x1 - x0)
    return np.clip(boxes / area, 0.0, 1.0)


def make_grid(
    reader: SlideReader,
    *,
    target_mpp: float = 0.5,
    size_px: int = 256,
    stride_px: int | None = None,
    min_tissue: float = 0.5,
    thumbnail_size: int = 2048,
) -> PatchGrid:
    """Lay a patch grid over a slide at a target resolution and keep the patches on tissue.

    Parameters
    ----------
    reader : SlideReader
        The open slide; its ``mpp`` must be known.
    target_mpp : float, default=0.5
        µm/px the encoder should see (0.5 is 20x, the paper's setting).
    size_px : int, default=256
        Patch side in pixels at ``target_mpp``.
    stride_px : int or None, default=None
        Grid step at ``target_mpp``; ``None`` means ``size_px // 2`` (50 % overlap, as in
        the paper).
    min_tissue : float, default=0.5
        Smallest tissue fraction a patch must have to be kept, in [0, 1].
    thumbnail_size : int, default=2048
        Longer side of the thumbnail the tissue mask is computed on (at least 64).

    Returns
    -------
    PatchGrid
        Kept patch centres (level-0, row-major), their tissue fractions, and the level
        and size to read them at.

    Raises
    ------
    SlideError
        When the slide has no µm/px (pass ``--mpp`` or ``--mpp-csv``), or a parameter is
        out of range.

    Notes
    -----
    - ``level0_size = round(size_px * target_mpp / level0_mpp)`` (half up); the level-0
      stride is ``stride_px * target_mpp / level0_mpp``, kept fractional so a long
      row does not drift, and each corner is rounded on its own. The grid starts at
      (0, 0) and holds every position whose whole patch lies inside the slide.
    - Patches are read at ``level = reader.best_level_for_downsample(target_mpp /
      level0_mpp)``, ``level_size = round(level0_size / level_downsamples[level])``
      pixels, then resized by the encoder to ``size_px``.
    - The tissue fraction of a patch is the exact area mean of
      :func:`~sic_share.slides.tissue_mask` over its footprint on the thumbnail, from a
      summed-area table interpolated at the footprint's fractional edges: no per-patch
      Python loop, so cost is the thumbnail read plus the mask (about 1 s), not the
      patch count.
    - A slide smaller than one patch gives an empty grid, not an error.
    """
    source = getattr(reader, "_source", "the slide")
    level0_mpp = reader.mpp
    if level0_mpp is None:
        problem = getattr(reader, "_mpp_problem", None)
        why = f" ({problem})" if problem else ""
        raise SlideError(f"{source} has no µm/px{why}: pass --mpp X or --mpp-csv FILE")
    lo, hi = MPP_RANGE
    if isinstance(target_mpp, bool) or not isinstance(target_mpp, numbers.Real) or not lo <= target_mpp <= hi:
        raise SlideError(f"target_mpp={target_mpp!r} should be a number of µm/px within {lo:g}-{hi:g}")
    size_px = _positive_int("size_px", size_px)
    stride_px = max(1, size_px // 2) if stride_px is None else _positive_int("stride_px", stride_px)
    if isinstance(min_tissue, bool) or not isinstance(min_tissue, numbers.Real) or not 0 <= min_tissue <= 1:
        raise SlideError(f"min_tissue={min_tissue!r} should be a fraction in [0, 1]")
    thumbnail_size = _positive_int("thumbnail_size", thumbnail_size)
    if thumbnail_size < 64:
        raise SlideError(f"thumbnail_size={thumbnail_size!r} should be at least 64")

    scale = float(target_mpp) / level0_mpp  # level-0 pixels per target pixel
    level0_size = max(1, _round_half_up(size_px * scale))
    level = reader.best_level_for_downsample(scale)
    level_size = max(1, _round_half_up(level0_size / reader.level_downsamples[level]))

    width, height = reader.dimensions
    mask = tissue_mask(reader.thumbnail(thumbnail_size))
    xs, x0, x1 = _axis(width, level0_size, stride_px * scale, mask.shape[1] / width)
    ys, y0, y1 = _axis(height, level0_size, stride_px * scale, mask.shape[0] / height)
    n_candidates = len(xs) * len(ys)
    if n_candidates:
        fractions = _box_fractions(mask, x0, x1, y0, y1).ravel()
    else:
        fractions = np.zeros(0, np.float64)
    keep = np.flatnonzero(fractions >= min_tissue - 1e-9)
    row, col = np.divmod(keep, max(len(xs), 1))
    half = level0_size // 2
    coords = np.stack([xs[col] + half, ys[row] + half], axis=1).astype(np.int32).reshape(-1, 2)
    tissue = fractions[keep].astype(np.float32)
    coords.setflags(write=False)
    tissue.setflags(write=False)
    return PatchGrid(
        coords=coords,
        tissue=tissue,
        level=level,
        level_size=level_size,
        level0_size=level0_size,
        size_px=size_px,
        stride_px=stride_px,
        target_mpp=float(target_mpp),
        level0_mpp=float(level0_mpp),
        n_candidates=n_candidates,
    )
