"""Publish, pull and list datasets on a hub: any fsspec URL (a folder, file://, s3://).

Layout on a hub: ``<publisher>/<name>/<version>/{manifest.json, manifest.dsse.json,
slides/<slide_id>.parquet}``. A version exists once its envelope exists: publish
writes data files, then manifest.json, then the envelope with an exclusive
create, so a version is visible only when complete and is never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import fsspec

from sic_share._fsutil import is_local, join, resolve
from sic_share._jsonstore import staged_folder
from sic_share._layout import BLOCKS_SUFFIX, data_folder, manifest_digest
from sic_share.dataset import check_name, near_slides
from sic_share.errors import AlreadyPublishedError, HubError, SicShareError, VerificationError
from sic_share.hub._cache import BlobCache
from sic_share.hub._config import resolve_hub
from sic_share.signing._dsse import MAX_ENVELOPE_BYTES
from sic_share.signing import (
    ENVELOPE,
    MANIFEST,
    Manifest,
    TrustStore,
    VersionRecord,
    check_unverified,
    open_envelope,
    parse_manifest,
    verify_signature,
)

__all__ = ["DatasetRef", "HubEntry", "collect_garbage", "fetch_slides", "open_manifest", "iter_published", "parse_ref", "publish", "pull", "list_datasets"]

_REF = re.compile(r"^(?P<publisher>[^/@]+)/(?P<name>[^/@]+)(?:@(?P<version>[0-9]+))?$")

Progress = Callable[[str, int, int], None]

# Downloads stream through the hash in 32 MiB ranged reads (one GET each on S3, no HEAD: the
# signed size says where to stop, and the digest covers exactly the signed bytes). s3fs's get_file
# starts a whole-object GET and drops it for parallel parts whenever a file exceeds its block
# size, which on loopback doubled the bytes moved for one slide (benchmarks/hub.py); its open()
# sends a HEAD per file.
_STREAM_BLOCK = 32 << 20
_PARALLEL_FILES = 4  # at most 4 x 32 MiB in flight; 8 MiB reads made pull 0.76 x a plain get on moto


@dataclass(frozen=True)
class DatasetRef:
    """``publisher/name[@version]``; version None means the newest."""

    publisher: str
    name: str
    version: int | None = None

    def __str__(self) -> str:
        tail = f"@{self.version}" if self.version is not None else ""
        return f"{self.publisher}/{self.name}{tail}"


def parse_ref(text: str) -> DatasetRef:
    """Parse ``publisher/name[@version]``, refusing names that are not safe path segments."""
    match = _REF.match(text.strip())
    if not match:
        raise HubError(f"{text!r} is not a dataset reference: write PUBLISHER/NAME or PUBLISHER/NAME@VERSION")
    version = match["version"]
    return DatasetRef(
        check_name(match["publisher"], "publisher"),
        check_name(match["name"], "dataset name"),
        int(version) if version is not None else None,
    )


def _open_hub(hub: str | None, *, reading: bool = True) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """``--hub`` (a configured name, a URL, a folder or None) to ``(filesystem, base path, URL)``.

    A local hub folder that does not exist is an error when reading from a hub that
    was named (``--hub`` or ``$SIC_SHARE_HUB``): a mistyped path must not read as
    "no such dataset". The default local hub is simply empty until the first publish.
    """
    url, options = resolve_hub(hub)
    try:
        fs, base = resolve(url, **options)
    except (ValueError, ImportError) as exc:
        raise HubError(f"hub {url!r} is not a usable URL ({exc}): give a folder or an s3:// URL") from None
    named = hub is not None or bool(os.environ.get("SIC_SHARE_HUB"))
    if reading and named and "file" in fs.protocol and not fs.isdir(base):
        what = "is a file, not a folder" if fs.exists(base) else "does not exist"
        raise HubError(f"hub folder {url} {what}: check --hub (or $SIC_SHARE_HUB); 'sic-share publish' creates it")
    return fs, base, url


# Error codes a server sends when the credentials themselves are wrong (not merely not allowed).
_BAD_CREDENTIALS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken", "InvalidClientTokenId"}


def _server_code(exc: BaseException) -> str | None:
    """The error code of the server response behind ``exc`` (s3fs keeps the botocore error as the cause)."""
    cause = exc.__cause__ if getattr(exc, "response", None) is None else exc
    response = getattr(cause, "response", None)
    if not isinstance(response, dict):
        return None
    return str(response.get("Error", {}).get("Code") or "AccessDenied")


@contextmanager
def _refusals(fs: fsspec.AbstractFileSystem, base: str, url: str, doing: str, needs: str) -> Iterator[None]:
    """Turn a server's 403 into one HubError line naming the reason (no botocore traceback).

    A HEAD answered 403 carries no error code, so a listing of the hub tells a
    wrong secret (SignatureDoesNotMatch) from a missing permission (AccessDenied).
    """
    try:
        yield
    except PermissionError as exc:
        code = _server_code(exc)
        if code is None:  # a local permission problem: not the hub's answer
            raise
        if code.isdigit() or code == "Forbidden":
            try:
                fs.invalidate_cache(base)
                fs.ls(base, detail=False)
                code = "AccessDenied"
            except PermissionError as probe:
                code = _server_code(probe) or "AccessDenied"
            except Exception:  # noqa: BLE001 - the probe only refines the message
                code = "AccessDenied"
        if code.isdigit() or code == "Forbidden":
            code = "AccessDenied"
        hint = ("check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" if code in _BAD_CREDENTIALS
                else f"your credentials may not {needs}")
        raise HubError(f"the hub {url} refused {doing} ({code}): {hint}") from None


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "s3" in protocols


def _create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Create ``path`` holding ``data`` only if it does not exist (FileExistsError otherwise).

    On S3 this is one ``PutObject`` with ``If-None-Match: *``, never a multipart
    upload: Ceph RGW (16.2) ignores the condition on ``CompleteMultipartUpload``.
    Any 412 means the key exists: RGW's carries no ``<Condition>`` element, which
    s3fs needs to raise ``FileExistsError`` (it raises ``OSError(EINVAL)``).
    """
    if is_local(fs):
        # Write under a temporary name, then hard-link: the link fails if the
        # target exists, and readers never see a half-written file.
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        try:
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
    elif _is_s3(fs):
        bucket, key, _ = fs.split_path(path)
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except OSError as exc:
            if _server_code(exc) in ("PreconditionFailed", "412"):
                raise FileExistsError(path) from None
            raise
        finally:
            fs.invalidate_cache(path)
    else:
        fs.pipe_file(path, data, mode="create")


