"""Atomic writes: small JSON state files and whole folders (temporary name, then rename)."""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sic_share.errors import SicShareError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["STATE_LIMIT", "load_json", "not_written_by_us", "save_json", "atomic_write_bytes", "staged_folder",
           "read_bounded", "remove_abandoned", "STALE_AFTER", "wait_for_lock"]


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


#: A staged folder whose owner cannot be asked (no lock file beside it, or a file system without
#: locks) is taken as abandoned once it has not changed for this many seconds.
STALE_AFTER = 3600.0

_PARTIAL = ".partial-"
_LOCK = ".lock"
_AT_FDCWD = -100  # Linux
_RENAME_NOREPLACE = 1


@contextmanager
def staged_folder(dest: Path, *, taken: str | None = None) -> Iterator[Path]:
    """Yield a hidden folder beside ``dest``; rename it to ``dest`` when the block succeeds.

    On any exception the folder is deleted, so nothing partial is ever visible
    under ``dest`` (the rename is atomic on one file system). The rename never
    replaces anything: when ``dest`` appeared meanwhile (another pull, or even an
    empty folder), that one is kept and :class:`SicShareError` says ``taken``.

    Notes
    -----
    The folder is ``.<name>.partial-<random>``, held by an exclusive ``flock`` on
    ``.<name>.partial-<random>.lock`` beside it for as long as the block runs. A
    killed process leaves both behind with the lock released, so each new staging
    for the same ``dest`` first removes the partials of ``dest`` whose lock it can
    take (none of another process that is still writing). One without a lock file
    (left by an older sic-share), or on a file system that has no locks, is removed
    only once unchanged for :data:`STALE_AFTER` seconds.
    """
    token = secrets.token_hex(4)
    tmp = dest.with_name(f".{dest.name}{_PARTIAL}{token}")
    lock = tmp.with_name(tmp.name + _LOCK)
    dest.parent.mkdir(parents=True, exist_ok=True)
    held = _hold(lock)
    try:
        remove_abandoned(dest)
        tmp.mkdir()
        yield tmp
        try:
            _rename_no_replace(tmp, dest)
        except FileExistsError:
            raise SicShareError(
                taken or f"{dest} was created by another process meanwhile: remove it or choose another destination"
            ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        lock.unlink(missing_ok=True)
        os.close(held)


def remove_abandoned(dest: Path) -> list[Path]:
    """Remove the partial folders of ``dest`` left by killed processes (see :func:`staged_folder`).

    Returns what was removed. A partial another process is still writing is kept.
    """
    prefix = f".{dest.name}{_PARTIAL}"
    removed = []
    try:
        entries = list(os.scandir(dest.parent))
    except FileNotFoundError:
        return removed
    names = {entry.name for entry in entries}
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        path = Path(entry.path)
        if entry.name.endswith(_LOCK):  # a lock whose folder is gone (killed before its mkdir or after its rmtree)
            if entry.name[: -len(_LOCK)] not in names and entry.is_file(follow_symlinks=False):
                if _lock_free(path) or (_lock_free(path) is None and _unchanged_for(path, STALE_AFTER)):
                    path.unlink(missing_ok=True)
            continue
        if not entry.is_dir(follow_symlinks=False):
            continue
        free = _lock_free(path.with_name(path.name + _LOCK))
        if free or (free is None and _unchanged_for(path, STALE_AFTER)):
            shutil.rmtree(path, ignore_errors=True)
            path.with_name(path.name + _LOCK).unlink(missing_ok=True)
            removed.append(path)
    return removed


_LOCK_POLL_S = 0.02


def wait_for_lock(fd: int, timeout: float, busy: str) -> bool:
    """Take an exclusive ``flock`` on the open descriptor ``fd``, waiting up to ``timeout`` seconds.

    True once it is held (until ``fd`` is closed); False where it cannot be had at all
    (no ``fcntl``, or a file system without locks): the caller goes on unlocked.
    Raises SicShareError(``busy``) when another process still holds it after ``timeout``.
    The caller closes ``fd`` in every case.
    """
    if fcntl is None:
        return False
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise SicShareError(busy) from None
            time.sleep(_LOCK_POLL_S)
        except OSError:
            return False


def _hold(lock: Path) -> int:
    """Create ``lock`` and take an exclusive lock on it (kept until the descriptor is closed)."""
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, f"{os.getpid()}\n".encode())  # for a human looking at it; the lock is what counts
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a file system without locks: others judge this partial by its age
            pass
    return fd


def _lock_free(lock: Path) -> bool | None:
    """False while a live process holds ``lock``; True when it is free; None when that cannot be told
    (no such file, no ``fcntl``, or a file system without locks)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    try:
        if fcntl is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        except OSError:
            return None
        return True
    finally:
        os.close(fd)


def _unchanged_for(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


@functools.cache
def _renameat2() -> Any:
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library before glibc 2.28
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def _rename_no_replace(src: Path, dest: Path) -> None:
    """Rename the folder ``src`` to ``dest``; ``FileExistsError`` when anything is at ``dest``.

    ``os.rename`` of a folder onto an existing *empty* folder succeeds silently, so
    a plain rename could replace what another process just made. Linux's
    ``renameat2(RENAME_NOREPLACE)`` refuses atomically; elsewhere (or on a file
    system without it) ``dest`` is claimed by an exclusive ``mkdir`` first and
    ``src`` renamed onto that empty folder, which this process owns.
    """
    call = _renameat2() if sys.platform.startswith("linux") else None
    if call is not None:
        if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dest), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(dest))
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), str(src), None, str(dest))
    if os.name != "posix":  # Windows: a rename never replaces a folder
        os.rename(src, dest)
        return
    os.mkdir(dest)  # FileExistsError when anything is there
    try:
        os.rename(src, dest)
    except BaseException:
        os.rmdir(dest)
        raise
