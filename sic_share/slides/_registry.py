"""Reader registry and the :func:`open_slide` factory (after timm's model registry)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sic_share.errors import SlideError
from sic_share.slides._base import SlideReader, UnrecognisedFile
from sic_share.slides._mpp import check_override

__all__ = ["FOLDER", "list_readers", "open_slide", "register_reader", "supported_suffixes"]

FOLDER = "/"
"""Pseudo-suffix a reader registers to be offered folders (DICOM series)."""

_R = TypeVar("_R", bound=type[SlideReader])
_READERS: dict[str, tuple[type[SlideReader], tuple[str, ...]]] = {}


def _normalise_suffix(suffix: str) -> str:
    suffix = suffix.strip().lower()
    if suffix == FOLDER or suffix.startswith("."):
        return suffix
    return "." + suffix


def register_reader(name: str, suffixes: tuple[str, ...]) -> Callable[[_R], _R]:
    """Class decorator that makes a :class:`SlideReader` available to :func:`open_slide`.

    Parameters
    ----------
    name : str
        Unique reader name, as :func:`list_readers` shows it.
    suffixes : tuple of str
        File suffixes the reader handles (``".svs"``; case and the dot do not matter),
        and :data:`FOLDER` (``"/"``) to be offered folders.

    Returns
    -------
    callable
        The decorator; it returns the class unchanged.

    Raises
    ------
    ValueError
        When ``name`` is empty or already registered, or ``suffixes`` is empty.
    TypeError
        When the decorated class is not a :class:`SlideReader`.

    Notes
    -----
    Readers that share a suffix are tried in registration order until one opens the
    file: the OpenSlide reader is registered before the Pillow one, so a ``.tif`` goes
    to OpenSlide first and falls back to Pillow when it is not a pyramid. The class
    must accept ``cls(path, *, mpp=None)`` and raise :class:`~sic_share.errors.SlideError`
    when it cannot open the file.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"reader name={name!r} should be a non-empty string")
    if name in _READERS:
        raise ValueError(f"a reader named {name!r} is already registered: {list_readers()}")
    if isinstance(suffixes, str) or not suffixes:
        raise ValueError(f"suffixes={suffixes!r} should be a non-empty tuple such as ('.svs',)")
    normalised = tuple(dict.fromkeys(_normalise_suffix(s) for s in suffixes))

    def decorate(cls: _R) -> _R:
        if not (isinstance(cls, type) and issubclass(cls, SlideReader)):
            raise TypeError(f"{cls!r} is not a SlideReader subclass")
        if name in _READERS:
            raise ValueError(f"a reader named {name!r} is already registered: {list_readers()}")
        _READERS[name] = (cls, normalised)
        return cls

    return decorate


def list_readers() -> list[str]:
    """Names of the registered readers, in the order they are tried."""
    return list(_READERS)


def supported_suffixes() -> list[str]:
    """Every suffix some reader handles, sorted (:data:`FOLDER` excluded)."""
    return sorted({s for _, suffixes in _READERS.values() for s in suffixes if s != FOLDER})


def _supported_text() -> str:
    folders = any(FOLDER in suffixes for _, suffixes in _READERS.values())
    return ", ".join(supported_suffixes()) + (" or a DICOM folder" if folders else "")


def open_slide(path: str | os.PathLike[str], *, mpp: float | None = None) -> SlideReader:
    """Open a whole-slide image or plain image with the first reader that can.

    Parameters
    ----------
    path : str or path-like
        A local slide file, or a folder holding a DICOM series.
    mpp : float or None
        Level-0 µm/px to use instead of the file's own value (which is often missing
        or wrong for NDPI, MRXS and plain JPEG). Must lie within 0.05-100.

    Returns
    -------
    SlideReader
        An open reader; use it as a context manager.

    Raises
    ------
    SlideError
        When the file is missing, has an unsupported suffix, is not an image, is
        truncated or corrupt, or ``mpp`` is out of range.

    Notes
    -----
    A slide without a usable µm/px opens with ``reader.mpp = None``; whoever tiles it
    decides (:func:`~sic_share.slides.make_grid` refuses). When every candidate reader
    fails, the most specific error wins: "corrupt" or "too large" over "not recognised".

    Examples
    --------
    >>> with open_slide("CMU-1.svs") as slide:  # doctest: +SKIP
    ...     thumb = slide.thumbnail(1024)
    """
    source = os.fspath(path)
    check_override(mpp, source)
    target = Path(source)
    if not target.exists():
        raise SlideError(f"{source} does not exist: check the path")
    key = FOLDER if target.is_dir() else target.suffix.lower()
    candidates = [cls for cls, suffixes in _READERS.values() if key in suffixes]
    if not candidates:
        what = "a folder" if key == FOLDER else f"suffix {key!r}" if key else "no suffix"
        raise SlideError(
            f"{source} has {what}, which no slide reader handles: use one of {_supported_text()}"
        )
    errors: list[SlideError] = []
    for cls in candidates:
        try:
            return cls(target, mpp=mpp)
        except SlideError as exc:
            errors.append(exc)
    specific = [e for e in errors if not isinstance(e, UnrecognisedFile)]
    raise (specific[-1] if specific else errors[0])