def _refuse_versioned_bucket(fs: fsspec.AbstractFileSystem, base: str) -> None:
    """Refuse an S3 hub whose bucket has versioning enabled: the envelope's create may not be exclusive there.

    Ceph RGW (16.2) ignores ``If-None-Match`` on a bucket with versioning
    enabled and overwrites the object; with versioning suspended it honours it
    (both measured). The client cannot tell which server it talks to, so an
    enabled bucket is refused everywhere. Where the credentials may not read the
    versioning status (``s3:GetBucketVersioning``) nothing can be told and the
    publish goes on; hub/rgw/make_hub.py grants it to every hub user.
    """
    if not _is_s3(fs):
        return
    bucket = fs.split_path(base)[0]
    try:
        status = fs.call_s3("get_bucket_versioning", Bucket=bucket).get("Status")
    except OSError as exc:
        if isinstance(exc, PermissionError) or _server_code(exc) in ("NotImplemented", "501"):
            return  # not allowed to ask, or a server without versioning: nothing to tell
        raise
    if status == "Enabled":
        raise HubError(
            f"the hub bucket {bucket} has versioning enabled, where Ceph RGW ignores If-None-Match and a published "
            f"version could be overwritten: ask the hub's operator to suspend versioning on {bucket}, "
            "or publish to a bucket without it"
        )


