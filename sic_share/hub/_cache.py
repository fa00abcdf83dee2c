"""A local cache of dataset files, keyed by their signed sha256, so nothing is downloaded twice.

Layout: ``<cache>/sha256/<first two hex>/<digest>`` holds the bytes (read-only)
and ``<digest>.json`` beside it says where they came from. A file enters the
cache only after its size and sha256 matched a signed manifest; a hit is hashed
again before use, so a cache damaged on disk costs a download, never a wrong file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sic_share._jsonstore import read_bounded
from sic_share._paths import cache_dir
from sic_share.errors import SicShareError, VerificationError
from sic_share.signing import sha256_file

__all__ = ["BlobCache", "CacheEntry", "Cleared"]

_PARTIAL_AGE = 600.0  # seconds: a partial download unchanged for longer was abandoned


@dataclass(frozen=True)
class CacheEntry:
    """One cached file: its digest, size and the dataset file it was fetched as."""

    digest: str
    size: int
    source: str
    path: Path


class Cleared(NamedTuple):
    """What :meth:`BlobCache.clear` removed.

    Attributes
    ----------
    files : int
        Cached files removed.
    freed : int
        Bytes no longer on disk: cached files no pulled folder links, partial
        downloads, the app's derived data.
    held : int
        Bytes of removed cached files that stay on disk because pulled dataset
        folders hard-link them; freed when those folders are deleted.
    """

    files: int
    freed: int
    held: int


class BlobCache:
    """Content-addressed store of verified dataset files.

    Parameters
    ----------
    root : path-like, optional
        Cache folder; defaults to ``$SIC_SHARE_HOME/cache`` or ``$XDG_CACHE_HOME/sic-share``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir()

    def path(self, digest: str) -> Path:
        """Where the file with this sha256 is kept (whether or not it is there)."""
        return self.root / "sha256" / digest[:2] / digest

    def get(self, digest: str, size: int) -> Path | None:
        """The cached file with this sha256 and size, or None (a damaged copy is dropped)."""
        path = self.path(digest)
        try:
            if path.stat().st_size == size and sha256_file(path) == digest:
                return path
        except FileNotFoundError:
            return None
        self._drop(path)
        return None

    def store(self, chunks: Iterable[bytes], digest: str, size: int, name: str) -> Path:
        """Write ``chunks`` into the cache, hashing as they stream; keep the file only if it matches.

        ``name`` says in messages what the bytes are (e.g. ``slides/x.parquet of lab-a/crc@1``).

        Raises
        ------
        VerificationError
            When the bytes do not have the signed size or sha256 (nothing enters the cache).
        """
        path = self.path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{secrets.token_hex(4)}.partial")
        hasher, seen = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as sink:
                for chunk in chunks:
                    seen += len(chunk)
                    if seen > size:
                        break
                    hasher.update(chunk)
                    sink.write(chunk)
            if seen != size:
                raise VerificationError(
                    f"{name} has {'more than ' if seen > size else ''}{seen} bytes on the hub, the signed manifest "
                    f"says {size}: it was truncated or replaced on the hub, tell its publisher"
                )
            if hasher.hexdigest() != digest:
                raise VerificationError(
                    f"{name} on the hub does not match its signed sha256: it was modified on the hub, "
                    "tell its publisher"
                )
            tmp.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            path.with_name(f"{digest}.json").write_text(json.dumps({"size": size, "source": name}) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def place(self, blob: Path, dest: Path) -> None:
        """Put a cached file at ``dest``: a hard link (no copy) where the file system allows."""
        try:
            os.link(blob, dest)
        except OSError:  # another file system, or links not supported
            shutil.copyfile(blob, dest)

    def entries(self) -> list[CacheEntry]:
        """Every cached file, largest first."""
        found = []
        for path in self.root.glob("sha256/*/*"):
            if path.name.startswith(".") or path.suffix == ".json":
                continue
            try:
                info = json.loads(read_bounded(path.with_name(f"{path.name}.json"), 64 << 10, "cache entry"))
            except (FileNotFoundError, ValueError, RecursionError, SicShareError):
                info = {}
            if not isinstance(info, dict):
                info = {}
            found.append(CacheEntry(path.name, path.stat().st_size, str(info.get("source", "?")), path))
        return sorted(found, key=lambda e: (-e.size, e.digest))

    def clear(self) -> Cleared:
        """Remove every cached file and what was derived from it; says how many bytes that freed.

        Derived data is the app's per-slide folder ``.<sha256>.app/`` (decoded matrix,
        projections): its bytes count, it is not listed as a file of its own.

        Notes
        -----
        A pulled dataset folder hard-links its files to the cache (:meth:`place`), so
        removing a cached file frees its bytes only when no folder links it (link
        count 1); otherwise they stay on disk, counted in ``Cleared.held``, until
        those folders are deleted. Partial downloads (``.<sha256>.*.partial``) are
        removed once unchanged for ten minutes: a younger one is being written.
        """
        files = freed = held = 0
        for entry in self.entries():
            try:
                links = entry.path.stat().st_nlink
            except FileNotFoundError:
                continue
            self._drop(entry.path)
            files += 1
            if links > 1:
                held += entry.size
            else:
                freed += entry.size
        now = time.time()
        for partial in self.root.glob("sha256/*/.*.partial"):  # left by a killed download
            try:
                info = partial.stat()
            except FileNotFoundError:
                continue
            if now - info.st_mtime > _PARTIAL_AGE:
                partial.unlink(missing_ok=True)
                freed += info.st_size
        for derived in self.root.glob("sha256/*/.*.app"):
            if derived.is_dir():
                freed += sum(p.stat().st_size for p in derived.rglob("*") if p.is_file())
                shutil.rmtree(derived, ignore_errors=True)
        return Cleared(files, freed, held)

    @staticmethod
    def _drop(path: Path) -> None:
        path.unlink(missing_ok=True)
        path.with_name(f"{path.name}.json").unlink(missing_ok=True)
