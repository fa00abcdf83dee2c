"""Class colours: one palette for every output (GeoJSON, TissUUmaps, PNG)."""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import Any

from sic_share.errors import SicShareError

__all__ = ["OKABE_ITO", "class_colors", "colors_for", "hex_color", "seeds_file_colors"]

#: Okabe & Ito (2008), colour-blind safe; vermillion first so that a binary "positive" is reddish.
OKABE_ITO: tuple[tuple[int, int, int], ...] = (
    (213, 94, 0),  # vermillion
    (0, 114, 178),  # blue
    (0, 158, 115),  # bluish green
    (230, 159, 0),  # orange
    (204, 121, 167),  # reddish purple
    (86, 180, 233),  # sky blue
    (240, 228, 66),  # yellow
    (0, 0, 0),  # black
)
_GREY = (153, 153, 153)
_BACKGROUND_NAMES = frozenset({
    "negative", "background", "normal", "healthy", "benign", "other", "rest", "none",
    "unlabelled", "unlabeled", "ignore",
})


def hex_color(rgb: Sequence[int]) -> str:
    """``(r, g, b)`` as ``#rrggbb``."""
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _parse(value: Any, name: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    if isinstance(value, str):
        try:
            rgb = ImageColor.getrgb(value)
        except ValueError:
            raise SicShareError(
                f"colour {value!r} of class {name!r} is not a colour: use '#rrggbb', a colour name or (r, g, b)"
            ) from None
        return int(rgb[0]), int(rgb[1]), int(rgb[2])
    try:
        r, g, b = (int(v) for v in value)
    except (TypeError, ValueError):
        r = g = b = -1
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise SicShareError(
            f"colour {value!r} of class {name!r} is not a colour: use '#rrggbb', a colour name or (r, g, b) in 0-255"
        )
    return r, g, b


def class_colors(
    classes: Sequence[str],
    colors: Mapping[str, Any] | Sequence[Any] | None = None,
) -> list[tuple[int, int, int]]:
    """One RGB colour per class.

    Parameters
    ----------
    classes : sequence of str
        Class names, index order.
    colors : mapping or sequence, optional
        Colours to use instead of the defaults: a mapping from class name to
        colour (classes left out get defaults) or one colour per class. A
        colour is ``"#rrggbb"``, a CSS colour name, or ``(r, g, b)`` in 0-255.

    Returns
    -------
    list of (int, int, int)
        ``len(classes)`` colours.

    Notes
    -----
    Defaults are the Okabe-Ito palette, distinct under the common forms of
    colour blindness, in class order. The first class named like background
    (negative, background, normal, healthy, benign, other, rest, none,
    unlabelled, ignore; case ignored) is grey instead, so that the class of
    interest stands out; further background-like names take palette colours
    to stay distinguishable. Past eight coloured classes, colours continue
    with golden-ratio spaced hues.
    """
    names = list(classes)
    given: dict[str, Any] = {}
    if isinstance(colors, Mapping):
        unknown = [key for key in colors if key not in names]
        if unknown:
            raise SicShareError(f"colours are given for {unknown}, which are not among the classes {names}")
        given = dict(colors)
    elif colors is not None:
        listed = list(colors)
        if len(listed) != len(names):
            raise SicShareError(f"{len(listed)} colours were given for {len(names)} classes {names}: give one each")
        given = dict(zip(names, listed))
    out: list[tuple[int, int, int]] = []
    grey_used = False
    k = 0
    for name in names:
        if name in given:
            out.append(_parse(given[name], name))
        elif not grey_used and name.strip().casefold() in _BACKGROUND_NAMES:
            out.append(_GREY)
            grey_used = True
        else:
            if k < len(OKABE_ITO):
                out.append(OKABE_ITO[k])
            else:
                hue = (k - len(OKABE_ITO)) * 0.618033988749895 % 1.0
                r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.85)
                out.append((round(r * 255), round(g * 255), round(b * 255)))
            k += 1
    return out


def seeds_file_colors(text: str | bytes) -> dict[str, tuple[int, int, int]]:
    """The class colours a QuPath GeoJSON seeds file carries: ``{class name: (r, g, b)}``.

    Parameters
    ----------
    text : str or bytes
        The file's contents. Anything that is not GeoJSON (a CSV ``x,y,label``) has no colours.

    Returns
    -------
    dict
        One entry per class whose ``classification`` has a ``color``: ``[r, g, b]`` as QuPath
        writes it, or a packed integer (``0xRRGGBB``, alpha ignored). The first colour seen for a
        class wins; classes without one are left out, so :func:`class_colors` gives them defaults.
    """
    import json

    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return {}
    features = data.get("features") if isinstance(data, dict) else data
    out: dict[str, tuple[int, int, int]] = {}
    for feature in features if isinstance(features, list) else []:
        props = feature.get("properties") if isinstance(feature, dict) else None
        cls = props.get("classification") if isinstance(props, dict) else None
        if not isinstance(cls, dict) or not isinstance(cls.get("name"), str) or cls["name"] in out:
            continue
        value = cls.get("color", cls.get("colorRGB"))
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            value = ((value >> 16) & 255, (value >> 8) & 255, value & 255)
        if isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
            out[cls["name"]] = (value[0], value[1], value[2])
        elif isinstance(value, tuple):
            out[cls["name"]] = value
    return out


def colors_for(classes: Sequence[str], given: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The colours in ``given`` (a seeds file's, by class name) for the classes named, matched as seeds are.

    Class names match without regard to case (``--classes dermis`` takes the colour of a seeds
    file's ``Dermis``), as :func:`sic_share.sic.read_seeds` matches them; colours of classes not
    named are dropped. Returns ``{class: colour}`` for :func:`class_colors`, or None when none match.
    """
    if not given:
        return None
    by_name = {str(name).casefold(): colour for name, colour in given.items()}
    found = {name: by_name[name.casefold()] for name in classes if name.casefold() in by_name}
    return found or None
