"""A PNG overlay of patch classes, aligned with the slide's top-left corner."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sic_share.errors import SicShareError
from sic_share.viz._common import (
    atomic_write,
    check_max_side,
    check_inputs,
    check_patch_size,
    check_target,
    pixel_index,
)
from sic_share.viz._palette import class_colors

__all__ = ["add_caption", "render_confidence", "render_overlay", "write_confidence_png", "write_png"]

_BACKGROUNDS = {"transparent": (255, 255, 255, 0), "white": (255, 255, 255, 255)}


def render_overlay(
    *,
    coords: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    patch_size: float,
    colors: Mapping[str, Any] | Sequence[Any] | None = None,
    max_side: int = 1500,
    background: str = "transparent",
    slide_size: tuple[int, int] | None = None,
    legend: bool = False,
    title: str | None = None,
) -> Any:
    """Draw each labelled patch's cell in its class colour.

    Parameters
    ----------
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y).
    labels : array-like of shape (n_patches,), int
        Class index per patch, ``-1`` for none (not drawn).
    classes : sequence of str
        Class names, index order.
    patch_size : float
        Patch side in level-0 pixels.
    colors : mapping or sequence, optional
        Class colours, see :func:`class_colors`.
    max_side : int, default=1500
        Longest side of the overlay in pixels, 16 to 20000.
    background : {"transparent", "white"}, default="transparent"
        What unlabelled places and glass look like.
    slide_size : (int, int), optional
        Level-0 (width, height) of the slide. Defaults to the far edge of the
        patches, so the image spans from the slide origin to the last patch.
    legend : bool, default=False
        Add a band below the overlay with a swatch and the name of each class
        (the overlay keeps its size and alignment; the image grows taller).
    title : str, optional
        A line of text at the top of that band (see :func:`add_caption`).

    Returns
    -------
    PIL.Image.Image
        RGBA, ``max_side`` pixels on its longest side (before the legend).
        ``Image.info["level0_per_pixel"]`` holds the scale, and
        ``Image.info["overlay_height"]`` the height of the part that lies over the slide.

    Notes
    -----
    The image starts at the slide's origin (0, 0), not at the first patch, so
    that scaled to the slide's size it lies exactly over a thumbnail. Each
    patch paints its cell (the stride-sized square around its centre, see
    :func:`class_geometries`), so overlapping patches do not paint over each
    other. A pixel takes the class of the cell its centre falls in: no loop
    over patches, O(pixels + n_patches log n_patches), and cells smaller than
    a pixel may be skipped (pixel centres sample the cells).
    """
    from PIL import Image

    data = check_inputs(coords, labels, classes)
    size = check_patch_size(patch_size)
    check_max_side(max_side)
    if background not in _BACKGROUNDS:
        raise SicShareError(f"background={background!r} should be one of {sorted(_BACKGROUNDS)}")
    palette = class_colors(data.classes, colors)
    pixels = pixel_index(data.coords, size, max_side, slide_size, drawn=data.labelled)
    h, w = pixels.index.shape
    lut = np.array([[*c, 255] for c in palette] + [_BACKGROUNDS[background]], np.uint8)
    rgba = lut[np.where(pixels.index >= 0, data.labels[pixels.index], len(palette))]
    image = Image.fromarray(rgba, "RGBA")

    if legend or title:
        image = add_caption(image, title=title, legend=list(zip(data.classes, palette)) if legend else (),
                            background=_BACKGROUNDS[background])
    image.info["level0_per_pixel"] = pixels.scale
    return image


def write_png(
    path: str | os.PathLike[str],
    *,
    coords: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    patch_size: float,
    colors: Mapping[str, Any] | Sequence[Any] | None = None,
    max_side: int = 1500,
    background: str = "transparent",
    slide_size: tuple[int, int] | None = None,
    legend: bool = False,
    title: str | None = None,
) -> Path:
    """Write :func:`render_overlay` as a PNG to ``path`` atomically; returns the path.

    Notes
    -----
    The scale (level-0 pixels per PNG pixel) is stored in the PNG's text chunk
    ``level0_per_pixel``, so that the overlay can be placed on the slide later.
    """
    check_target(path)
    image = render_overlay(coords=coords, labels=labels, classes=classes, patch_size=patch_size, colors=colors,
                           max_side=max_side, background=background, slide_size=slide_size, legend=legend,
                           title=title)
    return atomic_write(path, png_bytes(image))


def render_confidence(
    *,
    coords: np.ndarray,
    confidence: np.ndarray,
    patch_size: float,
    max_side: int = 1500,
    slide_size: tuple[int, int] | None = None,
    legend: bool = False,
    title: str | None = None,
    regions: int = 3,
) -> Any:
    """Draw where a method is least sure: its least certain patches in yellow, the largest groups numbered.

    Parameters
    ----------
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y).
    confidence : array-like of shape (n_patches,)
        Per-patch confidence in [0, 1] (a method's ``confidence_``).
    patch_size, max_side, slide_size
        As in :func:`render_overlay`; the layer lines up with the class overlay pixel
        for pixel.
    legend, title : optional
        A band below the layer with ``title``, one line per tier (its colour, share,
        patch count and confidence range) and what the numbers mean (see
        :func:`add_caption`); the layer keeps its size and alignment.
    regions : int, default=3
        How many of the largest groups of marked patches to number (1 the largest):
        the places :func:`~sic_share.viz.uncertain_regions` names, where a seed helps most.

    Returns
    -------
    PIL.Image.Image
        RGBA: the least certain 5 % of the patches opaque yellow, the next 15 %
        half-transparent yellow (:func:`confidence_scale`), the other patches a faint
        grey (so that the tissue's outline shows on its own; over the class overlay it
        barely tints), no patch clear, and a numbered white disc at the patch to seed
        in each region.

    Notes
    -----
    The scale is relative to this result: confidence values depend on the method and
    the slide (label spreading's margins are mostly below 0.5 even where its labels are
    right), so a layer shaded by the value itself is dark almost everywhere. The legend
    gives the confidence range of each tier, so the numbers stay visible.
    """
    from PIL import Image, ImageDraw

    from sic_share.viz._confidence import TIER_COLORS, confidence_scale, uncertain_regions
    from sic_share.viz._exports import check_confidence

    points = np.asarray(coords)
    data = check_inputs(points, np.zeros(len(points), np.int8), ("patch",))
    conf = check_confidence(confidence, len(points))
    size = check_patch_size(patch_size)
    check_max_side(max_side)
    scale = confidence_scale(conf)
    pixels = pixel_index(data.coords, size, max_side, slide_size)
    lut = np.array([*TIER_COLORS, _SURER, (0, 0, 0, 0)], np.uint8)
    tier = np.where(pixels.index >= 0, scale.tier[np.maximum(pixels.index, 0)], len(TIER_COLORS) + 1)
    image = Image.fromarray(lut[np.where(tier < 0, len(TIER_COLORS), tier)], "RGBA")
    found = uncertain_regions(data.coords, scale, conf, top=regions) if regions else []
    if found:
        draw = ImageDraw.Draw(image)
        radius = max(8.0, 0.4 * pixels.cell_px)  # inside its cell on a readable map, so the cell stays seen
        font = _font(int(max(10, 1.3 * radius)))
        for k, region in enumerate(found, start=1):
            x, y = region.x / pixels.scale, region.y / pixels.scale
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 255, 255, 255),
                         outline=(0, 0, 0, 255), width=max(1, round(radius / 6)))
            draw.text((x, y), str(k), fill=(0, 0, 0, 255), font=font, anchor="mm")
    if legend or title:
        keys = [(line, _on_white(colour)) for line, colour in zip(scale.legend(), [*TIER_COLORS, _SURER])]
        notes = ["confidence: the chosen class's probability minus the next one's (0: a toss-up, 1: sure)"]
        if found:
            notes.insert(0, f"1{'-' + str(len(found)) if len(found) > 1 else ''}: the largest groups of marked "
                            "patches, largest first: seed there next")
        image = add_caption(image, title=title, legend=keys if legend else (), notes=notes if legend else (),
                            background=(255, 255, 255, 255))
    image.info["level0_per_pixel"] = pixels.scale
    return image


_SURER = (128, 128, 128, 48)  # the patches outside the tiers: a faint grey, the tissue's outline


def _on_white(rgba: Sequence[int]) -> tuple[int, int, int]:
    """A translucent colour as it looks over white (a legend swatch is opaque)."""
    alpha = rgba[3] / 255
    return tuple(round(255 + alpha * (c - 255)) for c in rgba[:3])  # type: ignore[return-value]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def write_confidence_png(
    path: str | os.PathLike[str],
    *,
    coords: np.ndarray,
    confidence: np.ndarray,
    patch_size: float,
    max_side: int = 1500,
    slide_size: tuple[int, int] | None = None,
    legend: bool = False,
    title: str | None = None,
) -> Path:
    """Write :func:`render_confidence` as a PNG to ``path`` atomically; returns the path."""
    check_target(path)
    image = render_confidence(coords=coords, confidence=confidence, patch_size=patch_size, max_side=max_side,
                              slide_size=slide_size, legend=legend, title=title)
    return atomic_write(path, png_bytes(image))


def png_bytes(image: Any) -> bytes:
    """An overlay or map as PNG bytes, with its scale in the text chunk ``level0_per_pixel``."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("level0_per_pixel", repr(image.info["level0_per_pixel"]))
    info.add_text("overlay_height", str(image.info.get("overlay_height", image.height)))
    info.add_text("Software", "sic-share")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, optimize=False)
    return buffer.getvalue()


