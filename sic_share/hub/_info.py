"""``sic-share info``: what a dataset is, who signed it and whether you trust them, what it holds."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from sic_share._fsutil import join
from sic_share._jsonstore import read_bounded
from sic_share.dataset import SLIDES_DIR, read_slide_metadata, summarize
from sic_share.errors import VerificationError
from sic_share.signing import TrustStore, VersionRecord
from sic_share.signing._dsse import MAX_ENVELOPE_BYTES, open_envelope
from sic_share.signing._manifest import ENVELOPE, parse_manifest, verify_signature

__all__ = ["DatasetInfo", "dataset_info"]


@dataclass
class DatasetInfo:
    """The facts ``sic-share info`` prints (``to_dict`` for ``--json``).

    ``trusted`` is exactly ``pull``'s verdict on the envelope: signed by a key you
    trust for its publisher, unexpired, not older than a version you verified, and
    (on a hub) stored under its own publisher/name/version; ``trust_note`` says why
    not otherwise. File digests are not checked here: ``verify`` and ``pull`` do that.
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
    slides: list[dict[str, Any]] = field(default_factory=list)  # slide_id, patches (None: not signed), bytes
    total_patches: int | None = None  # the signed total, where per-slide counts are not signed (format 1.0)

    @property
    def n_patches(self) -> int:
        if self.total_patches is not None:
            return self.total_patches
        return sum(s["patches"] or 0 for s in self.slides)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_patches": self.n_patches}


def _trust(raw: bytes, where: str, trust: TrustStore, placed_at: tuple[str, str, int] | None = None
           ) -> tuple[Any, bool, str]:
    """The manifest and the verdict ``pull`` (or ``verify``) would give it, with the reason if not trusted.

    The checks are ``pull``'s, in its order: signature by a trusted key bound to the
    publisher, expiry, rollback against the versions verified before, and (on a hub)
    that the envelope sits under its own publisher/name/version. Nothing is recorded.
    """
    try:
        manifest, _ = verify_signature(raw, where, trust=trust, record=VersionRecord(), allow_rollback=False)
    except VerificationError as exc:
        return parse_manifest(open_envelope(raw, where)[1], where), False, str(exc)
    if placed_at is not None and (manifest.publisher, manifest.name, manifest.version) != placed_at:
        return manifest, False, (f"the envelope at {placed_at[0]}/{placed_at[1]}@{placed_at[2]} is signed for "
                                 f"{manifest.ref}: the hub holds a misplaced or replayed manifest, do not use it")
    return manifest, True, "signed by a key you trust for this publisher"


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
        raw = read_bounded(root / ENVELOPE, MAX_ENVELOPE_BYTES, "envelope")
        manifest, info.trusted, info.trust_note = _trust(raw, str(root / ENVELOPE), trust)
        _from_manifest(info, manifest)
    else:
        meta = summary.metadata
        info.trust_note = "not signed: 'sic-share sign' signs it"
        info.model = asdict(meta.model)
        info.patching = summary.patching
        info.classes = list(meta.classes)
        info.embedding_dtype = meta.embedding_dtype
    signed_rows = manifest.rows if info.signed else {}
    for path in summary.files:
        rows = signed_rows.get(f"{SLIDES_DIR}/{path.name}")
        if rows is None:
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
        manifest, info.trusted, info.trust_note = _trust(raw, f"{ref.publisher}/{ref.name}@{version}", trust,
                                                         (ref.publisher, ref.name, version))
        _from_manifest(info, manifest)
        for name, (size, _digest) in sorted(manifest.files.items()):
            # Signed row counts (format 1.1); a 1.0 manifest signs only the total, so no hub byte is
            # read unverified to count a slide's patches.
            info.slides.append({"slide_id": Path(name).stem, "patches": manifest.rows.get(name), "bytes": size})
        counts = manifest.predicate.get("counts")
        if not manifest.rows and isinstance(counts, dict) and isinstance(counts.get("patches"), int):
            info.total_patches = counts["patches"]
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
    On a hub only the envelope is read; per-slide patch counts are the signed ones.
    An untrusted or expired signature is reported, not raised: ``info`` is how a
    user finds out whose dataset it is before deciding to trust the key.
    """
    trust = trust or TrustStore()
    local = Path(dataset)
    if local.exists():
        return _folder_info(local, trust)
    return _hub_info(str(dataset), hub, trust)
