"""manifest.json (an in-toto Statement v1) and its DSSE envelope: sign and verify."""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sic_share._jsonstore import atomic_write_bytes, read_bounded, wait_for_lock
from sic_share._layout import BLOCK_SIZE, digest_file, manifest_digest
from sic_share.dataset import SLIDES_DIR, check_name, slide_files, summarize
from sic_share.errors import DatasetError, SicShareError, TrustError, VerificationError
from sic_share.signing._dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    MAX_ENVELOPE_BYTES,
    open_envelope,
    sign_envelope,
    signature_verifies,
)
from sic_share.signing._keys import default_private_key, key_id, load_private_key, short_key_id
from sic_share.signing._trust import TrustStore, VersionRecord

__all__ = [
    "MANIFEST",
    "ENVELOPE",
    "STATEMENT_TYPE",
    "PREDICATE_TYPE",
    "Manifest",
    "sha256_file",
    "sign_dataset",
    "parse_manifest",
    "verify_signature",
    "verify_files",
    "verify_dataset",
    "check_unverified",
    "PublishReady",
    "FORMAT_MINOR",
]

MANIFEST = "manifest.json"
ENVELOPE = "manifest.dsse.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://sic-share.dev/embedding-dataset/v1"
_FILE_NAME = re.compile(r"slides/[a-z0-9][a-z0-9._-]{0,63}\.parquet")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
#: Seconds a sign waits for another sign of the same folder (see :func:`sign_dataset`).
SIGN_LOCK_TIMEOUT_S = 600.0
#: Manifest minor version: 1 adds each file's ``rows`` and ``blocks`` (per-block digests, see
#: :mod:`sic_share._layout`) and the hub layout under ``<version>/<sha256 of manifest.json>/``.
#: Manifests without it (1.0) still verify and pull; ``query`` then verifies whole files.
FORMAT_MINOR = 1


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """The parts of a verified manifest that callers use."""

    publisher: str
    name: str
    version: int
    files: dict[str, tuple[int, str]]  # name -> (size, sha256)
    predicate: dict[str, Any]
    blocks: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (block size, root); 1.1 only
    rows: dict[str, int] = field(default_factory=dict)  # name -> patches; 1.1 only
    digest: str = ""  # sha256 of manifest.json's bytes: names the version's data folder on a hub

    @property
    def minor(self) -> int:
        """The manifest's minor format version (0 for manifests written before 1.1)."""
        value = self.predicate.get("format_minor", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    @property
    def ref(self) -> str:
        return f"{self.publisher}/{self.name}@{self.version}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def sign_dataset(
    dataset_dir: str | os.PathLike[str],
    *,
    name: str,
    key_path: str | os.PathLike[str] | None = None,
    publisher: str | None = None,
    version: int | None = None,
    expires_days: int | None = None,
    passphrase: str | None = None,
    lock_timeout: float | None = None,
) -> Manifest:
    """Write ``manifest.json`` and ``manifest.dsse.json`` for a dataset folder.

    Parameters
    ----------
    dataset_dir : path-like
        Folder holding ``slides/*.parquet``.
    name : str
        Dataset name (a path segment on the hub).
    key_path : path-like, optional
        Ed25519 private key; defaults to the only key in the keys folder.
    publisher : str, optional
        Defaults to the key file's stem (``keys generate`` names it so).
    version : int, optional
        Defaults to 1, or to the folder's previous manifest version + 1.
    expires_days : int, optional
        Manifest expiry, in days from now; none by default.
    lock_timeout : float, optional
        Seconds to wait for another sign of the same folder to finish;
        defaults to ``SIGN_LOCK_TIMEOUT_S`` (600).

    Raises
    ------
    DatasetError
        When a slide file is malformed or contradicts itself (see
        :func:`sic_share.dataset.summarize` with ``full=True``); nothing is written.
    SicShareError
        When another sign of the folder holds its lock for ``lock_timeout`` seconds.

    Notes
    -----
    Every slide file is read in full first (schema, metadata agreement, finite
    embeddings, coordinates and labels), so nothing malformed gets signed. The
    two files are written atomically, the envelope last.

    Concurrency: the whole read-compute-write (previous version, full read,
    digests, both files) runs under an exclusive ``fcntl.flock`` on the dataset
    folder itself, so two signs (or an ``export`` and a sign) of one folder
    never sign one version number twice. The second one waits (blocking, polled
    every 50 ms, up to ``lock_timeout``) and then signs the next version, as if
    the two had run one after the other. Locking the folder rather than a lock
    file in it leaves nothing behind, not even after a kill, for ``audit`` (and
    export's audit) to find. The lock is the kernel's: on NFS it guards one
    machine only; where a folder cannot be locked, and off POSIX, signing
    proceeds unlocked.
    """
    root = Path(dataset_dir)
    check_name(name, "dataset name")
    key_path = Path(key_path) if key_path is not None else default_private_key()
    publisher = check_name(publisher or key_path.stem, "publisher")
    key = load_private_key(key_path, passphrase)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise SicShareError(f"version={version!r} should be a positive integer")
    if expires_days is not None and expires_days < 1:
        raise SicShareError(f"expires_days={expires_days} should be at least 1")
    slide_files(root)  # a missing folder, or one without slides, is named before the folder is locked
    with _sign_lock(root, SIGN_LOCK_TIMEOUT_S if lock_timeout is None else lock_timeout):
        summary = summarize(root, full=True)
        if version is None:
            version = _previous_version(root, publisher, name) + 1
        files = []
        for path, rows in zip(summary.files, summary.rows):
            digests = digest_file(path)
            files.append({"name": f"{SLIDES_DIR}/{path.name}", "size": digests.size, "sha256": digests.sha256,
                          "rows": rows, "blocks": {"size": BLOCK_SIZE, "root": digests.root}})
        created = _now()
        meta = summary.metadata
        predicate: dict[str, Any] = {
            "publisher": publisher,
            "name": name,
            "version": version,
            "created": created.isoformat(timespec="seconds"),
            "format_version": meta.format_version,
            "format_minor": FORMAT_MINOR,
            "model": asdict(meta.model),
            "patching": summary.patching,
            "classes": list(meta.classes),
            "embedding_dtype": meta.embedding_dtype,
            "counts": {"slides": summary.n_slides, "patches": summary.n_patches},
            "privacy": {
                "slide_id": "keyed HMAC-SHA256 of the source slide name; the key stays with the publisher",
                "pixels": False,
                "slide_metadata": "none: only level-0 µm/px and patch geometry",
            },
            "signer": key_id(key.public_key()),
            # The raw public key in hex (its sha256 is ``signer``): lets ``publish`` check the signature before
            # uploading. Trust never comes from here: consumers trust keys with 'trust add'.
            "signer_key": key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex(),
            "files": files,
        }
        if expires_days is not None:
            predicate["expires"] = (created + timedelta(days=expires_days)).isoformat(timespec="seconds")
        statement = {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": f["name"], "digest": {"sha256": f["sha256"]}} for f in files],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }
        body = (json.dumps(statement, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
        atomic_write_bytes(root / MANIFEST, body)
        atomic_write_bytes(root / ENVELOPE, sign_envelope(body, key))
        return parse_manifest(body, str(root / MANIFEST))


@contextmanager
def _sign_lock(root: Path, timeout: float) -> Iterator[None]:
    """Hold the exclusive sign lock of a dataset folder (see :func:`sign_dataset`, Notes)."""
    if os.name != "posix":  # no flock (nor folder descriptors): sign unlocked
        yield
        return
    try:
        fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise SicShareError(f"cannot open the folder {root} ({exc.strerror}): give the dataset folder") from None
    try:  # where the file system cannot lock folders, sign unlocked (see sign_dataset)
        wait_for_lock(fd, timeout, f"another sign of {root} is running (it has held the folder's lock for over "
                                   f"{timeout:g} s): wait for it to finish, then sign again")
        yield
    finally:
        os.close(fd)  # closing the folder's descriptor releases its lock


def _previous_version(root: Path, publisher: str, name: str) -> int:
    try:
        old = json.loads(read_bounded(root / MANIFEST, MAX_ENVELOPE_BYTES, "manifest"))["predicate"]
    except (FileNotFoundError, ValueError, KeyError, TypeError, RecursionError, SicShareError):
        return 0
    if old.get("publisher") == publisher and old.get("name") == name and isinstance(old.get("version"), int):
        return old["version"]
    return 0


def parse_manifest(body: bytes, where: str) -> Manifest:
    """Check a statement's shape and return what verification needs."""
    try:
        statement = json.loads(body)
        if statement["_type"] != STATEMENT_TYPE or statement["predicateType"] != PREDICATE_TYPE:
            raise ValueError(f"statement type {statement['_type']!r}/{statement['predicateType']!r} is not ours")
        predicate = statement["predicate"]
        publisher, name, version = predicate["publisher"], predicate["name"], predicate["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"version {version!r} is not a positive integer")
        files: dict[str, tuple[int, str]] = {}
        blocks: dict[str, tuple[int, str]] = {}
        rows: dict[str, int] = {}
        if not isinstance(predicate["files"], list):
            raise ValueError("the file list is not a list")
        for entry in predicate["files"]:
            fname, size, digest = entry["name"], entry["size"], entry["sha256"]
            if not isinstance(fname, str) or not _FILE_NAME.fullmatch(fname) or ".." in fname:
                raise ValueError(f"file name {fname!r} is not slides/<slide_id>.parquet")
            if not _is_count(size) or not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                raise ValueError(f"file {fname} has no valid size and sha256")
            if fname in files:
                raise ValueError(f"file {fname} is listed twice")
            files[fname] = (size, digest)
            if "blocks" in entry:
                block = entry["blocks"]
                bsize, root = block["size"], block["root"]
                if not _is_count(bsize) or not bsize or not isinstance(root, str) or not _HEX64.fullmatch(root):
                    raise ValueError(f"file {fname} has no valid block size and root")
                blocks[fname] = (bsize, root)
            if "rows" in entry:
                if not _is_count(entry["rows"]):
                    raise ValueError(f"file {fname} has an invalid row count {entry['rows']!r}")
                rows[fname] = entry["rows"]
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
        if subjects != {k: v[1] for k, v in files.items()}:
            raise ValueError("subjects and file list disagree")
        check_name(publisher, "publisher")
        check_name(name, "dataset name")
        if not isinstance(predicate, dict):
            raise ValueError("the predicate is not an object")
    except RecursionError:
        raise VerificationError(f"{where} is not a valid sic-share manifest (nested too deeply)") from None
    except (ValueError, KeyError, TypeError, AttributeError, DatasetError) as exc:
        raise VerificationError(f"{where} is not a valid sic-share manifest ({exc})") from None
    return Manifest(publisher, name, version, files, predicate, blocks, rows, manifest_digest(body))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def verify_signature(
    envelope: bytes,
    where: str,
    *,
    trust: TrustStore | None = None,
    record: VersionRecord | None = None,
    allow_rollback: bool = False,
) -> tuple[Manifest, bytes]:
    """Verify an envelope's signature, key binding, expiry and freshness.

    Returns the manifest and the exact signed bytes; the caller checks the files
    against it (see :func:`verify_files`).
    """
    trust = trust or TrustStore()
    record = record or VersionRecord()
    payload_type, body, signatures = open_envelope(envelope, where)
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(f"{where} has payload type {payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}")
    trusted = trust.keys()
    signer = None
    # keyid is only a hint: a signature counts when a trusted key verifies it.
    for _hint, sig in signatures:
        signer = next((k for k in trusted if signature_verifies(k.public_key, payload_type, body, sig)), None)
        if signer is not None:
            break
    if signer is None:
        hints = ", ".join(short_key_id(h) for h, _ in signatures if h) or "none given"
        raise TrustError(
            f"{where} is not signed by any key you trust (key id {hints}): get the publisher's public key "
            "and run 'sic-share trust add KEY.pub --publisher NAME'"
        )
    manifest = parse_manifest(body, where)
    if manifest.publisher != signer.publisher:
        raise TrustError(
            f"{manifest.ref} claims publisher {manifest.publisher!r} but is signed by key {short_key_id(signer.keyid)}, "
            f"which you trust for {signer.publisher!r} only: do not use it"
        )
    _check_expiry(manifest, "ask the publisher for a fresh version")
    highest = record.highest(manifest.publisher, manifest.name)
    if manifest.version < highest and not allow_rollback:
        raise VerificationError(
            f"{manifest.ref} is older than version {highest}, which you verified before (possible rollback): "
            "pull the newest version, or pass --allow-rollback if you want the old one"
        )
    return manifest, body


def _check_expiry(manifest: Manifest, fix: str) -> None:
    """Refuse a manifest whose ``expires`` has passed (or cannot be read), naming ``fix``."""
    expires = manifest.predicate.get("expires")
    if expires is None:
        return
    try:
        expired = datetime.fromisoformat(expires) <= _now()
    except (TypeError, ValueError):
        raise VerificationError(f"{manifest.ref} has an unreadable expiry {expires!r}: {fix}") from None
    if expired:
        raise VerificationError(f"{manifest.ref} expired on {expires}: {fix}")


def listed_present(root: Path, manifest: Manifest) -> set[str]:
    """The manifest's files that ``root/slides/`` holds; refuses a Parquet file there that it does not list."""
    slides = root / SLIDES_DIR
    # Only Parquet files can be read as slides; other files there are never used.
    present = {f"{SLIDES_DIR}/{p.name}" for p in slides.glob("*.parquet")} if slides.is_dir() else set()
    unlisted = sorted(present - set(manifest.files))
    if unlisted:
        raise VerificationError(
            f"{unlisted[0]} is not listed in the signed manifest of {manifest.ref}: remove it, it must not be used"
        )
    return present


_MISSING = ": pull the dataset again (a copy made with 'pull --slides' verifies with 'verify --partial')"


def check_file(root: Path, manifest: Manifest, fname: str, *, missing: str = _MISSING, hash_file: bool = True) -> str:
    """Check one listed file under ``root``: present (else the message goes on with ``missing``), size and sha256.

    Returns the signed sha256; ``hash_file=False`` checks presence and size only.
    """
    size, digest = manifest.files[fname]
    path = root / fname
    try:
        actual_size = path.stat().st_size
    except FileNotFoundError:
        raise VerificationError(f"{fname} of {manifest.ref} is missing{missing}") from None
    if actual_size != size:
        raise VerificationError(
            f"{fname} of {manifest.ref} has {actual_size} bytes, the signed manifest says {size}: "
            "it was truncated or replaced, pull it again"
        )
    if hash_file and sha256_file(path) != digest:
        raise VerificationError(
            f"{fname} of {manifest.ref} does not match its signed sha256: it was modified, pull it again"
        )
    return digest


def verify_files(root: Path, manifest: Manifest, *, only: set[str] | None = None, hash_files: bool = True) -> None:
    """Check every listed file under ``root`` (or those in ``only``): present, size, sha256; no unlisted Parquet file.

    ``hash_files=False`` checks presence and sizes only (for a caller that hashes them itself).
    """
    listed_present(root, manifest)
    for fname in manifest.files if only is None else [k for k in manifest.files if k in only]:
        check_file(root, manifest, fname, hash_file=hash_files)


def read_signed_folder(root: Path, *, trust: TrustStore | None, record: VersionRecord,
                       allow_rollback: bool) -> Manifest:
    """The verified manifest of a signed folder: its envelope (see :func:`verify_signature`), and
    ``manifest.json`` byte for byte the signed payload. FileNotFoundError when there is no envelope."""
    envelope = read_bounded(root / ENVELOPE, MAX_ENVELOPE_BYTES, "envelope")
    manifest, body = verify_signature(
        envelope, str(root / ENVELOPE), trust=trust, record=record, allow_rollback=allow_rollback
    )
    try:
        on_disk = read_bounded(root / MANIFEST, MAX_ENVELOPE_BYTES, "manifest")
    except FileNotFoundError:
        on_disk = None
    if on_disk != body:
        raise VerificationError(
            f"{root / MANIFEST} is {'missing' if on_disk is None else 'not the signed manifest'} "
            "(edited after signing): pull the dataset again"
        )
    return manifest


def verify_dataset(
    dataset_dir: str | os.PathLike[str],
    *,
    trust: TrustStore | None = None,
    record: VersionRecord | None = None,
    allow_rollback: bool = False,
    remember: bool = True,
    partial: bool = False,
) -> Manifest:
    """Verify a local dataset folder all-or-nothing.

    Checks, in order: the envelope is signed by a trusted key; the manifest's
    publisher is the one that key is trusted for; manifest.json is byte for byte
    the signed payload; the manifest has not expired; its version is not older
    than one verified before (unless ``allow_rollback``); every listed file is
    present with its size and sha256; no unlisted file sits in ``slides/``.
    On success the version is remembered (unless ``remember=False``).

    ``partial=True`` accepts a copy made by ``pull --slides``: listed files may
    be absent (at least one must be there), every present one must verify, and
    the version is not remembered.

    Raises
    ------
    VerificationError, TrustError
        Naming the first check that failed.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        if re.fullmatch(r"[\w.-]+/[\w.-]+(@\d+)?", str(dataset_dir)) and not root.exists():
            raise VerificationError(
                f"{dataset_dir} is a hub reference, not a folder: 'sic-share pull {dataset_dir}' verifies it before "
                "anything is downloaded, then 'sic-share verify' checks the pulled folder"
            )
        what = "is a file" if root.exists() else "does not exist"
        raise VerificationError(f"dataset folder {root} {what}: give the folder that holds {ENVELOPE}")
    record = record or VersionRecord()
    try:
        manifest = read_signed_folder(root, trust=trust, record=record, allow_rollback=allow_rollback)
    except FileNotFoundError:
        raise VerificationError(f"{root} has no {ENVELOPE}: it is not signed, run 'sic-share sign' first") from None
    if partial:
        present = {name for name in manifest.files if (root / name).exists()}
        if not present:
            raise VerificationError(f"{root} holds none of the files of {manifest.ref}: pull them again")
        verify_files(root, manifest, only=present)
        return manifest
    verify_files(root, manifest)
    if remember:
        record.record(manifest.publisher, manifest.name, manifest.version)
    return manifest


@dataclass(frozen=True)
class PublishReady:
    """A dataset folder checked for publishing: what ``publish`` uploads, all read once."""

    manifest: Manifest
    body: bytes  # manifest.json, the envelope's payload
    envelope: bytes
    sidecars: dict[str, bytes]  # file name -> its per-block digests (format 1.1 manifests)


def _signer_keys(manifest: Manifest, trust: TrustStore | None) -> list[Ed25519PublicKey]:
    """Keys that may have signed ``manifest``: the one it names (``signer_key``, when its sha256 is
    ``signer``), else the holder's own key pairs and every trusted key (manifests before 1.1)."""
    from sic_share.signing._keys import MAX_KEY_BYTES, list_keys, load_public_key

    raw, signer = manifest.predicate.get("signer_key"), manifest.predicate.get("signer")
    if isinstance(raw, str):
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw))
        except ValueError:
            return []
        return [key] if key_id(key) == signer else []
    found = []
    for info in list_keys():
        if info.public is not None and info.keyid is not None:
            try:
                found.append(load_public_key(read_bounded(info.public, MAX_KEY_BYTES, "public key"), info.public))
            except (OSError, SicShareError):
                continue
    found.extend(key.public_key for key in (trust or TrustStore()).keys())
    return found


def check_unverified(dataset_dir: str | os.PathLike[str], *, trust: TrustStore | None = None) -> PublishReady:
    """What ``publish`` checks before a byte leaves the holder: signature, expiry, every file.

    The envelope's signature must verify with the key the manifest names
    (``signer_key``; for manifests before 1.1, one of the holder's own or trusted
    keys); whom consumers trust is theirs to decide on pull. manifest.json
    must be its payload; the manifest must not have expired; every listed file must
    have its signed size, sha256 and (format 1.1) per-block digests, computed in one
    read that also yields the ``.blocks`` sidecars uploaded beside the files. So a
    folder that no consumer would accept is never uploaded and never burns a
    version number.
    """
    from sic_share._layout import digest_file

    root = Path(dataset_dir)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise VerificationError(f"dataset folder {root} {what}: give the folder that holds {ENVELOPE}")
    try:
        envelope = read_bounded(root / ENVELOPE, MAX_ENVELOPE_BYTES, "envelope")
        body = read_bounded(root / MANIFEST, MAX_ENVELOPE_BYTES, "manifest")
    except FileNotFoundError as exc:
        raise VerificationError(f"{root} is not signed ({Path(exc.filename).name} missing): run 'sic-share sign' first") from None
    payload_type, payload, signatures = open_envelope(envelope, str(root / ENVELOPE))
    if payload != body:
        raise VerificationError(f"{root / MANIFEST} was edited after signing: sign the dataset again")
    manifest = parse_manifest(body, str(root / MANIFEST))
    if payload_type != IN_TOTO_PAYLOAD_TYPE or not any(
            signature_verifies(key, payload_type, body, sig) for key in _signer_keys(manifest, trust)
            for _, sig in signatures):
        raise VerificationError(
            f"the signature in {root / ENVELOPE} does not verify (damaged, or made by another key than the "
            f"manifest names): sign {root} again with 'sic-share sign'"
        )
    _check_expiry(manifest, "sign a new version before publishing")
    verify_files(root, manifest, hash_files=False)
    def check(fname: str) -> bytes | None:
        size, digest = manifest.files[fname]
        block = manifest.blocks.get(fname)
        # The signed block root covers every byte, so one pass of block digests checks the file
        # (no second whole-file hash).
        digests = digest_file(root / fname, block[0], whole=False) if block else None
        ok = sha256_file(root / fname) == digest if digests is None else (
            digests.size == size and digests.root == block[1])
        if not ok:
            raise VerificationError(
                f"{fname} of {manifest.ref} does not match its signed sha256: it was modified after signing, "
                "sign the dataset again"
            )
        return None if digests is None else digests.blocks

    # Files are hashed on up to 4 threads (hashlib releases the GIL): on 2 cores this more than pays
    # for the 16 KiB block digests, which cost 1.13 x one whole-file sha256.
    names = sorted(manifest.files)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1, max(1, len(names)))) as pool:
        sidecars = {fname: blocks for fname, blocks in zip(names, pool.map(check, names)) if blocks is not None}
    return PublishReady(manifest, body, envelope, sidecars)
