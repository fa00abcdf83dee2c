"""A read-only fsspec filesystem that hands DuckDB only bytes that match a signed manifest.

``query`` registers one :class:`VerifiedFileSystem` per connection (protocol
``sicverified``) and points ``read_parquet`` at it, for local and S3 hubs alike.
It knows exactly the slide files of the versions in the connection's catalog, at
``sicverified:///<publisher>/<name>/<version>/slides/<slide_id>.parquet``; any
other path does not exist. Each file has its signed size (the hub is never asked).

Hub layout 1.1 (manifest format 1.1): a read is widened to whole blocks of the
file's signed block size, every block is hashed and compared with the file's
``.blocks`` sidecar, and the sidecar, fetched once per file, with the manifest's
signed ``blocks.root`` (see :mod:`sic_share._layout`). A column-pruned query thus
moves the footer and the chunks of the columns it uses, rounded up to blocks, plus
32 bytes per block of sidecar. Manifests without block digests (format 1.0), or a
1.1 version whose sidecars are not on the hub, are fetched whole into the
:class:`~sic_share.hub.BlobCache` (checked against the signed sha256) on their first
read and then read from there.

Every failed check raises :class:`~sic_share.errors.VerificationError` naming the
file and the version; the first one is kept in :attr:`VerifiedFileSystem.failure`
because DuckDB wraps what a filesystem raises in its own message.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import fsspec
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from sic_share._fsutil import join
from sic_share._layout import BLOCKS_SUFFIX, DIGEST_BYTES
from sic_share.errors import HubError, SicShareError, VerificationError
from sic_share.hub._cache import BlobCache

__all__ = ["PROTOCOL", "SignedFile", "VerifiedFile", "VerifiedFileSystem", "version_files"]

PROTOCOL = "sicverified"
_STREAM_BLOCK = 32 << 20  # whole-file fetches: one ranged GET per 32 MiB, as pull does
_CACHE_BYTES = 32 << 20  # verified blocks kept for re-reads (the footer is read twice per query)
_TAIL = 16 << 10  # DuckDB 2.0 reads a Parquet file's last 16 KiB first: fetched with the sidecars
_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass
class SignedFile:
    """One signed slide file: where it may lie on the hub and what it must hash to."""

    name: str  # slides/<slide_id>.parquet, as the manifest lists it
    ref: str  # publisher/name@version
    size: int
    sha256: str
    blocks: tuple[int, str] | None  # (block size, root hex) of format 1.1
    paths: tuple[str, ...]  # hub paths to try, layout 1.1 first
    # Filled on first use: the verified sidecar (block mode) or the verified local copy (whole mode).
    digests: bytes | None = field(default=None, repr=False)
    sidecar: bytes | BaseException | None = field(default=None, repr=False)  # as fetched, not yet checked
    key: str = ""  # its path in the verified filesystem, set by add()
    tail: tuple[int, bytes] | None = field(default=None, repr=False)  # the footer's blocks, fetched beside it
    local: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def what(self) -> str:
        return f"{self.name} of {self.ref}"

    def mismatch(self, part: str = "") -> VerificationError:
        return VerificationError(
            f"{self.name}{part} of {self.ref} does not match its signed digests on the hub: "
            "it was modified after publishing, tell its publisher"
        )

    def missing(self) -> VerificationError:
        return VerificationError(
            f"{self.what} is missing on the hub: the publish is incomplete or the file was removed, tell its publisher"
        )


class VerifiedFileSystem(AbstractFileSystem):
    """fsspec filesystem over a hub that serves only verified bytes of known files, and writes nothing.

    Parameters
    ----------
    hub_fs : fsspec.AbstractFileSystem
        The hub's filesystem (local or s3fs); only ``cat_file`` with a range is used.
    url : str
        The hub's URL, for messages.
    cache : BlobCache, optional
        Where whole-file fallbacks are kept; defaults to the user's cache.

    Notes
    -----
    Thread-safe: DuckDB reads from several threads. Blocks are fetched outside any
    lock; the cache of verified blocks (at most 32 MiB, least recently used out)
    and each file's first-use set-up are locked.
    """

    protocol = PROTOCOL
    root_marker = "/"
    cachable = False  # one instance per connection, never shared through fsspec's instance cache

    def __init__(self, hub_fs: fsspec.AbstractFileSystem, url: str, *, cache: BlobCache | None = None) -> None:
        super().__init__()
        self.hub_fs, self.url = hub_fs, url
        self.cache = cache or BlobCache()
        self.files: dict[str, SignedFile] = {}
        self.failure: BaseException | None = None
        self.bytes_fetched = 0
        self._blocks: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._by_ref: dict[str, list[SignedFile]] = {}

    # --- the catalog ---------------------------------------------------------------------------

    def add(self, path: str, entry: SignedFile) -> str:
        """Serve ``entry`` at ``path`` (``publisher/name/version/slides/x.parquet``); returns its URL."""
        key = self._strip_protocol(path)
        self.files[key] = entry
        entry.key = key
        self._by_ref.setdefault(entry.ref, []).append(entry)
        return f"{PROTOCOL}://{key}"

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = str(path)
        if text.startswith(f"{PROTOCOL}://"):
            text = text[len(PROTOCOL) + 3:]
        return "/" + text.strip("/")

    def _entry(self, path: str) -> SignedFile:
        try:
            return self.files[self._strip_protocol(path)]
        except KeyError:
            raise FileNotFoundError(path) from None

    # --- what DuckDB asks ----------------------------------------------------------------------

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        key = self._strip_protocol(path)
        if key in self.files:
            return {"name": key, "size": self.files[key].size, "type": "file"}
        prefix = key.rstrip("/") + "/"
        if key == "/" or any(name.startswith(prefix) for name in self.files):
            return {"name": key, "size": 0, "type": "directory"}
        raise FileNotFoundError(path)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        key = self._strip_protocol(path)
        if key in self.files:
            found = [self.info(key)]
        else:
            prefix = "/" if key == "/" else key + "/"
            children = {prefix + name[len(prefix):].split("/", 1)[0] for name in self.files if name.startswith(prefix)}
            if not children:
                raise FileNotFoundError(path)
            found = [self.info(child) for child in sorted(children)]
        return found if detail else [entry["name"] for entry in found]

    def modified(self, path: str) -> datetime:
        self._entry(path)
        return _EPOCH  # signed files never change: a constant is the truth

    def created(self, path: str) -> datetime:
        return self.modified(path)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> VerifiedFile:
        if mode != "rb":
            raise PermissionError(f"{path}: the query filesystem is read-only; write results with --out FILE.parquet")
        entry = self._entry(path)
        return VerifiedFile(self, self._strip_protocol(path), entry)

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError("the query filesystem is read-only")

    rm_file = rm = mv = cp_file = mkdir = makedirs = rmdir = touch = pipe_file = put_file = _refuse

    # --- verified reads ------------------------------------------------------------------------

    def read_range(self, key: str, entry: SignedFile, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the file, every one of them checked (raises VerificationError)."""
        end = min(end, entry.size)
        if start >= end:
            return b""
        try:
            self._prepare(entry)
            if entry.local is not None:
                with open(entry.local, "rb") as handle:
                    handle.seek(start)
                    return handle.read(end - start)
            return self._read_blocks(key, entry, start, end)
        except SicShareError as exc:
            with self._lock:
                self.failure = self.failure or exc
            raise

    def _prepare(self, entry: SignedFile) -> None:
        """On first use: fetch and check the sidecar, or fall back to the whole file in the cache."""
        if entry.digests is not None or entry.local is not None:
            return
        if entry.blocks is not None and entry.sidecar is None:
            self._fetch_sidecars(entry)
        with entry.lock:
            if entry.digests is not None or entry.local is not None:
                return
            if entry.blocks is not None:
                sidecar = entry.sidecar
                if isinstance(sidecar, PermissionError):
                    raise HubError(f"the hub {self.url} refused reading {entry.what}: your credentials may not read it")
                if isinstance(sidecar, BaseException) and not isinstance(sidecar, FileNotFoundError):
                    raise sidecar
                if isinstance(sidecar, bytes):
                    bsize, root = entry.blocks
                    want = -(-entry.size // bsize) * DIGEST_BYTES
                    if len(sidecar) != want or hashlib.sha256(sidecar).hexdigest() != root:
                        raise entry.mismatch(BLOCKS_SUFFIX)
                    entry.digests = sidecar
                    self._keep_tail(entry)
                    return
            # No block digests (format 1.0), or a 1.1 manifest published in layout 1.0 without sidecars.
            entry.local = self._whole(entry)

    def _fetch_sidecars(self, entry: SignedFile) -> None:
        """The sidecars of every file of ``entry``'s version not fetched yet, in one concurrent round.

        A query over ``patches(ref)`` opens every file of the version, so their sidecars are
        fetched together (s3fs sends the GETs at once) instead of one round trip per file.
        """
        with self._prepare_lock:
            if entry.sidecar is not None:
                return
            todo = [e for e in self._by_ref.get(entry.ref, [entry]) if e.blocks is not None and e.sidecar is None]
            if entry not in todo:
                todo.append(entry)
            wants = [-(-e.size // e.blocks[0]) * DIGEST_BYTES for e in todo]  # type: ignore[index]
            tails = [_tail_start(e) for e in todo]
            results = self.hub_fs.cat_ranges(
                [e.paths[0] + BLOCKS_SUFFIX for e in todo] + [e.paths[0] for e in todo],
                [0] * len(todo) + tails, [want + 1 for want in wants] + [e.size for e in todo], on_error="return")
            for e, got, start, tail in zip(todo, results, tails, results[len(todo):]):
                for part in (got, tail):
                    if isinstance(part, bytes):
                        self.bytes_fetched += len(part)
                e.sidecar = got
                e.tail = (start, tail) if isinstance(tail, bytes) else None

    def _keep_tail(self, entry: SignedFile) -> None:
        """Check the prefetched footer blocks and keep those that match (a mismatch is found on read)."""
        if entry.tail is None:
            return
        (start, data), entry.tail = entry.tail, None
        bsize = entry.blocks[0]  # type: ignore[index]
        if len(data) != entry.size - start:
            return
        key = entry.key
        good: dict[int, bytes] = {}
        for offset in range(0, len(data), bsize):
            k = (start + offset) // bsize
            block = data[offset:offset + bsize]
            if hashlib.sha256(block).digest() != entry.digests[k * DIGEST_BYTES:(k + 1) * DIGEST_BYTES]:
                return
            good[k] = block
        self._keep(key, range(start // bsize, start // bsize + len(good)), good)

    def _whole(self, entry: SignedFile) -> Path:
        blob = self.cache.get(entry.sha256, entry.size)
        if blob is not None:
            return blob
        for path in entry.paths:
            try:
                return self.cache.store(self._ranges(entry, path), entry.sha256, entry.size, entry.what)
            except FileNotFoundError:
                continue
        raise entry.missing()

    def _ranges(self, entry: SignedFile, path: str) -> Iterator[bytes]:
        for start in range(0, entry.size, _STREAM_BLOCK):
            yield self._cat(entry, path, start, min(entry.size, start + _STREAM_BLOCK))

    def _cat(self, entry: SignedFile, path: str, start: int, end: int) -> bytes:
        try:
            data = self.hub_fs.cat_file(path, start=start, end=end)
        except PermissionError:
            raise HubError(
                f"the hub {self.url} refused reading {entry.what}: your credentials may not read it"
            ) from None
        self.bytes_fetched += len(data)
        return data

    def _read_blocks(self, key: str, entry: SignedFile, start: int, end: int) -> bytes:
        bsize = entry.blocks[0]  # type: ignore[index]
        first, last = start // bsize, (end - 1) // bsize
        got: dict[int, bytes] = {}
        with self._lock:
            for i in range(first, last + 1):
                block = self._blocks.get((key, i))
                if block is not None:
                    self._blocks.move_to_end((key, i))
                    got[i] = block
        i = first
        while i <= last:  # one ranged read per run of blocks not yet verified
            if i in got:
                i += 1
                continue
            j = i
            while j + 1 <= last and j + 1 not in got:
                j += 1
            lo, hi = i * bsize, min(entry.size, (j + 1) * bsize)
            try:
                data = self._cat(entry, entry.paths[0], lo, hi)
            except FileNotFoundError:
                raise entry.missing() from None
            if len(data) != hi - lo:
                raise entry.mismatch()
            view = memoryview(data)
            for k in range(i, j + 1):
                block = bytes(view[(k - i) * bsize:(k - i + 1) * bsize])
                if hashlib.sha256(block).digest() != entry.digests[k * DIGEST_BYTES:(k + 1) * DIGEST_BYTES]:
                    raise entry.mismatch()
                got[k] = block
            self._keep(key, range(i, j + 1), got)
            i = j + 1
        joined = b"".join(got[k] for k in range(first, last + 1))
        offset = first * bsize
        return joined[start - offset:end - offset]

    def _keep(self, key: str, indices: range, got: dict[int, bytes]) -> None:
        with self._lock:
            for k in indices:
                if (key, k) in self._blocks:
                    continue
                self._blocks[(key, k)] = got[k]
                self._cached += len(got[k])
            while self._cached > _CACHE_BYTES and self._blocks:
                _, dropped = self._blocks.popitem(last=False)
                self._cached -= len(dropped)


def _tail_start(entry: SignedFile) -> int:
    """The first block of the last ``_TAIL`` bytes: what DuckDB reads first (the Parquet footer)."""
    bsize = entry.blocks[0]  # type: ignore[index]
    return max(0, entry.size - _TAIL) // bsize * bsize


class VerifiedFile(AbstractBufferedFile):
    """A read-only file handle whose every read goes through :meth:`VerifiedFileSystem.read_range`."""

    def __init__(self, fs: VerifiedFileSystem, key: str, entry: SignedFile) -> None:
        self._key, self._file = key, entry
        super().__init__(fs, key, mode="rb", block_size=1, cache_type="none", size=entry.size)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.read_range(self._key, self._file, start, end)


def version_files(manifest: Any, version_folder: str) -> list[tuple[str, SignedFile]]:
    """``(path in the verified filesystem, SignedFile)`` for each slide file of a manifest.

    Layout 1.1 data lies under ``<version>/<sha256 of manifest.json>/``; 1.0 data
    directly under ``<version>/``. Both are tried (1.1 first) for whole-file fetches,
    and every byte is checked against the signed digests either way.
    """
    data = join(version_folder, manifest.digest) if manifest.digest else version_folder
    out = []
    for fname in sorted(manifest.files):
        if not (fname.startswith("slides/") and fname.endswith(".parquet")):
            continue
        size, sha256 = manifest.files[fname]
        blocks = manifest.blocks.get(fname) if manifest.minor >= 1 else None
        paths = (join(data, fname), join(version_folder, fname)) if blocks else (
            join(version_folder, fname), join(data, fname))
        entry = SignedFile(fname, manifest.ref, size, sha256, blocks, paths)
        out.append((f"{manifest.publisher}/{manifest.name}/{manifest.version}/{fname}", entry))
    return out
