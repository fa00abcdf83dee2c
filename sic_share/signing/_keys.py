"""Ed25519 signing keys: generate, save, load; key id = sha256 of the raw public key."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sic_share._jsonstore import read_bounded
from sic_share._paths import keys_dir
from sic_share.dataset import check_name
from sic_share.errors import SicShareError, TrustError

__all__ = ["KEY_ID_CHARS", "KeyInfo", "MAX_KEY_BYTES", "key_id", "short_key_id", "generate_key", "list_keys", "load_private_key", "load_public_key",
           "default_private_key"]

PASSPHRASE_ENV = "SIC_SHARE_KEY_PASSPHRASE"
#: The largest key file read: an Ed25519 PEM key is 100-300 bytes, encrypted or not.
MAX_KEY_BYTES = 8 << 10


#: How many hex characters of a key id every message and table shows (``keys ls``, ``info``,
#: ``trust ls``, errors): 64 bits, enough to tell keys apart and short enough to read.
KEY_ID_CHARS = 16


def key_id(public_key: Ed25519PublicKey) -> str:
    """Hex sha256 of the 32-byte raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def short_key_id(keyid: str) -> str:
    """The key id as people see it: its first :data:`KEY_ID_CHARS` hex characters."""
    return keyid[:KEY_ID_CHARS]


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def generate_key(
    publisher: str,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    passphrase: str | None = None,
) -> tuple[Path, Path, str]:
    """Create ``<publisher>.key`` (PKCS#8 PEM, mode 0600) and ``<publisher>.pub``.

    Returns
    -------
    (private_path, public_path, key_id)
    """
    check_name(publisher, "publisher")
    folder = Path(out_dir) if out_dir is not None else keys_dir()
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{publisher}.key", folder / f"{publisher}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise SicShareError(f"{path} already exists: keys are never overwritten, move it away first")
    key = Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_private(private_path, pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path, key_id(key.public_key())


def load_private_key(path: str | os.PathLike[str], passphrase: str | None = None) -> Ed25519PrivateKey:
    """Load a PEM private key; the passphrase defaults to ``$SIC_SHARE_KEY_PASSPHRASE``."""
    path = Path(path)
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        _check_private_mode(path, path.stat().st_mode)
        data = read_bounded(path, MAX_KEY_BYTES, "signing key")
    except FileNotFoundError:
        raise SicShareError(f"signing key {path} does not exist: create one with 'sic-share keys generate'") from None
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except TypeError:
        raise SicShareError(
            f"signing key {path} is encrypted: give its passphrase with --passphrase or ${PASSPHRASE_ENV}"
        ) from None
    except ValueError:
        raise SicShareError(f"signing key {path} could not be read: wrong passphrase or not a PEM key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SicShareError(f"signing key {path} is not an Ed25519 key: create one with 'sic-share keys generate'")
    return key


def _check_private_mode(path: Path, mode: int) -> None:
    """Refuse a private key file that other users can read or write, as ssh does."""
    if os.name == "posix" and stat.S_ISREG(mode) and mode & 0o077:
        raise SicShareError(
            f"signing key {path} is accessible by other users (mode {stat.S_IMODE(mode):04o}): "
            f"run 'chmod 600 {path}' and sign again"
        )


def load_public_key(data: bytes, where: str) -> Ed25519PublicKey:
    """Load a PEM public key (or the public half of a PEM private key is refused)."""
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise TrustError(f"{where} is not a PEM public key: give the publisher's .pub file") from None
    if not isinstance(key, Ed25519PublicKey):
        raise TrustError(f"{where} is not an Ed25519 public key: sic-share signs with Ed25519")
    return key


def default_private_key() -> Path:
    """The only ``*.key`` in the keys folder; an error when there are none or several."""
    keys = sorted(keys_dir().glob("*.key"))
    if len(keys) != 1:
        found = ", ".join(k.name for k in keys) or "none"
        raise SicShareError(
            f"cannot choose a signing key in {keys_dir()} (found: {found}): pass --key FILE"
            + (" or run 'sic-share keys generate --publisher NAME'" if not keys else "")
        )
    return keys[0]


@dataclass(frozen=True)
class KeyInfo:
    """A key pair in the keys folder: what ``sic-share keys ls`` shows."""

    publisher: str
    keyid: str | None  # from the .pub file; None when it is missing or unreadable
    private: str
    public: str | None


def list_keys(folder: str | os.PathLike[str] | None = None) -> list[KeyInfo]:
    """Every ``*.key`` in the keys folder with its publisher (file stem), key id and ``.pub`` path.

    The key id is read from the public file, so no passphrase is asked for; a key
    whose ``.pub`` is missing is listed with ``keyid=None`` and ``public=None``.
    """
    root = Path(folder) if folder is not None else keys_dir()
    found = []
    for private in sorted(root.glob("*.key")):
        public = private.with_suffix(".pub")
        keyid = None
        if public.is_file():
            try:
                keyid = key_id(load_public_key(read_bounded(public, MAX_KEY_BYTES, "public key"), str(public)))
            except (SicShareError, OSError):
                keyid = None
        found.append(KeyInfo(private.stem, keyid, str(private), str(public) if public.is_file() else None))
    return found