class _LocalHubWriter:
    """Writes into a local hub folder without following a symbolic link below the hub's root.

    Every folder from the hub root down is opened with ``O_NOFOLLOW`` relative to its
    parent (a planted link is refused, never written through); files are created under
    a unique hidden temporary name with ``O_EXCL | O_NOFOLLOW`` and renamed into place
    (a rename replaces a link planted at the final name instead of writing through it),
    or, for the envelope, hard-linked (which fails when the name exists).
    """

    def __init__(self, root: str, url: str) -> None:
        self.root, self.url = root, url

    @contextmanager
    def folder(self, parts: Sequence[str]) -> Iterator[int]:
        """A descriptor of ``root/parts...``, each created when missing and none a symbolic link."""
        os.makedirs(self.root, exist_ok=True)  # the root itself is the user's choice, link or not
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i, part in enumerate(parts):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        where = "/".join(parts[: i + 1])
                        raise HubError(
                            f"{where} in the hub {self.url} is a symbolic link or a file, not a folder: "
                            "someone planted it there, remove it and publish again"
                        ) from None
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def write(fd: int, name: str, source: Path | bytes, *, exclusive: bool = False) -> None:
        """Create ``name`` in folder ``fd`` from a file or bytes; ``exclusive``: FileExistsError if it exists."""
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as sink:
                if isinstance(source, bytes):
                    sink.write(source)
                else:
                    with open(source, "rb") as src:
                        _copy(src, sink)
            if exclusive:
                os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            else:
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)


def _copy(src, sink) -> None:
    """Copy a file's bytes in the kernel (``sendfile``) where it can, else through a buffer."""
    size = os.fstat(src.fileno()).st_size
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(sink.fileno(), src.fileno(), offset, size - offset)
            if not sent:
                break
            offset += sent
    except OSError:
        pass
    if offset < size:
        src.seek(offset)
        shutil.copyfileobj(src, sink, 1 << 20)


def publish(dataset_dir: str | os.PathLike[str], hub: str | None = None, *, progress: Progress | None = None,
            trust: TrustStore | None = None) -> str:
    """Upload a signed dataset folder to a hub; returns the version's hub URL.

    Raises
    ------
    AlreadyPublishedError
        When that version's envelope already exists on the hub with other content.
    VerificationError
        When the folder would not verify (see :func:`~sic_share.signing.check_unverified`):
        nothing is uploaded and the version number stays free.

    Notes
    -----
    The folder is checked first: signature (with the holder's own or a trusted
    key), expiry, every file's size and digests. Data goes under
    ``<version>/<sha256 of manifest.json>/`` (hub layout 1.1, :mod:`sic_share._layout`):
    two publishers racing for one version upload into different folders, and only
    the envelope, created exclusively (``If-None-Match: *`` on S3, a hard link on a
    local hub), decides which one is the version. The loser removes its own data
    folder and is told the version exists. Re-running an interrupted publish writes
    the same bytes under the same names and completes it. On a local hub no
    symbolic link below the hub's root is ever followed.
    """
    root = Path(dataset_dir)
    ready = check_unverified(root, trust=trust)
    manifest = ready.manifest
    fs, base, url = _open_hub(hub, reading=False)
    parts = [manifest.publisher, manifest.name, str(manifest.version)]
    dest = join(base, *parts)
    data = data_folder(dest, ready.body)
    envelope_path = join(dest, ENVELOPE)
    done = f"{url.rstrip('/')}/{manifest.publisher}/{manifest.name}/{manifest.version}"
    already = AlreadyPublishedError(
        f"version {manifest.version} of {manifest.publisher}/{manifest.name} is already published on {url}: "
        f"versions are immutable, sign a new one with 'sic-share sign --version {manifest.version + 1}'"
    )
    uploads: list[tuple[str, Path | bytes]] = [(MANIFEST, ready.body)]
    for fname in sorted(manifest.files):
        uploads.append((fname, root / fname))
        if fname in ready.sidecars:
            uploads.append((fname + BLOCKS_SUFFIX, ready.sidecars[fname]))
    with _refusals(fs, base, url, "the upload", f"write under {manifest.publisher}/"):
        if _read_if_exists(fs, envelope_path) is not None:
            raise already
        _refuse_versioned_bucket(fs, base)
        writer = _LocalHubWriter(base, url) if is_local(fs) else None
        total, sent = len(manifest.files), 0

        def upload(item: tuple[str, Path | bytes]) -> None:
            name, source = item
            if writer is not None:
                with writer.folder([*parts, manifest_digest(ready.body), *name.split("/")[:-1]]) as fd:
                    writer.write(fd, name.rsplit("/", 1)[-1], source)
            elif isinstance(source, bytes):
                fs.pipe_file(join(data, name), source)
            else:
                fs.put_file(str(source), join(data, name))

        try:
            # Up to _PARALLEL_FILES objects at once (on S3 each small sidecar is a round trip of its own).
            with ThreadPoolExecutor(max_workers=1 if writer is not None else _PARALLEL_FILES) as pool:
                futures = {pool.submit(upload, item): item for item in uploads}
                try:
                    for future in as_completed(futures):
                        future.result()
                        name, source = futures[future]
                        if isinstance(source, Path):
                            sent += 1
                            if progress:
                                progress(name, sent, total)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
            if writer is not None:
                with writer.folder(parts) as fd:
                    writer.write(fd, ENVELOPE, ready.envelope, exclusive=True)
            else:
                _create_exclusive(fs, envelope_path, ready.envelope)
        except FileExistsError:
            if _read_if_exists(fs, envelope_path) != ready.envelope:
                _remove_quietly(fs, data)  # the winner's data lies elsewhere: only our own folder goes
            raise already from None
    return done


