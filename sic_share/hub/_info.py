"""``sic-share info``: what a dataset is, who signed it and whether you trust them, what it holds."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from sic_share._fsutil import join
from sic_share.dataset import SLIDES_DIR, read_slide_metadata, summarize
from sic_share.errors import VerificationError
from sic_share.signing import TrustStore, VersionRecord
from sic_share.signing._dsse import open_envelope
from sic_share.signing._manifest import ENVELOPE, parse_manifest, verify_signature

__all__ = ["DatasetInfo", "dataset_info"]


@dataclass
class DatasetInfo:
    """The facts ``sic-share info`` prints (``to_dict`` for ``--json``).

    ``trusted`` is True only when the envelope's signature verifies with a key you
    trust for its publisher (and it has not expired); ``trust_note`` says why not
    otherwise. File digests are not checked here: ``verify`` and ``pull`` do that.
    """

    location: str
    signed: bool
    publisher: str | None = None
    name: str | None = None
    version: int | None = None
    created: str | None = None
    signer: str | None = None
    trusted: bool = False
    trust_note: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    patching: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    embedding_dtype: str | None = None
    slides: list[dict[str, Any]] = field(default_factory=list)  # slide_id, patches, bytes

    @property
    def n_patches(self) -> int:
        return sum(s["patches"] for s in self.slides)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_patches": self.n_patches}


def _trust(raw: bytes, where: str, trust: TrustStore) -> tuple[Any, bool, str]:
    """The manifest (verified when possible) and whether its signer is trusted, with the reason if not."""
    try:
        manifest, _ = verify_signature(raw, where, trust=trust, record=VersionRecord(), allow_rollback=True)
        return manifest, True, "signed by a key you trust for this publisher"
    except VerificationError as exc:
        manifest = parse_manifest(open_envelope(raw, where)[1], where)
        return manifest, False, str(exc)


def _from_manifest(info: DatasetInfo, manifest: Any) -> None:
    predicate = manifest.predicate
    info.publisher, info.name, info.version = manifest.publisher, manifest.name, manifest.version
    info.created = predicate.get("created")
    info.signer = predicate.get("signer")
    info.model = dict(predicate.get("model") or {})
    info.patching = dict(predicate.get("patching") or {})
    info.classes = list(predicate.get("classes") or [])
    info.embedding_dtype = predicate.get("embedding_dtype")


def _folder_info(root: Path, trust: TrustStore) -> DatasetInfo:
    summary = summarize(root)
    info = DatasetInfo(location=str(root), signed=(root / ENVELOPE).is_file())
    if info.signed:
        manifest, info.trusted, info.trust_note = _trust((root / ENVELOPE).read_bytes(), str(root / ENVELOPE), trust)
        _from_manifest(info, manifest)
    else:
        meta = summary.metadata
        info.trust_note = "not signed: 'sic-share sign' signs it"
        info.model = asdict(meta.model)
        info.patching = summary.patching
        info.classes = list(meta.classes)
        info.embedding_dtype = meta.embedding_dtype
    for path in summary.files:
        _, rows = read_slide_metadata(path)
        info.slides.append({"slide_id": path.stem, "patches": rows, "bytes": path.stat().st_size})
    return info


def _hub_info(text: str, hub: str | None, trust: TrustStore) -> DatasetInfo:
    from sic_share.hub._hub import _open_hub, _pick_version, _refusals, parse_ref

    ref = parse_ref(text)
    fs, base, url = _open_hub(hub)
    version = _pick_version(fs, base, url, ref, "the listing")
    with _refusals(fs, base, url, "the listing", f"read {ref.publisher}/{ref.name}"):
        folder = join(base, ref.publisher, ref.name, str(version))
        raw = fs.cat_file(join(folder, ENVELOPE))
        info = DatasetInfo(location=f"{url} {ref.publisher}/{ref.name}@{version}", signed=True)
        manifest, info.trusted, info.trust_note = _trust(raw, f"{ref.publisher}/{ref.name}@{version}", trust)
        _from_manifest(info, manifest)
        for name, (size, _digest) in sorted(manifest.files.items()):
            if not name.startswith(SLIDES_DIR + "/"):
                continue
            with fs.open(join(folder, name), "rb") as handle:  # the footer only: a few ranged reads
                rows = pq.ParquetFile(handle).metadata.num_rows
            info.slides.append({"slide_id": Path(name).stem, "patches": rows, "bytes": size})
    return info


def dataset_info(dataset: str | os.PathLike[str], hub: str | None = None, *,
                 trust: TrustStore | None = None) -> DatasetInfo:
    """Describe a dataset folder or a hub dataset without downloading its data.

    Parameters
    ----------
    dataset : path-like or str
        A dataset folder (signed or not), or a hub reference ``publisher/name[@version]``.
    hub : str, optional
        Hub name or URL for a reference (default: ``$SIC_SHARE_HUB`` or the local hub).
    trust : TrustStore, optional

    Returns
    -------
    DatasetInfo

    Notes
    -----
    On a hub only the envelope and each slide file's Parquet footer are read.
    An untrusted or expired signature is reported, not raised: ``info`` is how a
    user finds out whose dataset it is before deciding to trust the key.
    """
    trust = trust or TrustStore()
    local = Path(dataset)
    if local.exists():
        return _folder_info(local, trust)
    return _hub_info(str(dataset), hub, trust)
