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
