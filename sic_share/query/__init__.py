"""SQL over a hub with DuckDB: a ``datasets`` catalog and a ``patches(ref)`` table macro, sandboxed and verified."""

from __future__ import annotations

from sic_share.query._query import QueryRefused, connect, format_result, run_query, write_parquet

__all__ = ["QueryRefused", "connect", "format_result", "run_query", "write_parquet"]