def _read_if_exists(fs: fsspec.AbstractFileSystem, path: str) -> bytes | None:
    """A hub object's bytes (at most the envelope limit), or None when it does not exist."""
    try:
        fs.invalidate_cache(path)
        return fs.cat_file(path, start=0, end=MAX_ENVELOPE_BYTES + 1)
    except FileNotFoundError:
        return None


def _remove_quietly(fs: fsspec.AbstractFileSystem, folder: str) -> None:
    """Best-effort removal of an uncommitted data folder (``hub gc`` removes what this leaves).

    What stays is never read: readers find a version's data by the sha256 of the
    manifest its committed envelope carries, never by listing.
    """
    with contextlib.suppress(Exception):
        if is_local(fs):
            if not os.path.islink(folder):
                shutil.rmtree(folder, ignore_errors=True)
        else:  # hub policies usually deny publishers s3:DeleteObject: the folder then waits for 'hub gc'
            fs.invalidate_cache(folder)
            fs.rm(folder, recursive=True)


_HEX64 = re.compile(r"[0-9a-f]{64}")


def collect_garbage(hub: str | None = None, *, older_than: float = 24 * 3600, publisher: str | None = None,
                    dry_run: bool = False) -> list[str]:
    """Remove what no published version uses: losers' and interrupted publishes' data, temporary files.

    Parameters
    ----------
    older_than : float, default 24 h
        Only objects last written more than this many seconds ago go, so a publish
        in progress keeps its files.
    publisher : str, optional
        Only under this publisher's prefix (what a publisher's credentials may delete).
    dry_run : bool, default False
        List, remove nothing.

    Returns
    -------
    list of str
        The hub paths removed (or that would be).

    Notes
    -----
    Under each ``<publisher>/<name>/<version>/`` a data folder (a 64-hex name) is kept
    when it is the sha256 of the manifest in that version's envelope, and goes
    otherwise; without an envelope everything there goes (an interrupted or lost
    publish, layout 1.0 included). Hidden ``.*.tmp`` files left by a killed publish
    go anywhere. No envelope is ever removed, and no symbolic link is followed on a
    local hub (a link is removed as a link). On S3 the credentials need
    ``s3:DeleteObject``, which hub policies give the operator, not publishers.
    """
    import time

    fs, base, url = _open_hub(hub, reading=False)
    top = join(base, check_name(publisher, "publisher")) if publisher else base
    cutoff = time.time() - older_than
    with _refusals(fs, base, url, "the listing", "list the hub"):
        objects = _all_objects(fs, top)
    versions: dict[str, list[tuple[str, float]]] = {}
    doomed = []
    for path, mtime in objects:
        rel = path[len(base):].strip("/").split("/")
        if rel[-1].startswith(".") and rel[-1].endswith(".tmp"):
            if mtime < cutoff:
                doomed.append(path)
            continue
        if len(rel) >= 4 and rel[2].isdigit():
            versions.setdefault("/".join(rel[:3]), []).append((path, mtime))
    for version, found in versions.items():
        folder = join(base, version)
        keep: str | None = None
        if any(p.endswith("/" + ENVELOPE) and p.rsplit("/", 1)[0] == folder for p, _ in found):
            try:
                keep = manifest_digest(open_envelope(_read_if_exists(fs, join(folder, ENVELOPE)) or b"", folder)[1])
            except VerificationError:
                continue  # an envelope we cannot read: leave the version alone
        groups: dict[str, list[tuple[str, float]]] = {}
        for path, mtime in found:
            part = path[len(folder):].strip("/").split("/")[0]
            if part == ENVELOPE:
                continue
            if keep is not None and (part == keep or not _HEX64.fullmatch(part)):
                continue  # the committed data, or layout-1.0 files of a committed version
            groups.setdefault(part, []).append((path, mtime))
        for group in groups.values():
            if max(m for _, m in group) < cutoff:
                doomed.extend(p for p, _ in group)
    if not dry_run:
        with _refusals(fs, base, url, "the removal", "delete under the hub (s3:DeleteObject)"):
            for path in doomed:
                if is_local(fs):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                else:
                    fs.rm_file(path)
        if is_local(fs):
            _prune_empty(top, cutoff)
    return sorted(doomed)


