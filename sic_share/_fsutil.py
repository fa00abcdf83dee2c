"""One way to turn a path or URL into a filesystem (fsspec's ``url_to_fs``)."""

from __future__ import annotations

import os
import re
from typing import Any

import fsspec
from fsspec.core import url_to_fs

__all__ = ["resolve", "is_local", "join", "has_scheme"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def resolve(url: str | os.PathLike[str], **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a local path, ``file://`` or ``s3://`` URL."""
    return url_to_fs(os.fspath(url), **storage_options)


def has_scheme(text: str) -> bool:
    """Whether ``text`` starts with a URL scheme (``s3://``, ``https://``, ``file://``, ...), not a plain path."""
    return bool(_SCHEME.match(text))


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local disk (where rename and exclusive create are atomic)."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def join(*parts: str) -> str:
    """Join path segments with '/', as every fsspec filesystem expects."""
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)
