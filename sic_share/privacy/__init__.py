"""Privacy by construction: slide pseudonyms."""

from __future__ import annotations

from sic_share.privacy._pseudonym import holder_secret, pseudonym, source_stem

__all__ = ["holder_secret", "pseudonym", "source_stem"]
