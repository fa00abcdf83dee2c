"""Micrometres per pixel: where a slide's resolution comes from and when to distrust it.

Every source of µm/px goes through here so that the readers agree on one rule set:

- vendor metadata (``openslide.mpp-x``/``mpp-y``) is used when both axes agree within 10 %
  and the value lies within :data:`MPP_RANGE`;
- resolution tags (TIFF ``XResolution`` + ``ResolutionUnit``, JPEG/PNG DPI) are used only
  for a real unit (inch or centimetre) and a value of at most :data:`RESOLUTION_MAX_MPP`:
  72, 96, 300 or 600 dpi are what image libraries write by default, not microscope
  resolutions;
- an override given by the user must lie within :data:`MPP_RANGE`, or it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sic_share.errors import SlideError

__all__ = [
    "MPP_RANGE",
    "RESOLUTION_MAX_MPP",
    "check_override",
    "mpp_from_openslide",
    "mpp_from_resolution",
]

MPP_RANGE = (0.05, 100.0)
"""Plausible level-0 µm/px: from beyond 100x objectives to a 0.1x overview."""

RESOLUTION_MAX_MPP = 10.0
"""Largest µm/px believed from resolution tags (2540 dpi; print and screen defaults are lower)."""

_ANISOTROPY = 0.10
_UM_PER_UNIT = {"centimeter": 1e4, "cm": 1e4, "inch": 25_400.0, "in": 25_400.0}

MppResult = tuple[float | None, str | None]
"""``(mpp, problem)``: the usable level-0 µm/px, or ``None`` and why when worth saying."""


def _to_float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _in_range(mpp: float | None, upper: float = MPP_RANGE[1]) -> bool:
    return mpp is not None and MPP_RANGE[0] <= mpp <= upper


def _pair(mpp_x: float | None, mpp_y: float | None, upper: float) -> MppResult:
    """Combine per-axis values: one usable value, or ``None`` and the reason."""
    mpp_x = mpp_y if mpp_x is None else mpp_x
    mpp_y = mpp_x if mpp_y is None else mpp_y
    if mpp_x is None or mpp_y is None or not (_in_range(mpp_x, upper) and _in_range(mpp_y, upper)):
        return None, None
    if abs(mpp_x - mpp_y) > _ANISOTROPY * min(mpp_x, mpp_y):
        return None, (
            f"its µm/px differ between x ({mpp_x:g}) and y ({mpp_y:g}) by more than "
            f"{_ANISOTROPY:.0%}, so neither can be trusted"
        )
    return (mpp_x + mpp_y) / 2, None


def check_override(mpp: object, source: str) -> float | None:
    """Validate a user-given level-0 µm/px; ``None`` passes through.

    Raises
    ------
    SlideError
        When ``mpp`` is not a finite number within :data:`MPP_RANGE`.
    """
    if mpp is None:
        return None
    value = None if isinstance(mpp, bool) else _to_float(mpp)
    if not _in_range(value):
        lo, hi = MPP_RANGE
        raise SlideError(
            f"mpp={mpp!r} given for {source} is outside {lo:g}-{hi:g} µm/px: pass the level-0 "
            "resolution, e.g. --mpp 0.25 for a 40x scan or --mpp 0.5 for 20x"
        )
    return value


def mpp_from_resolution(x_res: object, y_res: object, unit: object) -> MppResult:
    """µm/px from resolution tags: pixels per ``unit`` (``"inch"``/``"centimeter"``).

    Parameters
    ----------
    x_res, y_res : number or str or None
        Pixels per unit along x and y (TIFF ``XResolution``/``YResolution``, or DPI).
    unit : str or None
        ``"inch"``, ``"centimeter"`` (or ``"in"``/``"cm"``); anything else, including
        TIFF's ``"none"``, means the tags carry no physical size.

    Returns
    -------
    mpp : float or None
        Usable µm/px, or ``None``.
    problem : str or None
        Why the value is unusable, when that is worth telling the user.

    Notes
    -----
    Values above :data:`RESOLUTION_MAX_MPP` are dropped silently: they are the
    placeholder DPI that imaging libraries write, not a scan resolution.
    """
    per_unit = _UM_PER_UNIT.get(str(unit).strip().lower()) if unit is not None else None
    if per_unit is None:
        return None, None
    px_x, px_y = _to_float(x_res), _to_float(y_res)
    mpp_x = per_unit / px_x if px_x else None
    mpp_y = per_unit / px_y if px_y else None
    return _pair(mpp_x, mpp_y, RESOLUTION_MAX_MPP)


def mpp_from_openslide(properties: Mapping[str, str]) -> MppResult:
    """µm/px from OpenSlide's property map; see :func:`mpp_from_resolution` for the result.

    Notes
    -----
    ``openslide.mpp-x``/``mpp-y`` come first. OpenSlide's generic-TIFF driver derives them
    from the TIFF resolution tags, so for ``openslide.vendor == "generic-tiff"`` they get
    the stricter resolution-tag rule. Without them, ``tiff.XResolution`` with
    ``tiff.ResolutionUnit`` is tried.
    """
    mpp_x = _to_float(properties.get("openslide.mpp-x"))
    mpp_y = _to_float(properties.get("openslide.mpp-y"))
    if mpp_x is not None or mpp_y is not None:
        derived = properties.get("openslide.vendor") == "generic-tiff"
        return _pair(mpp_x, mpp_y, RESOLUTION_MAX_MPP if derived else MPP_RANGE[1])
    return mpp_from_resolution(
        properties.get("tiff.XResolution"),
        properties.get("tiff.YResolution"),
        properties.get("tiff.ResolutionUnit"),
    )