def _all_objects(fs: fsspec.AbstractFileSystem, top: str) -> list[tuple[str, float]]:
    """Every file (object) under ``top`` with its modification time; local links are listed, not followed."""
    if is_local(fs):
        found = []
        for folder, dirs, names in os.walk(top, followlinks=False):
            links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
            for name in [*names, *links]:
                path = os.path.join(folder, name)
                with contextlib.suppress(FileNotFoundError):
                    found.append((path, os.lstat(path).st_mtime))
        return found
    found = []
    for path, info in fs.find(top, detail=True).items():
        when = info.get("LastModified") or info.get("mtime")
        found.append((path, when.timestamp() if hasattr(when, "timestamp") else float(when or 0)))
    return found


def _prune_empty(top: str, cutoff: float) -> None:
    """Remove empty folders below ``top`` not changed since ``cutoff`` (a publish may be creating new ones)."""
    for folder, _dirs, _names in sorted(os.walk(top, followlinks=False), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):
            if folder != top and os.lstat(folder).st_mtime < cutoff:
                os.rmdir(folder)


def _versions(fs: fsspec.AbstractFileSystem, base: str, ref: DatasetRef) -> list[int]:
    """Published (envelope present) versions of a dataset, ascending."""
    pattern = join(base, ref.publisher, ref.name, "*", ENVELOPE)
    found = []
    for path in fs.glob(pattern):
        segment = path.rstrip("/").split("/")[-2]
        if segment.isdigit():
            found.append(int(segment))
    return sorted(found)


def _pick_version(fs: fsspec.AbstractFileSystem, base: str, url: str, ref: DatasetRef, doing: str) -> int:
    """The version ``ref`` asks for, or the newest published; one line when there is none."""
    with _refusals(fs, base, url, doing, f"read {ref.publisher}/{ref.name}"):
        versions = _versions(fs, base, ref)
    if not versions:
        raise HubError(f"no dataset {ref.publisher}/{ref.name} on {url}: see 'sic-share ls --hub {url}'")
    version = ref.version if ref.version is not None else versions[-1]
    if version not in versions:
        raise HubError(f"{ref.publisher}/{ref.name} has no version {version} on {url} (published: {versions})")
    return version


def _open_version(
    ref: DatasetRef, hub: str | None, *, trust: TrustStore, record: VersionRecord, allow_rollback: bool,
    remember: bool = True,
) -> tuple[Manifest, bytes, bytes, _Remote]:
    """Find the asked (or newest) version and verify its envelope before anything else is read.

    Returns the manifest, the envelope and manifest bytes, and where its files are.
    Every reader of a hub version comes through here, so each one checks and
    (``remember``) records the highest version seen: a hub that later hides the
    newest version is refused by ``sic``, ``app`` or ``pull --slides`` alike.
    """
    fs, base, url = _open_hub(hub)
    version = _pick_version(fs, base, url, ref, "the download")
    folder = join(base, ref.publisher, ref.name, str(version))
    with _refusals(fs, base, url, "the download", f"read {ref.publisher}/{ref.name}"):
        envelope = _read_if_exists(fs, join(folder, ENVELOPE))
    if envelope is None:
        raise HubError(f"{ref.publisher}/{ref.name} has no version {version} on {url}: see 'sic-share ls --hub {url}'")
    manifest, body = verify_signature(
        envelope, f"{ref.publisher}/{ref.name}@{version}", trust=trust, record=record, allow_rollback=allow_rollback
    )
    if (manifest.publisher, manifest.name, manifest.version) != (ref.publisher, ref.name, version):
        raise VerificationError(
            f"the envelope at {ref.publisher}/{ref.name}@{version} is signed for {manifest.ref}: "
            "the hub holds a misplaced or replayed manifest, do not use it"
        )
    if remember:
        record.record(manifest.publisher, manifest.name, manifest.version)
    return manifest, envelope, body, _Remote(fs, base, url, folder, data_folder(folder, body))