def add_caption(
    image: Any,
    *,
    title: str | None = None,
    legend: Sequence[tuple[str, Sequence[int]]] = (),
    notes: Sequence[str] = (),
    background: Sequence[int] = (255, 255, 255, 255),
) -> Any:
    """A band below ``image`` with a title, a swatch and name per class (or tier), and lines of notes.

    Parameters
    ----------
    image : PIL.Image.Image
        RGBA overlay or map; it is pasted unchanged at the top left.
    title : str, optional
        First line of the band (cut with an ellipsis where it is wider than the image).
    legend : sequence of (name, (r, g, b))
        One line per class: a swatch in its colour and its name.
    notes : sequence of str
        Lines of plain text after the legend (what a key means).
    background : (r, g, b, a)
        Colour of the image's canvas where the band is narrower or the image is transparent.

    Returns
    -------
    PIL.Image.Image
        RGBA, as wide as ``image`` (at least 160 px) and taller by the band.
        ``info["overlay_height"]`` is the height of ``image``: the part that
        still lies over the slide at ``info["level0_per_pixel"]``.

    Notes
    -----
    The band goes below, never above or beside, so the overlay's origin stays at
    the slide's origin: cropped to ``overlay_height`` rows (the PNG's text chunk of
    that name) or not, it scales onto the slide as it did without a caption.
    """
    from PIL import Image, ImageDraw

    width = max(image.width, 160)
    size = int(min(28, max(11, width / 70)))  # text grows with the image, so it stays legible when shown whole
    font = _font(size)
    line_h = round(size * 1.45)
    box = size - 2
    lines = (title is not None) + len(legend) + len(notes)
    band = Image.new("RGBA", (width, line_h * lines + 8), (255, 255, 255, 255))
    draw = ImageDraw.Draw(band)
    top = 4

    def fitted(text: str, room: float) -> str:
        while len(text) > 1 and draw.textlength(text, font=font) > room:
            text = text[:-2] + "…"
        return text

    if title is not None:
        draw.text((4, top), fitted(str(title), width - 8), fill=(0, 0, 0, 255), font=font)
        top += line_h
    for name, color in legend:
        draw.rectangle([4, top, 4 + box, top + box], fill=(*color[:3], 255), outline=(0, 0, 0, 255))
        draw.text((box + 10, top), fitted(str(name), width - box - 14), fill=(0, 0, 0, 255), font=font)
        top += line_h
    for note in notes:
        draw.text((4, top), fitted(str(note), width - 8), fill=(0, 0, 0, 255), font=font)
        top += line_h
    canvas = Image.new("RGBA", (width, image.height + band.height), tuple(background))
    canvas.paste(image, (0, 0))
    canvas.paste(band, (0, image.height))
    canvas.info.update(image.info)
    canvas.info["overlay_height"] = image.height
    return canvas
