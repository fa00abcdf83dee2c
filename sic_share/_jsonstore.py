"""Atomic writes: small JSON state files and whole folders (temporary name, then rename)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sic_share.errors import SicShareError

__all__ = ["load_json", "save_json", "atomic_write_bytes", "staged_folder", "read_bounded"]


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half.

    ``mode`` (e.g. ``0o600`` for private state) is set when the temporary file is
    created, so the content is never readable with wider permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        if mode is None:
            tmp.write_bytes(data)
        else:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
                handle.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of ``path``, refusing a file (or device, or pipe) larger than ``limit`` bytes.

    Reads at most ``limit + 1`` bytes, so ``/dev/zero`` or a huge file cannot fill memory.
    """
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise SicShareError(f"{what} {path} is larger than {limit} bytes: it is not a file sic-share wrote, check the path")
    return data


def load_json(path: Path, default: Any) -> Any:
    """Parse ``path``, or return ``default`` when it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except ValueError:
        raise SicShareError(f"{path} is not valid JSON: fix or delete it") from None


def save_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


@contextmanager
def staged_folder(dest: Path) -> Iterator[Path]:
    """Yield a hidden folder beside ``dest``; rename it to ``dest`` when the block succeeds.

    On any exception the folder is deleted, so nothing partial is ever visible
    under ``dest`` (the rename is atomic on one file system).
    """
    tmp = dest.with_name(f".{dest.name}.partial-{secrets.token_hex(4)}")
    try:
        tmp.mkdir(parents=True)
        yield tmp
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