@dataclass(frozen=True)
class _Remote:
    fs: fsspec.AbstractFileSystem
    base: str
    url: str
    folder: str  # the version folder: the envelope, and the data of hub layout 1.0
    data: str  # the data folder of hub layout 1.1 (``<version>/<sha256 of manifest.json>``)

    def paths(self, fname: str) -> tuple[str, str]:
        """Where a manifest file lies: layout 1.1 first, then 1.0 (checked by digest either way)."""
        return join(self.data, fname), join(self.folder, fname)

    def ranges(self, path: str, size: int) -> Iterator[bytes]:
        """The first ``size`` bytes of ``path`` in ranged reads of ``_STREAM_BLOCK`` (one GET each on S3)."""
        for start in range(0, size, _STREAM_BLOCK):
            yield self.fs.cat_file(path, start=start, end=min(size, start + _STREAM_BLOCK))

    def refusals(self, ref: DatasetRef) -> contextlib.AbstractContextManager[None]:
        return _refusals(self.fs, self.base, self.url, "the download", f"read {ref.publisher}/{ref.name}")


def _select(manifest: Manifest, slides: Sequence[str] | None) -> list[str]:
    """The manifest's file names for the asked slide ids (all files when ``slides`` is None)."""
    if slides is None:
        return sorted(manifest.files)
    known = {Path(name).stem: name for name in manifest.files}
    wanted = []
    for slide_id in dict.fromkeys(s.strip() for s in slides if s.strip()):
        if slide_id not in known:
            hint = near_slides(slide_id, known) or f"it has {len(known)} slides: see 'sic-share query'"
            raise HubError(f"{manifest.ref} has no slide {slide_id!r}: {hint}")
        wanted.append(known[slide_id])
    if not wanted:
        raise HubError("--slides names no slide: give slide ids separated by commas")
    return sorted(wanted)


def _fetch(
    manifest: Manifest, remote: _Remote, names: list[str], cache: BlobCache, progress: Progress | None
) -> dict[str, Path]:
    """Each named file as a verified cache path: a cache hit, or a download checked on arrival.

    Up to ``_PARALLEL_FILES`` files are fetched at once, so hashing one overlaps the download of
    another (hashlib and the network both release the GIL). The first failure stops the rest.
    """
    ref = DatasetRef(manifest.publisher, manifest.name, manifest.version)

    def one(fname: str) -> Path:
        size, digest = manifest.files[fname]
        blob = cache.get(digest, size)
        if blob is not None:
            return blob
        name = f"{fname} of {manifest.ref}"
        for path in remote.paths(fname):
            try:
                with remote.refusals(ref):
                    return cache.store(remote.ranges(path, size), digest, size, name)
            except FileNotFoundError:
                continue
        raise VerificationError(f"{name} is missing on the hub: the publish is incomplete, tell its publisher")

    found: dict[str, Path] = {}
    with ThreadPoolExecutor(max_workers=_PARALLEL_FILES) as pool:
        futures = {pool.submit(one, fname): fname for fname in names}
        try:
            for future in as_completed(futures):
                found[futures[future]] = future.result()
                if progress:
                    progress(futures[future], len(found), len(names))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return {fname: found[fname] for fname in names}


def open_manifest(
    ref: str | DatasetRef, hub: str | None = None, *, allow_rollback: bool = False,
    trust: TrustStore | None = None, record: VersionRecord | None = None,
) -> Manifest:
    """The verified manifest of a hub dataset (signature, key binding, expiry, freshness); no data is read."""
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    manifest, _, _, _ = _open_version(ref, hub, trust=trust or TrustStore(), record=record or VersionRecord(),
                                      allow_rollback=allow_rollback)
    return manifest


