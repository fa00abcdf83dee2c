"""What SQL ``query`` runs, and the DuckDB settings that keep it inside the hub's verified datasets.

A query is text users paste from papers and colleagues, so it gets a connection that
can read the verified datasets and nothing else:

- exactly one statement, and only a read-only query: ``SELECT`` in all its DuckDB
  forms (``WITH``, ``FROM``-first, ``VALUES``, ``DESCRIBE``, ``SUMMARIZE``,
  ``SHOW``, ``UNPIVOT``) and ``EXPLAIN [ANALYZE]`` of one; everything else
  (``COPY``, ``ATTACH``, ``INSTALL``, ``LOAD``, ``SET``, ``PRAGMA``, ``CALL``,
  ``CREATE``, ``INSERT``, ``EXPORT``, a ``PIVOT`` without an ``IN`` list, which creates a type) is
  refused before DuckDB runs it;
- DuckDB's own sandbox, then locked: external access off, with one allowed
  directory, the ``sicverified:///`` filesystem (:mod:`._verified`), which knows
  only the catalog's signed files and refuses every write; no extension
  auto-loading; no Python replacement scans (a query cannot read the caller's
  variables).
"""

from __future__ import annotations

import re

import duckdb

from sic_share.errors import SicShareError
from sic_share.query._verified import PROTOCOL

__all__ = ["QueryRefused", "lock_down", "check_statement"]

_READ_ONLY = {"SELECT"}
_FIX = {
    "COPY": "use --out FILE.parquet to save a result",
    "EXPORT": "use --out FILE.parquet to save a result",
    "SET": "the query connection's settings are fixed",
    "VARIABLE_SET": "the query connection's settings are fixed",
    "PRAGMA": "the query connection's settings are fixed; SELECT * FROM duckdb_settings() shows them",
    "CALL": "call table functions in a SELECT (SELECT * FROM f())",
    "ATTACH": "read only 'datasets' and patches('publisher/name[@version]')",
    "LOAD": "extensions cannot be loaded or installed here",
    "EXTENSION": "extensions cannot be loaded or installed here",
}
_LABEL = {"LOAD": "INSTALL and LOAD", "EXTENSION": "INSTALL and LOAD"}
# EXPLAIN [ANALYZE] [(options)] <statement>, after leading comments and blanks.
_EXPLAIN = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^()]*\)\s*)?",
                      re.IGNORECASE | re.DOTALL)


class QueryRefused(SicShareError):
    """A query that ``sic-share query`` will not run: not one read-only statement, or it reached outside the hub."""


def check_statement(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """Refuse anything but exactly one read-only query statement; returns its text.

    Raises
    ------
    QueryRefused
        Naming what was refused and what to write instead.
    """
    statements = _parse(con, sql)
    if not statements:
        raise QueryRefused("the query is empty: give one SELECT statement, e.g. SELECT * FROM datasets")
    if len(statements) > 1:
        raise QueryRefused(
            f"the query holds {len(statements)} statements and sic-share query runs exactly one: run them one at a time"
        )
    (statement,) = statements
    kind = statement.type.name
    if kind == "EXPLAIN":
        match = _EXPLAIN.match(statement.query)
        inner = _parse(con, statement.query[match.end():]) if match else []
        if len(inner) == 1 and inner[0].type.name in _READ_ONLY:
            return statement.query
        raise QueryRefused("EXPLAIN is allowed only of one SELECT statement: write EXPLAIN [ANALYZE] SELECT ...")
    if kind == "MULTI":
        raise QueryRefused("a PIVOT without an IN list is not allowed in sic-share query (it creates a type first): "
                           "name the values, PIVOT ... ON col IN (v1, v2)")
    if kind not in _READ_ONLY:
        fix = _FIX.get(kind, "a query only reads: write a SELECT over 'datasets' and patches('publisher/name[@version]')")
        raise QueryRefused(f"{_LABEL.get(kind, kind)} statements are not allowed in sic-share query, which only reads the hub: {fix}")
    return statement.query


def _parse(con: duckdb.DuckDBPyConnection, sql: str) -> list:
    try:
        return con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"the query does not parse ({_first_line(exc)}): fix the SQL") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """Sandbox a connection: only ``sicverified:///`` is reachable, then every setting is locked.

    Facts measured with DuckDB 2.0.1 (the tests check them): external access off
    also blocks registered fsspec filesystems, except under ``allowed_directories``,
    matched on the normalised path (``sicverified:///``, three slashes);
    ``COPY ... TO`` into an allowed directory is still attempted, which the
    verified filesystem refuses; ``INSTALL``/``LOAD`` fail with external access
    off; ``lock_configuration`` refuses every later ``SET``.
    """
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET python_enable_replacements = false")
    con.execute(f"SET allowed_directories = ['{PROTOCOL}:///']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
