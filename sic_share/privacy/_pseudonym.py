"""Slide pseudonyms: a keyed HMAC of the slide's source name.

The key (the *holder secret*) is 32 random bytes kept beside the signing key and
never published. The same slide gets the same pseudonym across runs, models and
tools (export, import from CLAM/TRIDENT), so a holder's datasets join on
``slide_id``; without the secret, nobody can test a guessed file name.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path, PurePath

from sic_share._paths import keys_dir
from sic_share._jsonstore import read_bounded
from sic_share.errors import SicShareError

__all__ = ["holder_secret", "pseudonym", "source_stem"]

_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vsi", ".jpg", ".jpeg", ".png",
             ".h5", ".npy", ".dcm", ".isyntax", ".czi"}


def source_stem(name: str) -> str:
    """The part of a slide's file name that identifies it: no folders, no format suffixes.

    ``/data/TCGA-01.svs``, ``TCGA-01.h5`` and ``TCGA-01.features.npy`` all give
    ``TCGA-01``, so one slide keeps one pseudonym whichever tool produced the file.
    """
    stem = PurePath(name).name
    for marker in (".coords.npy", ".features.npy", ".labels.npy"):
        if stem.endswith(marker):
            return stem[: -len(marker)]
    while PurePath(stem).suffix.lower() in _SUFFIXES:
        stem = stem[: -len(PurePath(stem).suffix)]
    return stem


def holder_secret(path: str | os.PathLike[str] | None = None, *, create: bool = True) -> bytes:
    """Read the holder secret, creating it (mode 0600) on first use.

    Parameters
    ----------
    path : path-like, optional
        Defaults to ``holder.secret`` in the keys folder.
    """
    path = Path(path) if path is not None else keys_dir() / "holder.secret"
    try:
        text = read_bounded(path, 4096, "holder secret").decode("utf-8", "replace").strip()
    except FileNotFoundError:
        if not create:
            raise SicShareError(f"holder secret {path} does not exist: give the one used before with --secret") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise SicShareError(f"holder secret {path} is not at least 16 hex-encoded bytes: restore it from backup")
    return secret


def pseudonym(source_name: str, secret: bytes) -> str:
    """16 hex characters of HMAC-SHA256(secret, source stem)."""
    return hmac.new(secret, source_stem(source_name).encode(), hashlib.sha256).hexdigest()[:16]