def fetch_slides(
    ref: str | DatasetRef,
    slides: Sequence[str] | None = None,
    hub: str | None = None,
    *,
    allow_rollback: bool = False,
    trust: TrustStore | None = None,
    record: VersionRecord | None = None,
    cache: BlobCache | None = None,
    progress: Progress | None = None,
) -> tuple[Manifest, dict[str, Path]]:
    """Verified local copies of some slides of a hub dataset, in the cache, without a dataset folder.

    Returns the manifest and ``{slide_id: path}``; what ``sic`` uses to read one
    slide of a remote dataset. Checks are those of :func:`pull`.
    """
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    trust, record, cache = trust or TrustStore(), record or VersionRecord(), cache or BlobCache()
    manifest, _, _, remote = _open_version(ref, hub, trust=trust, record=record, allow_rollback=allow_rollback)
    names = _select(manifest, slides)
    paths = _fetch(manifest, remote, names, cache, progress)
    return manifest, {Path(name).stem: path for name, path in paths.items()}


def pull(
    ref: str | DatasetRef,
    hub: str | None = None,
    *,
    to: str | os.PathLike[str] | None = None,
    slides: Sequence[str] | None = None,
    allow_rollback: bool = False,
    trust: TrustStore | None = None,
    record: VersionRecord | None = None,
    cache: BlobCache | None = None,
    progress: Progress | None = None,
) -> tuple[Manifest, Path]:
    """Download a dataset version, verify it, and only then move it into place.

    Parameters
    ----------
    ref : str or DatasetRef
        ``publisher/name`` (newest version) or ``publisher/name@version``.
    hub : str, optional
        Hub URL; defaults to ``$SIC_SHARE_HUB`` or the local default hub.
    to : path-like, optional
        Destination folder, which must not exist; defaults to ``./<name>-v<version>``.
    slides : sequence of str, optional
        Only these slide ids (a partial copy: check it with ``verify --partial``).
    cache : BlobCache, optional
        Where downloaded files are kept by sha256; defaults to the user's cache.

    Notes
    -----
    The envelope is fetched and its signature, publisher binding, expiry and
    freshness checked before any data file is downloaded. Only files the signed
    manifest lists are fetched, and each is checked against its signed size and
    sha256 as it arrives; a file already in the cache (same sha256, from any
    dataset) is hashed again and not downloaded. Everything lands in a hidden
    temporary folder beside the destination, which is renamed only when every
    file has verified and deleted on any failure. The destination's files are
    hard links to the cache where the file system allows (read-only, no second
    copy on disk).

    Two pulls into one destination at once: the first to finish keeps it, the
    other raises :class:`SicShareError` and leaves it as it is (the rename never
    replaces anything, not even an empty folder made meanwhile). Temporary
    folders of this destination left by a killed pull are removed when the next
    pull into it starts (see :func:`sic_share._jsonstore.staged_folder`).
    """
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    trust, record, cache = trust or TrustStore(), record or VersionRecord(), cache or BlobCache()
    manifest, envelope, body, remote = _open_version(
        ref, hub, trust=trust, record=record, allow_rollback=allow_rollback
    )
    dest = Path(to) if to is not None else Path.cwd() / f"{ref.name}-v{manifest.version}"
    if dest.exists():
        raise SicShareError(f"{dest} already exists: choose another --out or remove it")
    names = _select(manifest, slides)
    dest.parent.mkdir(parents=True, exist_ok=True)
    taken = (f"{dest} was created by another pull meanwhile: use that copy (check it with 'sic-share verify "
             f"{dest}') or pull again with another --out")
    with staged_folder(dest, taken=taken) as tmp:
        (tmp / "slides").mkdir()
        (tmp / ENVELOPE).write_bytes(envelope)
        (tmp / MANIFEST).write_bytes(body)
        for fname, blob in _fetch(manifest, remote, names, cache, progress).items():
            cache.place(blob, tmp / fname)
    if slides is None:
        record.record(manifest.publisher, manifest.name, manifest.version)
    return manifest, dest


