"""The reader interface every slide format implements, and the parts all readers share."""

from __future__ import annotations

import operator
import os
from abc import ABC, abstractmethod
from types import ModuleType, TracebackType

import numpy as np

from sic_share.errors import SlideError
from sic_share.slides._mpp import check_override

__all__ = ["SlideReader", "UnrecognisedFile", "composite_on_white", "import_pil", "sniff_format", "undecodable"]

_THUMBNAIL_CHUNK = 4096
"""Side in level pixels of the blocks a thumbnail is built from (bounds its memory)."""


_MAGIC = (
    (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"),
    (b"II+\0", "BigTIFF"),
    (b"MM\0+", "BigTIFF"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\0\0\0\x0cjP  ", "JPEG 2000"),
)


class UnrecognisedFile(SlideError):
    """A reader does not recognise the file at all (as opposed to failing to decode it).

    :func:`~sic_share.slides.open_slide` prefers another reader's more specific error.
    """


def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """The image container a file's first bytes announce (``"TIFF"``, ``"JPEG"``, ...), or ``None``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return None
    if head[128:132] == b"DICM":
        return "DICOM"
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def undecodable(source: str, path: str | os.PathLike[str], detail: object, library: str) -> SlideError:
    """The error for a file ``library`` cannot open: corrupt when it looks like an image, else not one.

    Returns (does not raise) an :class:`UnrecognisedFile` when the file's first bytes are
    no known image container, else a plain :class:`SlideError`.
    """
    kind = sniff_format(path)
    if kind is None:
        return UnrecognisedFile(
            f"{source} is not an image {library} can read ({detail}): check that it is a "
            "whole-slide image that was not renamed, converted or cut short"
        )
    return SlideError(
        f"{source} looks like a {kind} file but {library} cannot decode it ({detail}): it is "
        "truncated, corrupt or not a slide, so check it or copy it again from its source"
    )


def import_pil() -> ModuleType:
    """``PIL.Image``, or a :class:`SlideError` that says how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise SlideError("reading slides needs Pillow: pip install 'sic-share[export]'") from None
    return Image


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Flatten straight (non-premultiplied) RGBA onto white.

    Parameters
    ----------
    rgba : ndarray of shape (h, w, 4), uint8

    Returns
    -------
    ndarray of shape (h, w, 3), uint8
        ``rgb * a + 255 * (1 - a)``; transparent pixels become white (255).

    Notes
    -----
    Fully opaque input, the common case inside a slide, is only copied.
    """
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.uint16)
    blended = (rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return blended.astype(np.uint8)


class SlideReader(ABC):
    """One open slide: its pyramid geometry, its µm/px and its pixels, nothing else.

    Readers are context managers; use one reader per process or DataLoader worker
    (open it in ``worker_init_fn``), never share one handle across processes.

    Attributes
    ----------
    dimensions : tuple of (int, int)
        Level-0 ``(width, height)`` in pixels.
    level_dimensions : tuple of (int, int)
        ``(width, height)`` of every pyramid level, level 0 first.
    level_downsamples : tuple of float
        Downsample of every level relative to level 0 (``1.0`` first).
    mpp : float or None
        Level-0 micrometres per pixel: the override given to
        :func:`~sic_share.slides.open_slide` if any, else the file's own value when it is
        plausible, else ``None``.

    Notes
    -----
    No scanner metadata (properties, label or macro images) is exposed: the readers
    take what tiling needs and nothing a dataset must not hold.

    Subclasses open their file, then call ``super().__init__`` with the geometry and
    the file's µm/px, and implement :meth:`_read` and :meth:`_close`.
    """

    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        level_dimensions: tuple[tuple[int, int], ...],
        level_downsamples: tuple[float, ...],
        file_mpp: float | None,
        mpp_problem: str | None = None,
        mpp: float | None = None,
    ) -> None:
        self._source = os.fspath(path)
        self._closed = False
        self.level_dimensions = tuple((int(w), int(h)) for w, h in level_dimensions)
        self.level_downsamples = tuple(float(d) for d in level_downsamples)
        self.dimensions = self.level_dimensions[0]
        try:
            override = check_override(mpp, self._source)
        except SlideError:
            self._close()
            raise
        self.mpp = override if override is not None else file_mpp
        # Why the file's µm/px was refused, for make_grid's error; None when it is fine.
        self._mpp_problem = None if self.mpp is not None else mpp_problem

    # -- what subclasses implement ------------------------------------------------------

    @abstractmethod
    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Arguments already checked; return ``(h, w, 3)`` uint8, white where there is no slide."""

    @abstractmethod
    def _close(self) -> None:
        """Release the file handle."""

    # -- public interface ---------------------------------------------------------------

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a rectangle of pixels at one pyramid level.

        Parameters
        ----------
        location : tuple of (int, int)
            Top-left ``(x, y)`` in **level-0** pixels (as OpenSlide does); may lie outside
            the slide.
        level : int
            Pyramid level, ``0 <= level < len(level_dimensions)``.
        size : tuple of (int, int)
            ``(width, height)`` in pixels **at** ``level``.

        Returns
        -------
        ndarray of shape (height, width, 3), uint8
            RGB; transparent and out-of-slide pixels are white (255).

        Raises
        ------
        SlideError
            When the file cannot be decoded there (truncated or corrupt).
        ValueError
            For a closed reader, a level that does not exist or a non-positive size.
        """
        x, y = (operator.index(v) for v in location)
        w, h = (operator.index(v) for v in size)
        level = operator.index(level)
        if self._closed:
            raise ValueError("read_region on a closed slide reader")
        if not 0 <= level < len(self.level_dimensions):
            raise ValueError(f"level={level} should be in [0, {len(self.level_dimensions)})")
        if w < 1 or h < 1:
            raise ValueError(f"size={(w, h)} should be positive")
        return self._read((x, y), level, (w, h))

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level that still has at least the resolution asked for.

        Parameters
        ----------
        downsample : float
            Wanted downsample relative to level 0.

        Returns
        -------
        int
            The level with the largest downsample ``<= downsample * 1.01``; level 0 when
            none is that fine.

        Notes
        -----
        The 1 % slack accepts pyramids whose downsamples are not exact powers of two
        (4.0004 for a level whose size was rounded); reading a slightly coarser level
        and resizing up by < 1 % is invisible, reading a level 2x finer costs 4x the I/O.
        """
        limit = float(downsample) * 1.01
        fitting = [i for i, d in enumerate(self.level_downsamples) if d <= limit]
        return max(fitting, key=lambda i: self.level_downsamples[i], default=0)

    def thumbnail(self, max_size: int) -> np.ndarray:
        """The whole slide, downsampled so that its longer side is at most ``max_size``.

        Parameters
        ----------
        max_size : int
            Bound on the longer side, in pixels. A slide smaller than that is returned
            at level 0 (never upsampled).

        Returns
        -------
        ndarray of shape (h, w, 3), uint8
            RGB; ``w / h`` equals the slide's aspect ratio up to rounding, and
            ``max(h, w) == min(max_size, max(dimensions))``.

        Notes
        -----
        Reads the coarsest sufficient level in blocks of at most 4096 x 4096 pixels,
        box-averages each block by the largest whole factor, and resizes the assembled
        image (less than 2x the output) to its final size. Memory stays bounded even for
        a slide without a pyramid, but such a slide is read whole: minutes for 100k px
        across (convert it to a pyramidal TIFF instead).
        """
        max_size = operator.index(max_size)
        if max_size < 1:
            raise ValueError(f"max_size={max_size} should be positive")
        image_mod = import_pil()
        width, height = self.dimensions
        scale = max(1.0, max(width, height) / max_size)
        out_size = (max(1, round(width / scale)), max(1, round(height / scale)))
        level = self.best_level_for_downsample(scale)
        level_ds = self.level_downsamples[level]
        level_w, level_h = self.level_dimensions[level]
        factor = max(1, int(scale / level_ds))
        chunk = factor * max(1, _THUMBNAIL_CHUNK // factor)
        reduced = np.empty((-(-level_h // factor), -(-level_w // factor), 3), np.uint8)
        for y in range(0, level_h, chunk):
            for x in range(0, level_w, chunk):
                block = self.read_region(
                    (round(x * level_ds), round(y * level_ds)),
                    level,
                    (min(chunk, level_w - x), min(chunk, level_h - y)),
                )
                if factor > 1:
                    block = np.asarray(image_mod.fromarray(block).reduce(factor))
                ry, rx = y // factor, x // factor
                reduced[ry : ry + block.shape[0], rx : rx + block.shape[1]] = block
        if reduced.shape[1::-1] == out_size:
            return reduced
        resized = image_mod.fromarray(reduced).resize(out_size, image_mod.Resampling.BOX)
        return np.asarray(resized)

    def close(self) -> None:
        """Release the file; idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        width, height = self.dimensions
        mpp = "unknown" if self.mpp is None else f"{self.mpp:g}"
        return f"<{type(self).__name__} {width}x{height} levels={len(self.level_dimensions)} mpp={mpp}>"
