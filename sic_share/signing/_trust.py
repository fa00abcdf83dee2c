"""The consumer's trust store and its record of verified versions.

``trust.json`` binds each trusted key id to one publisher name. ``verified.json``
holds the highest version of each dataset this client has verified, so that an
older (rolled-back) version is refused later.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sic_share._jsonstore import load_json, not_written_by_us, read_bounded, save_json
from sic_share._paths import config_dir
from sic_share.dataset import check_name
from sic_share.errors import SicShareError, TrustError
from sic_share.signing._keys import MAX_KEY_BYTES, key_id, load_public_key, short_key_id

__all__ = ["TrustedKey", "TrustStore", "VersionRecord"]

_FIELDS = ("keyid", "publisher", "public_pem", "added")
_KEYID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TrustedKey:
    keyid: str
    publisher: str
    public_pem: str
    added: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        return load_public_key(self.public_pem.encode(), f"trusted key {short_key_id(self.keyid)}")


class TrustStore:
    """Trusted publisher keys, stored in ``<config>/trust.json``.

    Parameters
    ----------
    path : path-like, optional
        Defaults to ``trust.json`` under the config folder (``$SIC_SHARE_HOME/config``
        or ``$XDG_CONFIG_HOME/sic-share``).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / "trust.json"

    def keys(self) -> list[TrustedKey]:
        """Every trusted key; a file that does not hold what ``add`` writes is one error naming it."""
        data = load_json(self.path, {"keys": []}, what="a trust store")
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise not_written_by_us(self.path, "a trust store", 'no list "keys" at the top')
        found = []
        for i, entry in enumerate(data["keys"], 1):
            if not isinstance(entry, dict) or sorted(entry) != sorted(_FIELDS) or not all(
                isinstance(entry[f], str) for f in _FIELDS
            ):
                raise not_written_by_us(self.path, "a trust store", f"key {i} is not an object of strings {', '.join(_FIELDS)}")
            if not _KEYID.fullmatch(entry["keyid"]):
                raise not_written_by_us(self.path, "a trust store", f"key {i} has no sha256 key id")
            try:
                check_name(entry["publisher"], "publisher")
            except SicShareError:
                raise not_written_by_us(self.path, "a trust store",
                                        f"key {i} is bound to {entry['publisher']!r}, not a publisher name") from None
            found.append(TrustedKey(**entry))
        return found

    def add(self, public_key_file: str | os.PathLike[str], publisher: str) -> TrustedKey:
        """Trust the key in ``public_key_file`` for ``publisher`` only."""
        check_name(publisher, "publisher")
        path = Path(public_key_file)
        try:
            pem = read_bounded(path, MAX_KEY_BYTES, "public key file")
        except FileNotFoundError:
            raise TrustError(f"{path} does not exist: give the publisher's .pub file") from None
        kid = key_id(load_public_key(pem, str(path)))
        keys = self.keys()
        for entry in keys:
            if entry.keyid == kid:
                if entry.publisher == publisher:
                    return entry
                raise TrustError(
                    f"key {short_key_id(kid)} is already trusted for publisher {entry.publisher!r}: "
                    f"one key signs for one publisher; 'trust rm {short_key_id(kid)}' first"
                )
        added = TrustedKey(kid, publisher, pem.decode(), datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self._save([*keys, added])
        return added

    def remove(self, prefix_or_publisher: str) -> list[TrustedKey]:
        """Forget the one key whose id starts with the argument (4+ characters), or all keys of that publisher."""
        keys = self.keys()
        gone = [k for k in keys if k.publisher == prefix_or_publisher]
        if not gone:
            if len(prefix_or_publisher) < 4:
                raise TrustError(f"{prefix_or_publisher!r} is no trusted publisher, and a key id prefix needs "
                                 f"at least 4 characters: see 'sic-share trust ls'")
            gone = [k for k in keys if k.keyid.startswith(prefix_or_publisher.lower())]
            if len(gone) > 1:
                ids = ", ".join(short_key_id(k.keyid) for k in gone)
                raise TrustError(f"{prefix_or_publisher!r} starts {len(gone)} trusted key ids ({ids}): "
                                 f"give more characters")
        if not gone:
            raise TrustError(
                f"no trusted key or publisher matches {prefix_or_publisher!r}: see 'sic-share trust ls'"
            )
        self._save([k for k in keys if k not in gone])
        return gone

    def _save(self, keys: list[TrustedKey]) -> None:
        save_json(self.path, {"keys": [k.__dict__ for k in keys]})


class VersionRecord:
    """Highest verified version per ``publisher/name``, in ``<config>/verified.json``."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / "verified.json"

    def _load(self) -> dict[str, int]:
        seen = load_json(self.path, {}, what="a record of verified versions")
        if not isinstance(seen, dict):
            raise not_written_by_us(self.path, "a record of verified versions", "not an object")
        for key, version in seen.items():
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise not_written_by_us(self.path, "a record of verified versions",
                                        f"{key!r} has version {version!r}, not a whole number")
        return seen

    def highest(self, publisher: str, name: str) -> int:
        return self._load().get(f"{publisher}/{name}", 0)

    def record(self, publisher: str, name: str, version: int) -> None:
        seen = self._load()
        key = f"{publisher}/{name}"
        if version > seen.get(key, 0):
            seen[key] = version
            save_json(self.path, seen)
