"""One way to turn a path or URL into a filesystem (fsspec's ``url_to_fs``)."""

from __future__ import annotations

import os
from typing import Any

import fsspec
from fsspec.core import url_to_fs

__all__ = ["resolve", "is_local", "join"]


def resolve(url: str | os.PathLike[str], **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a local path, ``file://`` or ``s3://`` URL."""
    return url_to_fs(os.fspath(url), **storage_options)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local disk (where rename and exclusive create are atomic)."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def join(*parts: str) -> str:
    """Join path segments with '/', as every fsspec filesystem expects."""
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)
