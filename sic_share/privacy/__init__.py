"""Privacy by construction: slide pseudonyms and the dataset audit."""

from __future__ import annotations

from sic_share.privacy._audit import Finding, audit_dataset
from sic_share.privacy._pseudonym import holder_secret, pseudonym, source_stem

__all__ = ["Finding", "audit_dataset", "holder_secret", "pseudonym", "source_stem"]
