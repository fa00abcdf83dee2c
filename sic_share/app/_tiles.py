"""The real slide for OpenSeadragon: Deep Zoom tiles from OpenSlide (``openslide.deepzoom``)."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np

from sic_share.errors import SlideError

__all__ = ["SlideTiles", "check_fits"]

TILE_SIZE = 254
OVERLAP = 1
FORMAT = "jpeg"


def check_fits(image: str, size: tuple[int, int], coords: np.ndarray, patch_size: float,
               recorded: tuple[int, int] | None) -> None:
    """Refuse an image that is not the slide the dataset was made from (by its level-0 size).

    With a recorded slide size (datasets that record it) the sizes must be equal; without
    one, every patch must lie inside the image and the patches must cover a fair part of it.
    """
    width, height = size
    if recorded is not None:
        if (width, height) != tuple(recorded):
            raise SlideError(f"{image} is {width} x {height} px at level 0 but the dataset's slide is "
                             f"{recorded[0]} x {recorded[1]} px: give the slide this dataset was exported from")
        return
    if not len(coords):
        return
    half = patch_size / 2
    far_x = float(coords[:, 0].max() + half)
    far_y = float(coords[:, 1].max() + half)
    if far_x > width + 1 or far_y > height + 1:
        raise SlideError(f"{image} is {width} x {height} px at level 0 but the dataset's patches reach "
                         f"{far_x:.0f} x {far_y:.0f} px: give the slide this dataset was exported from")
    # a grid never leaves more than one patch (plus a stride) unused at the far edges
    if far_x < 0.5 * width and far_y < 0.5 * height:
        raise SlideError(f"{image} is {width} x {height} px at level 0 but the dataset's patches cover only "
                         f"{far_x:.0f} x {far_y:.0f} px of it: give the slide this dataset was exported from")


class SlideTiles:
    """Deep Zoom tiles of one slide file (whole-slide formats through OpenSlide, JPEG/PNG/TIFF through Pillow).

    Parameters
    ----------
    path : path-like
        The slide image the user has (never part of a dataset).

    Notes
    -----
    ``limit_bounds=False``: Deep Zoom pixel (x, y) at the deepest level is level-0
    pixel (x, y), the frame of the dataset's coordinates. One OpenSlide handle is
    shared by the server's threads under a lock.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            import openslide
            from openslide.deepzoom import DeepZoomGenerator
        except ImportError as exc:
            raise SlideError(f"showing a slide needs OpenSlide ({exc}): pip install 'sic-share[export]'") from None
        source = Path(path)
        if not source.exists():
            raise SlideError(f"image {source} does not exist: give the slide file, or leave out --image")
        try:
            self._slide = openslide.open_slide(str(source))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise SlideError(f"image {source} cannot be opened by OpenSlide or Pillow ({exc}): give a slide "
                             "file (.svs, .tif, .ndpi, ...) or a JPEG/PNG") from None
        self.path = source
        self.dimensions: tuple[int, int] = tuple(int(v) for v in self._slide.dimensions)  # type: ignore[assignment]
        self._dz = DeepZoomGenerator(self._slide, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False)
        self._lock = threading.Lock()

    def dzi(self) -> str:
        """The Deep Zoom descriptor (XML)."""
        return self._dz.get_dzi(FORMAT)

    def tile(self, level: int, col: int, row: int) -> bytes:
        """One JPEG tile; ``ValueError`` for a tile that does not exist."""
        with self._lock:
            image = self._dz.get_tile(level, (col, row))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=80)
        return buffer.getvalue()

    def close(self) -> None:
        self._slide.close()
