"""Plain images (JPEG, PNG, single-resolution TIFF) through Pillow, as one-level slides."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from sic_share.errors import SlideError
from sic_share.slides._base import SlideReader, import_pil, undecodable
from sic_share.slides._mpp import mpp_from_resolution
from sic_share.slides._registry import register_reader

__all__ = ["MAX_PIXELS", "PilReader"]

MAX_PIXELS = 2**30
"""Largest plain image decoded (about 32k x 32k; 3.2 GB as RGB).

Pillow's own default (about 179 M pixels before it refuses) is below a DigestPath-sized
JPEG; anything larger than this belongs in a tiled pyramidal TIFF.
"""

_LIMIT_LOCK = threading.Lock()

_WIDE_MODES = frozenset({"I", "F"})
"""Pillow modes of 32-bit integer or float samples (with ``I;16*``, the ones wider than 8 bits).

Pillow's conversion to RGB clips them at 255 instead of scaling, so a 16-bit grayscale
PNG would read as a white image; such files are refused on open.
"""


@contextmanager
def _pixel_limit(image_mod: Any) -> Iterator[None]:
    """Raise Pillow's decompression-bomb limit to :data:`MAX_PIXELS` while opening.

    Pillow checks ``Image.MAX_IMAGE_PIXELS`` (warning above it, error above twice it)
    inside ``Image.open``; the check stays on, with a bound that fits slides, and the
    global goes back to its value afterwards. :class:`PilReader` refuses anything
    above :data:`MAX_PIXELS` itself, with a message that says what to do.
    """
    with _LIMIT_LOCK:
        previous = image_mod.MAX_IMAGE_PIXELS
        if previous is not None:
            image_mod.MAX_IMAGE_PIXELS = max(previous, MAX_PIXELS)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", image_mod.DecompressionBombWarning)
                yield
        finally:
            image_mod.MAX_IMAGE_PIXELS = previous


def _too_large(source: str, size: str) -> SlideError:
    return SlideError(
        f"{source} has {size} pixels, more than the {MAX_PIXELS:,} a plain image may have: convert "
        "it to a tiled pyramidal TIFF (e.g. vips tiffsave in.jpg out.tif --tile --pyramid "
        "--compression jpeg) and export that"
    )


@register_reader("pil", (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
class PilReader(SlideReader):
    """A plain image read by Pillow, seen as a one-level slide.

    Parameters
    ----------
    path : str or path-like
        A JPEG, PNG, or TIFF that OpenSlide cannot open (not tiled, or not a pyramid).
    mpp : float or None
        Level-0 µm/px overriding the file's.

    Notes
    -----
    The header is read on open; the pixels are decoded on the first read and kept in
    memory (a JPEG cannot be read in parts), so a truncated file fails at that first
    :meth:`read_region` or :meth:`thumbnail`, as a :class:`~sic_share.errors.SlideError`.
    Each process or DataLoader worker that opens the image holds its own decoded copy.

    µm/px comes from the DPI Pillow reports (JFIF/EXIF density, PNG ``pHYs``, TIFF
    resolution with a real unit), used only up to 10 µm/px: plain images mostly carry a
    72-600 dpi placeholder. Transparent pixels are flattened onto white. Grayscale of more
    than 8 bits per sample (16-bit PNG or TIFF, 32-bit integer or float TIFF) is refused on
    open: Pillow would clip it to white rather than scale it.
    """

    def __init__(self, path: str | os.PathLike[str], *, mpp: float | None = None) -> None:
        image_mod = import_pil()
        source = os.fspath(path)
        self._pixels: np.ndarray | None = None
        try:
            with _pixel_limit(image_mod):
                self._image = image_mod.open(source)
        except image_mod.DecompressionBombError as exc:
            raise _too_large(source, f"more than {2 * MAX_PIXELS:,} ({exc})") from None
        except MemoryError:
            raise
        except Exception as exc:  # Pillow's plugins raise many types for a bad file
            raise undecodable(source, source, exc, "Pillow") from None
        width, height = self._image.size
        if width * height > MAX_PIXELS:
            self._image.close()
            raise _too_large(source, f"{width} x {height}")
        if self._image.mode in _WIDE_MODES or self._image.mode.startswith("I;16"):
            mode = self._image.mode
            self._image.close()
            raise SlideError(
                f"{source} has {mode} pixels (16-bit or wider grayscale): slides are read as 8-bit "
                "colour, so convert it to an 8-bit RGB image of the stained section and export that"
            )
        dpi = self._image.info.get("dpi")
        file_mpp, problem = mpp_from_resolution(*dpi, "inch") if dpi else (None, None)
        super().__init__(
            source,
            level_dimensions=((width, height),),
            level_downsamples=(1.0,),
            file_mpp=file_mpp,
            mpp_problem=problem,
            mpp=mpp,
        )

    def _decoded(self) -> np.ndarray:
        """The whole image as ``(h, w, 3)`` uint8, decoding it on first use."""
        if self._pixels is None:
            image_mod = import_pil()
            image = self._image
            try:
                image.load()
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    image = image.convert("RGBA")
                    white = image_mod.new("RGBA", image.size, (255, 255, 255, 255))
                    image = image_mod.alpha_composite(white, image)
                rgb = np.asarray(image.convert("RGB"))
            except MemoryError:
                raise
            except Exception as exc:
                raise SlideError(
                    f"{self._source} could not be decoded by Pillow ({exc}): the file is truncated "
                    "or corrupt, so copy it again from its source"
                ) from None
            self._pixels = rgb
            self._image.close()
        return self._pixels

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        pixels = self._decoded()
        (x, y), (w, h) = location, size
        height, width = pixels.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x0 == x and y0 == y and x1 == x + w and y1 == y + h:
            return pixels[y0:y1, x0:x1].copy()
        out = np.full((h, w, 3), 255, np.uint8)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels[y0:y1, x0:x1]
        return out

    def _close(self) -> None:
        self._pixels = None
        if hasattr(self, "_image"):
            self._image.close()
