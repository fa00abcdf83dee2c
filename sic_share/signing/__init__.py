"""Signing and verification: Ed25519 keys, DSSE envelopes over in-toto manifests, trust."""

from __future__ import annotations

from sic_share.signing._dsse import IN_TOTO_PAYLOAD_TYPE, open_envelope, pae, sign_envelope
from sic_share.signing._folder import DatasetFolder, open_folder
from sic_share.signing._keys import (
    KeyInfo,
    default_private_key,
    generate_key,
    key_id,
    list_keys,
    load_private_key,
    load_public_key,
)
from sic_share.signing._manifest import (
    ENVELOPE,
    MANIFEST,
    PREDICATE_TYPE,
    Manifest,
    check_unverified,
    parse_manifest,
    sha256_file,
    sign_dataset,
    verify_dataset,
    verify_files,
    verify_signature,
)
from sic_share.signing._trust import TrustedKey, TrustStore, VersionRecord

__all__ = [
    "DatasetFolder",
    "KeyInfo",
    "list_keys",
    "ENVELOPE",
    "IN_TOTO_PAYLOAD_TYPE",
    "MANIFEST",
    "PREDICATE_TYPE",
    "Manifest",
    "TrustStore",
    "TrustedKey",
    "VersionRecord",
    "check_unverified",
    "default_private_key",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "open_envelope",
    "open_folder",
    "pae",
    "parse_manifest",
    "sha256_file",
    "sign_dataset",
    "sign_envelope",
    "verify_dataset",
    "verify_files",
    "verify_signature",
]
