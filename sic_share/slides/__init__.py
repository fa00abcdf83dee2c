"""Slides: open whole-slide and plain images, find tissue, lay the patch grid.

Readers register themselves (like timm's models); :func:`open_slide` picks one by
suffix. OpenSlide handles whole-slide formats and tiled TIFF; Pillow handles JPEG, PNG
and the TIFFs OpenSlide cannot open. Readers expose geometry, µm/px and pixels only,
never scanner metadata.

>>> from sic_share.slides import make_grid, open_slide
>>> with open_slide("CMU-1.svs") as slide:  # doctest: +SKIP
...     grid = make_grid(slide, target_mpp=0.5, size_px=256)
"""

from __future__ import annotations

from sic_share.errors import SlideError
from sic_share.slides._base import SlideReader
from sic_share.slides._grid import PatchGrid, make_grid
from sic_share.slides._registry import list_readers, open_slide, register_reader, supported_suffixes
from sic_share.slides._tissue import tissue_mask

# Registration order is try order for shared suffixes: OpenSlide first, Pillow as fallback.
from sic_share.slides import _openslide  # noqa: E402,F401  isort: skip
from sic_share.slides import _pil  # noqa: E402,F401  isort: skip

__all__ = [
    "PatchGrid",
    "SlideError",
    "SlideReader",
    "list_readers",
    "make_grid",
    "open_slide",
    "register_reader",
    "supported_suffixes",
    "tissue_mask",
]
