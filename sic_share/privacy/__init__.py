"""Privacy by construction: slide pseudonyms, the holder's private slide map, and the dataset audit."""

from __future__ import annotations

from sic_share.privacy._audit import Finding, audit_dataset
from sic_share.privacy._pseudonym import holder_secret, pseudonym, source_stem
from sic_share.privacy._slide_map import SlideEntry, SlideMap

__all__ = ["Finding", "SlideEntry", "SlideMap", "audit_dataset", "holder_secret", "pseudonym", "source_stem"]
