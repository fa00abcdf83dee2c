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

__all__ = ["STATE_LIMIT", "load_json", "not_written_by_us", "save_json", "atomic_write_bytes", "staged_folder",
           "read_bounded"]


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


def _size(limit: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if limit >= 1 << shift and limit % (1 << shift) == 0:
            return f"{limit >> shift} {unit}"
    return f"{limit} bytes"


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of ``path``, refusing a file (or device, or pipe) larger than ``limit`` bytes.

    Reads at most ``limit + 1`` bytes, so ``/dev/zero`` or a huge file cannot fill memory.
    A folder is refused as one line too; a missing file raises ``FileNotFoundError`` for
    the caller to word.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except IsADirectoryError:
        raise SicShareError(f"{what} {path} is a folder, not a file: give the file itself") from None
    if len(data) > limit:
        raise SicShareError(
            f"{what} {path} is larger than {_size(limit)}: it is not a file sic-share wrote, check the path"
        )
    return data


#: The largest local state file (trust store, verified versions, hub config) read.
STATE_LIMIT = 16 << 20


def not_written_by_us(path: str | os.PathLike[str], what: str, detail: str) -> SicShareError:
    """The one-line error for a state file that parses but does not hold what sic-share writes there."""
    return SicShareError(f"{path} is not {what} sic-share wrote ({detail}): fix or delete it")


def load_json(path: Path, default: Any, *, what: str = "a state file", limit: int = STATE_LIMIT) -> Any:
    """Parse ``path`` (at most ``limit`` bytes), or return ``default`` when it does not exist.

    ``what`` names the file in errors: ``"a trust store"`` gives ``.../trust.json is not
    a trust store sic-share wrote (...): fix or delete it``. Its shape is the caller's to check
    (with :func:`not_written_by_us`).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except FileNotFoundError:
        return default
    except IsADirectoryError:
        raise not_written_by_us(path, what, "a folder") from None
    if len(raw) > limit:
        raise not_written_by_us(path, what, f"larger than {_size(limit)}")
    try:
        return json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        raise not_written_by_us(path, what, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise not_written_by_us(path, what, "nested too deeply") from None


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
