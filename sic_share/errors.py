"""Domain errors: each one is a single sentence a user can act on.

The CLI prints ``str(error)`` as one red line and exits with code 1; the library
never prints.
"""

from __future__ import annotations

__all__ = [
    "SicShareError",
    "DatasetError",
    "VerificationError",
    "TrustError",
    "HubError",
    "AlreadyPublishedError",
    "ImportDataError",
    "SlideError",
    "EncoderError",
    "LabelError",
    "SeedError",
    "PretrainError",
]


class SicShareError(Exception):
    """Base class of every error meant for the user."""


class DatasetError(SicShareError):
    """A dataset folder or Parquet file is malformed."""


class VerificationError(SicShareError):
    """A dataset does not verify: signature, digest, size, freshness or listing."""


class TrustError(VerificationError):
    """A key is unknown, untrusted, or trusted for another publisher."""


class HubError(SicShareError):
    """A hub cannot be reached, or holds no such dataset."""


class AlreadyPublishedError(HubError):
    """A dataset version exists on the hub and versions are immutable."""


class ImportDataError(SicShareError):
    """Embeddings made by another tool cannot be imported as they are."""


class SlideError(SicShareError):
    """A slide cannot be opened or read, or lacks what export needs (e.g. µm/px)."""


class EncoderError(SicShareError):
    """A model name, weights file or device cannot be used."""


class LabelError(SicShareError):
    """Ground-truth masks or annotations do not fit their slide."""


class SeedError(SicShareError, ValueError):
    """Seeds for SIC are unusable: unreadable, off the slide, of unknown or too few classes."""


class PretrainError(SicShareError):
    """SimCLR pretraining cannot start or resume: no patches, a batch too large, an unusable checkpoint."""
