"""SQL over a hub: DuckDB reads the signed catalog and only verified bytes of the slides' Parquet.

``connect(hub)`` gives an in-memory, sandboxed DuckDB connection with

- ``datasets``: one row per usable published version (publisher, name, version,
  model, dim, slides, patches, created, trusted, url), read from the envelopes;
- ``patches(ref)``: a table macro over one version's slide files, where ``ref`` is
  ``'publisher/name'`` (the newest trusted version) or ``'publisher/name@version'``.

Example::

    SELECT slide_id, count(*) FROM patches('lab-a/crc@3') GROUP BY 1
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import fsspec
import pyarrow as pa

from sic_share._fsutil import is_local
from sic_share.errors import HubError, SicShareError, VerificationError
from sic_share.hub._cache import BlobCache
from sic_share.hub._hub import _open_hub, iter_published
from sic_share.query._sandbox import QueryRefused, _first_line, check_statement, lock_down
from sic_share.query._verified import VerifiedFileSystem, version_files
from sic_share.signing import Manifest, TrustStore, VersionRecord

__all__ = ["QueryRefused", "connect", "format_result", "run_query", "write_parquet"]


_UNKNOWN = re.compile(r"no dataset .* on the hub: see SELECT \* FROM datasets for the .*$")


@dataclass(frozen=True)
class _Version:
    manifest: Manifest
    trusted: bool
    url: str  # the version folder's hub URL (shown in ``datasets``)
    files: tuple[str, ...]  # the slide files' URLs in the verified filesystem


def _catalog(fs: fsspec.AbstractFileSystem, base: str, url: str, trust: TrustStore, vfs: VerifiedFileSystem,
             include_untrusted: bool) -> list[_Version]:
    """The versions a query may read: placed where they claim, trusted (or untrusted when asked)."""
    versions = []
    for manifest, trusted, folder in iter_published(fs, base, url, trust):
        placed = tuple(folder.rstrip("/").split("/")[-3:]) == (manifest.publisher, manifest.name, str(manifest.version))
        if not placed or not (trusted or include_untrusted):
            continue  # a misplaced or replayed envelope is never used, an untrusted one only when asked
        files = tuple(vfs.add(path, entry) for path, entry in version_files(manifest, folder))
        shown = folder if is_local(fs) else fs.unstrip_protocol(folder)
        versions.append(_Version(manifest, trusted, shown, files))
    return versions


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _resolve(versions: list[_Version], record: VersionRecord, allow_rollback: bool
             ) -> tuple[dict[str, _Version], dict[str, str]]:
    """Refs to versions (``pub/name@v`` each; ``pub/name`` the newest trusted, else the newest untrusted),
    and refs refused with why (a rollback)."""
    refs: dict[str, _Version] = {}
    newest: dict[tuple[str, str], _Version] = {}
    for v in versions:
        m = v.manifest
        refs[m.ref] = v
        best = newest.get((m.publisher, m.name))
        if best is None or (v.trusted, m.version) > (best.trusted, best.manifest.version):
            newest[(m.publisher, m.name)] = v
    refused: dict[str, str] = {}
    for (publisher, name), v in newest.items():
        ref = f"{publisher}/{name}"
        if v.trusted:
            seen = record.highest(publisher, name)
            if v.manifest.version < seen and not allow_rollback:
                refused[ref] = (
                    f"the newest {ref} on the hub is version {v.manifest.version}, older than version {seen}, which "
                    f"you saw before (possible rollback): ask the hub's operator, name a version "
                    f"(patches('{ref}@{v.manifest.version}')) or pass --allow-rollback"
                )
                continue
            record.record(publisher, name, v.manifest.version)
        refs[ref] = v
    return refs, refused


def _map(entries: dict[str, str]) -> str:
    items = ", ".join(f"{_sql_string(k)}: {v}" for k, v in sorted(entries.items()))
    return "MAP {" + items + "}" if items else "MAP()"


def _field(predicate: dict[str, Any], section: str, key: str, default: Any) -> Any:
    block = predicate.get(section)
    return block.get(key, default) if isinstance(block, dict) else default


def _count(value: Any) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62
    return value if ok else 0


def _datasets(versions: list[_Version]) -> pa.Table:
    rows = []
    for v in versions:
        p = v.manifest.predicate
        rows.append({
            "publisher": v.manifest.publisher, "name": v.manifest.name, "version": v.manifest.version,
            "model": str(_field(p, "model", "id", "?")), "dim": _count(_field(p, "model", "dim", 0)),
            "slides": _count(_field(p, "counts", "slides", 0)), "patches": _count(_field(p, "counts", "patches", 0)),
            "created": str(p.get("created", "")), "trusted": v.trusted, "url": v.url,
        })
    schema = pa.schema([("publisher", pa.string()), ("name", pa.string()), ("version", pa.int64()),
                        ("model", pa.string()), ("dim", pa.int64()), ("slides", pa.int64()),
                        ("patches", pa.int64()), ("created", pa.string()), ("trusted", pa.bool_()),
                        ("url", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def _connect(hub: str | None, *, include_untrusted: bool, allow_rollback: bool, trust: TrustStore | None,
             record: VersionRecord | None, cache: BlobCache | None
             ) -> tuple[duckdb.DuckDBPyConnection, VerifiedFileSystem, dict[str, str]]:
    fs, base, url = _open_hub(hub)
    vfs = VerifiedFileSystem(fs, url, cache=cache)
    versions = _catalog(fs, base, url, trust or TrustStore(), vfs, include_untrusted)
    refs, refused = _resolve(versions, record or VersionRecord(), allow_rollback)
    con = duckdb.connect(":memory:")
    try:
        con.register_filesystem(vfs)
        # DuckDB 2.0's external file cache fetches a small file whole, and again on each open (fsspec
        # gives it no ETag to validate against); without it a query reads the footer and the chunks
        # of the columns it uses. The verified filesystem keeps the blocks it checked for re-reads.
        con.execute("SET enable_external_file_cache = false")
        con.execute("SET parquet_metadata_cache = true")
        con.register("_catalog", _datasets(versions))
        con.execute("CREATE TABLE datasets AS SELECT * FROM _catalog ORDER BY publisher, name, version")
        con.unregister("_catalog")
        files = {ref: "[" + ", ".join(map(_sql_string, v.files)) + "]::VARCHAR[]" for ref, v in refs.items()}
        reasons = {ref: _sql_string(why) for ref, why in refused.items()}
        known = "datasets you may read" if include_untrusted else "trusted datasets"
        con.execute(
            "CREATE MACRO patches(ref) AS TABLE SELECT * FROM read_parquet(coalesce("
            f"({_map(files)}::MAP(VARCHAR, VARCHAR[]))[ref], error(coalesce(({_map(reasons)}::MAP(VARCHAR, VARCHAR))"
            f"[ref], 'no dataset ' || ref || ' on the hub: see SELECT * FROM datasets for the {known}'))))"
        )
        lock_down(con)
    except BaseException:
        con.close()
        raise
    return con, vfs, refused


def connect(hub: str | None = None, *, include_untrusted: bool = False, allow_rollback: bool = False,
            trust: TrustStore | None = None, record: VersionRecord | None = None,
            cache: BlobCache | None = None) -> duckdb.DuckDBPyConnection:
    """A sandboxed in-memory DuckDB connection with ``datasets`` and ``patches(ref)`` over a hub.

    Parameters
    ----------
    hub : str, optional
        A configured hub name, a URL (``s3://bucket/prefix``) or a folder;
        defaults to ``$SIC_SHARE_HUB`` or the local default hub.
    include_untrusted : bool, default False
        Also use versions whose envelope does not verify with a key trusted for
        its publisher (or has expired), marked ``trusted = false`` in ``datasets``;
        their bytes are still checked against their own manifest. Envelopes that
        do not sit under the publisher/name/version they claim (misplaced,
        replayed, planted by a co-tenant) are never used.
    allow_rollback : bool, default False
        Let ``patches('publisher/name')`` read a newest version older than one
        seen before.
    trust : TrustStore, optional
        Defaults to the user's trust store.
    record : VersionRecord, optional
        The highest version seen per dataset; defaults to the user's.
    cache : BlobCache, optional
        Where files of format-1.0 versions are fetched whole; defaults to the user's.

    Returns
    -------
    duckdb.DuckDBPyConnection
        Use it from one thread only (DuckDB's fsspec bridge has had races).
        :func:`run_query` also checks the statement (one read-only query) and
        turns errors into one line; the connection itself is sandboxed either way.

    Notes
    -----
    The catalog is read once, when connecting; versions published later are not
    seen by this connection. For each trusted dataset the newest version is
    recorded (``verified.json``, as ``pull`` does); a hub whose newest is older
    than recorded makes ``patches('publisher/name')`` refuse. A named version
    (``patches('lab-a/crc@2')``) is read as asked.

    ``patches(ref)`` expands to ``read_parquet(<the version's files>)`` in the
    verified filesystem (:mod:`sic_share.query._verified`): the ref is looked up in
    a constant map, which DuckDB folds at bind time, so only that version's files
    are opened and only the columns a query uses are read, each read widened to
    16 KiB blocks and checked against the signed per-block digests (format 1.1), or
    served from a whole-file verified copy in the cache (1.0). A byte that differs
    from what was signed fails the query with one line naming the file.

    The connection is sandboxed (:mod:`sic_share.query._sandbox`): no local files,
    no writes, no extensions, settings locked. The embedding column is
    ``FLOAT[]``; cast it to ``FLOAT[dim]`` for DuckDB's array functions.
    """
    con, _, _ = _connect(hub, include_untrusted=include_untrusted, allow_rollback=allow_rollback, trust=trust,
                      record=record, cache=cache)
    return con


def run_query(sql: str, hub: str | None = None, *, include_untrusted: bool = False, allow_rollback: bool = False,
              trust: TrustStore | None = None, record: VersionRecord | None = None,
              cache: BlobCache | None = None) -> pa.Table:
    """Run one read-only statement against a hub (see :func:`connect`); the result as an Arrow table.

    Raises
    ------
    QueryRefused
        For anything but exactly one read-only query, or a query that reaches
        outside the hub's verified datasets.
    VerificationError
        When a byte the query reads does not match the signed digests.
    SicShareError
        For any other DuckDB error (its first line).
    """
    con, vfs, refused = _connect(hub, include_untrusted=include_untrusted, allow_rollback=allow_rollback, trust=trust,
                        record=record, cache=cache)
    try:
        statement = check_statement(con, sql)
        result = con.sql(statement)
        if result is None:  # cannot happen for a SELECT; kept for safety
            return pa.table({})
        # to_arrow_table() since DuckDB 1.4; fetch_arrow_table() before (deprecated in 2.0).
        return result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.fetch_arrow_table()
    except duckdb.Error as exc:
        if isinstance(vfs.failure, SicShareError):
            raise vfs.failure from None
        if isinstance(exc, duckdb.PermissionException):
            raise QueryRefused(
                f"the query reaches outside the hub's verified datasets ({_first_line(exc).split(': ', 1)[-1]}): "
                "read only 'datasets' and patches('publisher/name[@version]')"
            ) from None
        line = _first_line(exc)
        for why in refused.values():  # patches() refused a ref: the macro's error() carries the sentence
            if why in line:
                raise VerificationError(why) from None
        unknown = _UNKNOWN.search(line)
        if unknown:
            raise HubError(unknown.group()) from None
        raise SicShareError(line) from None
    finally:
        con.close()


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write a result to ``path`` atomically: a unique temporary name beside it, then a rename.

    Two writers of the same path never share a temporary file; the last rename wins
    and a reader sees either the old file or a whole new one.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.parent.is_dir():
        raise SicShareError(f"folder {path.parent} does not exist: create it or choose another --out path")
    if path.is_dir():
        raise SicShareError(f"{path} is a folder: give a file name for --out, e.g. {path / 'result.parquet'}")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def format_result(table: pa.Table, fmt: str) -> str:
    """Render a query result as ``csv`` or ``json`` (a list of row objects) text."""
    if fmt == "csv":
        import pyarrow.csv as pacsv

        out = io.BytesIO()
        pacsv.write_csv(table, out)
        return out.getvalue().decode()
    if fmt == "json":
        return json.dumps(table.to_pylist(), default=str, indent=2)
    raise ValueError(f"fmt={fmt!r} should be one of ('csv', 'json'); write Parquet with write_parquet")
