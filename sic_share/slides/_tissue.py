"""Tissue detection on a slide thumbnail: Otsu on HSV saturation, then morphology."""

from __future__ import annotations

from typing import Any

import numpy as np

from sic_share.errors import SlideError

__all__ = ["tissue_mask"]

_THRESHOLD_RANGE = (0.05, 0.15)
"""Bounds on the saturation threshold: glass stays below, pale stroma above."""
_WHITE = 220
"""A pixel whose three channels are all at least this is background (glass, bright)."""
_BLACK = 25
"""A pixel whose three channels are all below this is not tissue (scan borders, ink)."""
_SMALL_OBJECT = 2e-4
_SMALL_HOLE = 5e-4


def _skimage() -> tuple[Any, Any]:
    try:
        from skimage import filters, morphology
    except ImportError:
        raise SlideError("tissue detection needs scikit-image: pip install 'sic-share[export]'") from None
    return filters, morphology


def _drop_small(morphology: Any, mask: np.ndarray, max_size: int, *, holes: bool) -> np.ndarray:
    """``remove_small_objects``/``remove_small_holes`` across the scikit-image 0.26 rename."""
    func = morphology.remove_small_holes if holes else morphology.remove_small_objects
    try:
        return func(mask, max_size=max_size)
    except TypeError:  # scikit-image < 0.26: strict "smaller than" keyword
        return func(mask, **{"area_threshold" if holes else "min_size": max_size + 1})


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """Which pixels of a slide thumbnail show tissue.

    Parameters
    ----------
    thumbnail : ndarray of shape (h, w, 3), uint8
        RGB, background white, as :meth:`SlideReader.thumbnail` returns it.

    Returns
    -------
    ndarray of shape (h, w), bool
        ``True`` on tissue.

    Raises
    ------
    ValueError
        When ``thumbnail`` is not an ``(h, w, 3)`` uint8 array.

    Notes
    -----
    Steps, with sizes scaled to the thumbnail so that results barely depend on its
    resolution (``r = max(1, round(max(h, w) / 1024))``):

    1. HSV saturation ``(max - min) / max`` per pixel, Gaussian-blurred with sigma ``r``:
       stained tissue is coloured, glass and its shadows are grey.
    2. Otsu's threshold (``skimage.filters.threshold_otsu``) on it, clipped to
       0.05-0.15. The clip is a deliberate departure from plain Otsu: on a crop that is
       nearly all tissue, Otsu splits eosin from haematoxylin and throws away pale
       stroma; on a nearly empty slide it splits the glass's noise. A constant image
       (all white, say) skips Otsu and uses the upper bound.
    3. Pixels that are near-white (all channels >= 220) or near-black (all < 25) are
       never tissue, whatever their saturation.
    4. Closing then opening with a disk of radius ``r``, then removal of specks smaller
       than 0.02 % of the thumbnail and filling of holes smaller than 0.05 %.

    Cost: about 0.5 s for a 2048 x 1532 thumbnail on two cores.
    """
    is_rgb = isinstance(thumbnail, np.ndarray) and thumbnail.ndim == 3 and thumbnail.shape[2] == 3
    if not (is_rgb and thumbnail.dtype == np.uint8):
        shape = getattr(thumbnail, "shape", None)
        dtype = getattr(thumbnail, "dtype", type(thumbnail).__name__)
        raise ValueError(f"thumbnail of shape {shape} and dtype {dtype} should be (h, w, 3) uint8")
    filters, morphology = _skimage()
    height, width = thumbnail.shape[:2]
    radius = max(1, round(max(height, width) / 1024))
    red, green, blue = thumbnail[..., 0], thumbnail[..., 1], thumbnail[..., 2]
    high = np.maximum(np.maximum(red, green), blue)
    low = np.minimum(np.minimum(red, green), blue)
    saturation = (high - low).astype(np.float32) / np.maximum(high, 1)
    saturation = filters.gaussian(saturation, sigma=radius)
    lo, hi = _THRESHOLD_RANGE
    if float(saturation.max() - saturation.min()) < 1e-3:
        threshold = hi
    else:
        threshold = min(max(float(filters.threshold_otsu(saturation)), lo), hi)
    mask = (saturation > threshold) & (low < _WHITE) & (high >= _BLACK)
    if not mask.any():
        return mask
    disk = morphology.disk(radius)
    mask = morphology.opening(morphology.closing(mask, disk), disk)
    mask = _drop_small(morphology, mask, int(_SMALL_OBJECT * height * width), holes=False)
    mask = _drop_small(morphology, mask, int(_SMALL_HOLE * height * width), holes=True)
    return mask.astype(bool, copy=False)
