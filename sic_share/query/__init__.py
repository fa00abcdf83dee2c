"""SQL over a hub with DuckDB: a ``datasets`` catalog and a ``patches(ref)`` table macro."""

from __future__ import annotations

from sic_share.query._query import connect, format_result, run_query

__all__ = ["connect", "format_result", "run_query"]