@dataclass(frozen=True)
class HubEntry:
    """One published version, as its manifest describes it."""

    publisher: str
    name: str
    version: int
    model: str
    dim: int
    slides: int
    patches: int
    created: str
    trusted: bool


def iter_published(
    fs: fsspec.AbstractFileSystem, base: str, url: str, trust: TrustStore, *, owner: str = "*",
    skipped: list[str] | None = None,
) -> Iterator[tuple[Manifest, bool, str]]:
    """Every published version under ``base``: ``(manifest, trusted, version folder path)``.

    ``trusted``: the envelope is signed by a key trusted for the manifest's
    publisher, unexpired, and sits under its own publisher/name/version.
    Shared by ``ls`` and ``query``.

    A bad entry never stops the listing: an envelope larger than
    ``MAX_ENVELOPE_BYTES`` (judged by the listing's size, never read), one that is
    not a DSSE envelope over a sic-share manifest, or one that vanished meanwhile
    is skipped, with one line saying why appended to ``skipped``.
    """
    with _refusals(fs, base, url, "the listing", "list and read the hub"):
        found = fs.glob(join(base, owner, "*", "*", ENVELOPE), detail=True)
    for envelope_path in sorted(found):
        folder = envelope_path.rsplit("/", 1)[0]
        where = "/".join(folder.split("/")[-3:])
        size = found[envelope_path].get("size")
        if isinstance(size, int) and size > MAX_ENVELOPE_BYTES:
            if skipped is not None:
                skipped.append(f"{where}: its envelope has {size} bytes, more than any sic-share manifest; skipped")
            continue
        with _refusals(fs, base, url, "the listing", "list and read the hub"):
            try:
                raw = _read_if_exists(fs, envelope_path)
            except (OSError, ValueError) as exc:
                if isinstance(exc, PermissionError):
                    raise
                raw = None
        if raw is None:
            continue
        try:
            manifest, _ = verify_signature(raw, where, trust=trust, allow_rollback=True)
            trusted = True
        except VerificationError:
            try:
                manifest = parse_manifest(open_envelope(raw, where)[1], where)
            except VerificationError as exc:
                if skipped is not None:
                    skipped.append(f"{where}: {exc}; skipped")
                continue
            trusted = False
        placed = (manifest.publisher, manifest.name, str(manifest.version)) == tuple(folder.split("/")[-3:])
        yield manifest, trusted and placed, folder


def list_datasets(
    hub: str | None = None,
    *,
    trust: TrustStore | None = None,
    publisher: str | None = None,
    model: str | None = None,
    skipped: list[str] | None = None,
) -> list[HubEntry]:
    """Every published version on a hub, read from the signed envelopes alone.

    ``trusted`` says whether the envelope is signed by a key trusted for the
    manifest's publisher, unexpired, and stored under its own
    publisher/name/version; file digests are not checked here (``pull`` does).

    Parameters
    ----------
    publisher : str, optional
        Only this publisher's datasets (only its folder is listed).
    model : str, optional
        Only datasets whose model id contains this text (case-insensitive).
    skipped : list, optional
        Receives one line per hub entry that could not be read (see :func:`iter_published`).
    """
    fs, base, url = _open_hub(hub)
    owner = check_name(publisher, "publisher") if publisher else "*"
    entries = []
    for manifest, trusted, _folder in iter_published(fs, base, url, trust or TrustStore(), owner=owner,
                                                     skipped=skipped):
        model_id = str(_field(manifest, "model", "id", "?"))
        if model and model.lower() not in model_id.lower():
            continue
        entries.append(
            HubEntry(
                manifest.publisher,
                manifest.name,
                manifest.version,
                model_id,
                _count(_field(manifest, "model", "dim", 0)),
                _count(_field(manifest, "counts", "slides", 0)),
                _count(_field(manifest, "counts", "patches", 0)),
                str(manifest.predicate.get("created", "")),
                trusted,
            )
        )
    return entries


def _field(manifest: Manifest, section: str, key: str, default: object) -> object:
    """``predicate[section][key]``, or ``default`` where an (untrusted) manifest has another shape."""
    block = manifest.predicate.get(section)
    return block.get(key, default) if isinstance(block, dict) else default


def _count(value: object) -> int:
    """A non-negative int from an (untrusted) manifest field; 0 for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
