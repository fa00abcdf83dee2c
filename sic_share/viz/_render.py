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
) -> Any:
    """Draw each patch's confidence as a layer: opaque dark red where a method hesitates, clear where it is sure.

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
        A band below the layer with ``title`` and a colour scale from 0 to 1 (see
        :func:`add_caption`); the layer keeps its size and alignment.

    Returns
    -------
    PIL.Image.Image
        RGBA: colour (180, 0, 0) with alpha ``255 * (1 - confidence)``, so laid over
        the slide or the class overlay it marks where the next click helps most.
    """
    from PIL import Image

    from sic_share.viz._exports import check_confidence

    points = np.asarray(coords)
    data = check_inputs(points, np.zeros(len(points), np.int8), ("patch",))
    conf = check_confidence(confidence, len(points))
    size = check_patch_size(patch_size)
    check_max_side(max_side)
    pixels = pixel_index(data.coords, size, max_side, slide_size)
    alpha = np.where(pixels.index >= 0, np.round(255 * (1 - conf[np.maximum(pixels.index, 0)])), 0).astype(np.uint8)
    rgba = np.zeros((*alpha.shape, 4), np.uint8)
    rgba[..., 0] = 180
    rgba[..., 3] = alpha
    image = Image.fromarray(rgba, "RGBA")
    if legend or title:
        image = add_caption(image, title=title, scale=((180, 0, 0), "confidence 0 (unsure)", "1 (sure)") if legend
                            else None, background=(255, 255, 255, 255))
    image.info["level0_per_pixel"] = pixels.scale
    return image


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
    scale: tuple[Sequence[int], str, str] | None = None,
    background: Sequence[int] = (255, 255, 255, 255),
) -> Any:
    """A band below ``image`` with a title, a swatch and name per class, and/or a colour scale.

    Parameters
    ----------
    image : PIL.Image.Image
        RGBA overlay or map; it is pasted unchanged at the top left.
    title : str, optional
        First line of the band (cut with an ellipsis where it is wider than the image).
    legend : sequence of (name, (r, g, b))
        One line per class: a swatch in its colour and its name.
    scale : ((r, g, b), left text, right text), optional
        A bar from that colour, opaque, to transparent over white (the confidence layer's key).
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
    from PIL import Image, ImageDraw, ImageFont

    width = max(image.width, 160)
    size = int(min(28, max(11, width / 70)))  # text grows with the image, so it stays legible when shown whole
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    line_h = round(size * 1.45)
    box = size - 2
    lines = (title is not None) + len(legend) + (scale is not None)
    band = Image.new("RGBA", (width, line_h * lines + 8), (255, 255, 255, 255))
    draw = ImageDraw.Draw(band)
    top = 4
    if title is not None:
        text = str(title)
        while len(text) > 1 and draw.textlength(text, font=font) > width - 8:
            text = text[:-2] + "…"
        draw.text((4, top), text, fill=(0, 0, 0, 255), font=font)
        top += line_h
    for name, color in legend:
        draw.rectangle([4, top, 4 + box, top + box], fill=(*color[:3], 255), outline=(0, 0, 0, 255))
        draw.text((box + 10, top), str(name), fill=(0, 0, 0, 255), font=font)
        top += line_h
    if scale is not None:
        color, left, right = scale
        left_w = draw.textlength(left, font=font)
        bar_x0, bar_x1 = int(left_w) + 10, int(left_w) + 10 + 6 * size
        for x in range(bar_x0, bar_x1):
            alpha = 1 - (x - bar_x0) / (bar_x1 - bar_x0 - 1)
            mixed = tuple(round(255 + alpha * (c - 255)) for c in color[:3])
            draw.line([x, top, x, top + box], fill=(*mixed, 255))
        draw.rectangle([bar_x0, top, bar_x1, top + box], outline=(0, 0, 0, 255))
        draw.text((4, top), left, fill=(0, 0, 0, 255), font=font)
        draw.text((bar_x1 + 6, top), right, fill=(0, 0, 0, 255), font=font)
    canvas = Image.new("RGBA", (width, image.height + band.height), tuple(background))
    canvas.paste(image, (0, 0))
    canvas.paste(band, (0, image.height))
    canvas.info.update(image.info)
    canvas.info["overlay_height"] = image.height
    return canvas
