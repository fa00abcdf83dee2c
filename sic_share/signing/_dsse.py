"""DSSE envelopes (https://github.com/secure-systems-lab/dsse) signed with Ed25519."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sic_share.errors import VerificationError
from sic_share.signing._keys import key_id

__all__ = ["IN_TOTO_PAYLOAD_TYPE", "MAX_ENVELOPE_BYTES", "pae", "sign_envelope", "open_envelope", "signature_verifies"]

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: The largest envelope any reader accepts: 16 MiB holds the manifest of about 35,000 slides.
MAX_ENVELOPE_BYTES = 16 << 20


def pae(payload_type: str, body: bytes) -> bytes:
    """Pre-authentication encoding: ``"DSSEv1" SP len(type) SP type SP len(body) SP body``.

    Lengths are the byte lengths in ASCII decimal. The signature covers this,
    never the raw payload, so a payload cannot be replayed under another type.
    """
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def sign_envelope(body: bytes, private_key: Ed25519PrivateKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    """Return the JSON bytes of a DSSE envelope over ``body``."""
    public = private_key.public_key()
    envelope = {
        "payloadType": payload_type,
        "payload": base64.b64encode(body).decode(),
        "signatures": [
            {"keyid": key_id(public), "sig": base64.b64encode(private_key.sign(pae(payload_type, body))).decode()}
        ],
    }
    return (json.dumps(envelope, indent=2) + "\n").encode()


def _b64decode(text: Any) -> bytes:
    """Decode standard or URL-safe base64, with or without padding."""
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def open_envelope(raw: bytes, where: str) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """Parse an envelope into ``(payload_type, body, [(keyid, sig), ...])``, checking only its shape."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise VerificationError(
            f"{where} is larger than {MAX_ENVELOPE_BYTES >> 20} MiB ({len(raw)} bytes): no sic-share manifest is, "
            "do not use it"
        )
    try:
        envelope = json.loads(raw)
        payload_type = envelope["payloadType"]
        body = _b64decode(envelope["payload"])
        signatures = [(str(s.get("keyid", "")), _b64decode(s["sig"])) for s in envelope["signatures"]]
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise VerificationError(f"{where} is not a valid DSSE envelope ({exc}): pull the dataset again") from None
    except RecursionError:
        raise VerificationError(f"{where} is not a valid DSSE envelope (nested too deeply): pull the dataset again") from None
    if not isinstance(payload_type, str) or not signatures:
        raise VerificationError(f"{where} has no payload type or no signature: pull the dataset again")
    return payload_type, body, signatures


def signature_verifies(public_key: Ed25519PublicKey, payload_type: str, body: bytes, sig: bytes) -> bool:
    """Whether ``sig`` is ``public_key``'s signature over ``PAE(payload_type, body)``."""
    try:
        public_key.verify(sig, pae(payload_type, body))
    except InvalidSignature:
        return False
    return True
