"""Interoperability with the tools labs already use (CLAM, TRIDENT, plain numpy)."""

from __future__ import annotations

from sic_share.interop._import import FORMATS, ImportReport, import_embeddings

__all__ = ["FORMATS", "ImportReport", "import_embeddings"]
