"""`query` against a hostile hub and hostile SQL: a sandbox, only verified bytes, no rollback, inert strings.

Attacks, each of which today's main (before the sandbox and the verified filesystem)
let through: SQL that reads the user's files or writes anywhere; envelopes planted
by a co-tenant or signed by an untrusted key; a slide rewritten on the hub after
publishing; a hub that hides the newest version; markup and control characters in
hub strings. On the local-folder hub and on S3 (moto over HTTP, authentication on).
"""

from __future__ import annotations

import json
import secrets
import shutil
import threading
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BUCKET, assert_one_line_error, make_dataset, make_publisher, metadata, rewritten
from sic_share._paths import keys_dir
from sic_share.dataset import write_slide
from sic_share.errors import HubError, VerificationError
from sic_share.hub import BlobCache, publish
from sic_share.query import QueryRefused, connect, run_query, write_parquet
from sic_share.signing import ENVELOPE, MANIFEST, VersionRecord, generate_key, load_private_key, sign_dataset
from sic_share.signing._dsse import sign_envelope

COUNT = "SELECT slide_id, count(*) AS n FROM patches('{ref}') GROUP BY 1 ORDER BY 1"


def grouped(table: pa.Table) -> dict[str, int]:
    return dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))


def data_folder(hub: Path, publisher: str, name: str, version: int) -> Path:
    """The layout-1.1 data folder of a published version on a local hub."""
    (folder,) = [p for p in (hub / publisher / name / str(version)).iterdir() if p.is_dir()]
    return folder


@pytest.fixture
def hub(tmp_path, publisher) -> Path:
    """A local hub with lab-a/crc@1: two slides of 200 patches, signed by a trusted key."""
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name="crc", key_path=publisher.private)
    hub = tmp_path / "hub"
    publish(root, str(hub))
    return hub


# --- the sandbox --------------------------------------------------------------------------------


def escapes(home: Path, tmp_path: Path) -> list[tuple[str, str]]:
    """(SQL, fragment of the refusal) for every way out of the hub that was tried."""
    private, _, _ = generate_key("holder")  # the holder's signing key, under $SIC_SHARE_HOME/config/keys
    assert private.parent == keys_dir() and str(home) in str(private)
    hub_file = "sicverified:///lab-a/crc/1/slides/s0.parquet"
    return [
        ("SELECT * FROM read_text('/etc/passwd')", "reaches outside the hub's verified datasets"),
        (f"SELECT * FROM read_csv('{private}', header=false, sep='|')", "reaches outside"),
        (f"SELECT * FROM read_text('{private}')", "reaches outside"),
        (f"SELECT * FROM glob('{home}/**')", "reaches outside"),
        ("SELECT * FROM glob('/etc/*')", "reaches outside"),
        ("SELECT * FROM read_parquet('memory://hub/x.parquet')", "reaches outside"),
        (f"COPY (SELECT 1) TO '{tmp_path / 'leak.csv'}'", "COPY statements are not allowed"),
        (f"COPY (SELECT 1 AS x) TO '{hub_file}'", "COPY statements are not allowed"),
        (f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp_path / 'leak.csv'}'", "EXPLAIN is allowed only of one SELECT"),
        (f"EXPORT DATABASE '{tmp_path / 'dump'}'", "EXPORT statements are not allowed"),
        (f"ATTACH '{tmp_path / 'other.db'}' AS other", "ATTACH statements are not allowed"),
        ("INSTALL httpfs", "INSTALL and LOAD statements are not allowed"),
        ("LOAD httpfs", "INSTALL and LOAD statements are not allowed"),
        ("SET enable_external_access = true", "SET statements are not allowed"),
        ("RESET lock_configuration", "SET statements are not allowed"),
        ("PRAGMA enable_profiling", "PRAGMA statements are not allowed"),
        ("CALL pragma_version()", "CALL statements are not allowed"),
        ("CREATE TABLE t AS SELECT 1", "CREATE statements are not allowed"),
        ("DROP TABLE datasets", "DROP statements are not allowed"),
        ("SELECT 1; SELECT 2", "holds 2 statements"),
        (f"SELECT 1; COPY (SELECT 1) TO '{tmp_path / 'leak.csv'}'", "holds 2 statements"),
        ("  -- nothing\n", "the query is empty"),
        ("SELEKT 1", "the query does not parse"),
    ]


def test_every_sql_escape_is_refused_in_one_line(hub, home, tmp_path):
    for sql, fragment in escapes(home, tmp_path):
        with pytest.raises(QueryRefused) as info:
            run_query(sql, str(hub))
        message = str(info.value)
        assert fragment in message, (sql, message)
        assert "\n" not in message and "Traceback" not in message, (sql, message)
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "dump").exists()
    assert not (tmp_path / "other.db").exists()
    assert sorted(p.name for p in data_folder(hub, "lab-a", "crc", 1).joinpath("slides").iterdir()) == [
        "s0.parquet", "s0.parquet.blocks", "s1.parquet", "s1.parquet.blocks"]


def test_the_connection_itself_is_sandboxed(hub, tmp_path):
    """Below the statement check, DuckDB's own settings hold: no file, no write (not even into the hub), no SET."""
    con = connect(str(hub))
    slides = data_folder(hub, "lab-a", "crc", 1) / "slides"
    before = {p.name: p.read_bytes() for p in slides.iterdir()}
    attempts = [
        "SELECT * FROM read_text('/etc/passwd')",
        f"COPY (SELECT 1 AS x) TO '{tmp_path / 'leak.parquet'}'",
        f"COPY (SELECT 1 AS x) TO '{slides / 'evil.parquet'}'",  # into the hub folder
        "COPY (SELECT 1 AS x) TO 'sicverified:///lab-a/crc/1/slides/s0.parquet'",  # over a verified file
        "COPY (SELECT 1 AS x) TO 'sicverified:///evil.parquet'",
        f"ATTACH '{tmp_path / 'other.db'}'",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "RESET lock_configuration",
    ]
    for sql in attempts:
        with pytest.raises(duckdb.Error):
            con.sql(sql).fetchall()
    leak = pa.table({"secret": ["from the caller's variables"]})  # noqa: F841 - what a replacement scan would read
    with pytest.raises(duckdb.CatalogException):
        con.sql("SELECT * FROM leak").fetchall()
    assert con.sql("SELECT count(*) FROM patches('lab-a/crc')").fetchall() == [(400,)]
    con.close()
    assert {p.name: p.read_bytes() for p in slides.iterdir()} == before
    assert not (tmp_path / "leak.parquet").exists() and not (tmp_path / "other.db").exists()


def test_read_only_query_forms_run(hub):
    ok = {
        "WITH c AS (SELECT count(*) AS n FROM patches('lab-a/crc')) SELECT n FROM c": [{"n": 400}],
        "FROM datasets SELECT name, version": [{"name": "crc", "version": 1}],
        "/* a comment */ VALUES (1)": [{"col0": 1}],
    }
    for sql, rows in ok.items():
        assert run_query(sql, str(hub)).to_pylist() == rows, sql
    for sql in ("DESCRIBE datasets", "SUMMARIZE SELECT x FROM patches('lab-a/crc')", "SHOW TABLES",
                "EXPLAIN SELECT * FROM datasets", "EXPLAIN ANALYZE SELECT count(*) FROM patches('lab-a/crc')",
                "PIVOT (SELECT slide_id, label FROM patches('lab-a/crc')) ON label IN (0, 1) USING count(*)"):
        assert run_query(sql, str(hub)).num_rows > 0, sql
    with pytest.raises(QueryRefused, match="PIVOT without an IN list"):
        run_query("PIVOT (SELECT slide_id, label FROM patches('lab-a/crc')) ON label USING count(*)", str(hub))


def test_query_cli_refuses_escapes_in_one_line(hub, cli, home, tmp_path):
    assert_one_line_error(cli("query", "SELECT * FROM read_text('/etc/passwd')", "--hub", hub), "reaches outside")
    assert_one_line_error(cli("query", f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", "--hub", hub), "--out")
    assert_one_line_error(cli("query", "SELECT 1; SELECT 2", "--hub", hub), "exactly one")
    assert not (tmp_path / "x.csv").exists()


def test_out_is_written_by_sic_share_atomically_and_concurrent_writes_do_not_collide(tmp_path):
    target = tmp_path / "result.parquet"
    tables = [pa.table({"writer": [i] * 50_000}) for i in range(2)]
    failures = []

    def write(table: pa.Table) -> None:
        try:
            for _ in range(10):
                write_parquet(table, target)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in tables]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert pq.read_table(target) in tables
    assert [p.name for p in tmp_path.iterdir()] == ["result.parquet"]  # no temporary file left


# --- only verified envelopes ------------------------------------------------------------------


def planted_tree(tmp_path: Path, key: Path, *, claims: tuple[str, str, int]) -> Path:
    """A hub-layout version tree (layout 1.1) of a 1-slide, 7-patch dataset claiming ``claims``."""
    publisher, name, version = claims
    root = make_dataset(tmp_path / f"plant-{secrets.token_hex(3)}", slides=1, n=7, seed=99)
    sign_dataset(root, name=name, key_path=key, publisher=publisher, version=version)
    scratch = tmp_path / f"scratch-{secrets.token_hex(3)}"
    publish(root, str(scratch))  # publish checks the signature against the key the manifest names
    return scratch / publisher / name / str(version)


def test_plants_are_ignored_on_a_local_hub(hub, tmp_path):
    """Anyone can write a local hub folder: plants at lab-a/crc/99 and lab-b/crc/99 change nothing."""
    stranger = make_publisher("lab-x", tmp_path / "keys-x", trust=False)
    lab_b = make_publisher("lab-b", tmp_path / "keys-b")
    # an untrusted key's envelope, placed where it claims
    shutil.copytree(planted_tree(tmp_path, stranger.private, claims=("lab-a", "crc", 99)),
                    hub / "lab-a" / "crc" / "99")
    # lab-b's (trusted for lab-b) envelope claiming lab-a/crc@98, placed where it claims
    shutil.copytree(planted_tree(tmp_path, lab_b.private, claims=("lab-a", "crc", 98)),
                    hub / "lab-a" / "crc" / "98")
    # lab-b's envelope claiming lab-a/crc@97, placed under lab-b's own prefix (a co-tenant's plant)
    shutil.copytree(planted_tree(tmp_path, lab_b.private, claims=("lab-a", "crc", 97)),
                    hub / "lab-b" / "crc" / "97")
    assert grouped(run_query(COUNT.format(ref="lab-a/crc"), str(hub))) == {"s0": 200, "s1": 200}
    versions = run_query("SELECT version, trusted FROM datasets ORDER BY version", str(hub)).to_pylist()
    assert versions == [{"version": 1, "trusted": True}]
    for ref in ("lab-a/crc@99", "lab-a/crc@98", "lab-a/crc@97"):
        with pytest.raises(HubError, match=f"no dataset {ref} on the hub"):
            run_query(COUNT.format(ref=ref), str(hub))
    # Asked for, the untrusted ones are listed as such; the misplaced one never; the newest stays lab-a's own.
    every = run_query("SELECT version, trusted FROM datasets ORDER BY version", str(hub), include_untrusted=True)
    assert every.to_pylist() == [{"version": 1, "trusted": True}, {"version": 98, "trusted": False},
                                 {"version": 99, "trusted": False}]
    assert grouped(run_query(COUNT.format(ref="lab-a/crc"), str(hub), include_untrusted=True)) == {
        "s0": 200, "s1": 200}
    assert grouped(run_query(COUNT.format(ref="lab-a/crc@99"), str(hub), include_untrusted=True)) == {"s0": 7}
    with pytest.raises(HubError, match="no dataset lab-a/crc@97"):
        run_query(COUNT.format(ref="lab-a/crc@97"), str(hub), include_untrusted=True)


def s3(dev_hub, user: str):
    """An s3fs filesystem of its own (not sic-share's), as a user of the dev hub."""
    import s3fs

    endpoint, credentials = dev_hub
    key_id, secret = credentials[user]
    return s3fs.S3FileSystem(key=key_id, secret=secret, endpoint_url=endpoint, skip_instance_cache=True,
                             client_kwargs={"region_name": "us-east-1"})


def upload_tree(fs, tree: Path, prefix: str) -> None:
    for path in sorted(tree.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{BUCKET}/{prefix}/{path.relative_to(tree).as_posix()}", path.read_bytes())


def test_a_co_tenant_plant_on_s3_is_ignored(dev_hub, as_user, tmp_path, publisher):
    """lab-b may write only lab-b/ on S3; its envelope there claiming lab-a/NAME@99 is never read."""
    name = f"crc{secrets.token_hex(4)}"
    root = make_dataset(tmp_path / "crc", slides=2, n=120)
    sign_dataset(root, name=name, key_path=publisher.private)
    hub = f"s3://{BUCKET}/"
    publish(root, hub)
    lab_b = make_publisher("lab-b", tmp_path / "keys-b")
    tree = planted_tree(tmp_path, lab_b.private, claims=("lab-a", name, 99))
    upload_tree(s3(dev_hub, "lab-b"), tree, f"lab-b/{name}/99")
    as_user("reader")
    assert grouped(run_query(COUNT.format(ref=f"lab-a/{name}"), hub)) == {"s0": 120, "s1": 120}
    listed = run_query(f"SELECT publisher, version FROM datasets WHERE name = '{name}'", hub, include_untrusted=True)
    assert listed.to_pylist() == [{"publisher": "lab-a", "version": 1}]


# --- only verified bytes ------------------------------------------------------------------------


MODIFIED = ("slides/s0.parquet of lab-a/{ref} does not match its signed digests on the hub: "
            "it was modified after publishing, tell its publisher")


def test_a_slide_rewritten_on_a_local_hub_is_refused(hub, cli):
    slide = data_folder(hub, "lab-a", "crc", 1) / "slides" / "s0.parquet"
    honest = run_query("SELECT sum(x) AS x FROM patches('lab-a/crc')", str(hub)).to_pylist()
    slide.write_bytes(rewritten(slide))
    for sql in ("SELECT sum(x) AS x FROM patches('lab-a/crc')", COUNT.format(ref="lab-a/crc")):
        with pytest.raises(VerificationError) as info:
            run_query(sql, str(hub))
        assert str(info.value) == MODIFIED.format(ref="crc@1")
    assert_one_line_error(cli("query", "SELECT sum(x) FROM patches('lab-a/crc')", "--hub", hub),
                          "slides/s0.parquet of lab-a/crc@1 does not match its signed digests")
    # Its sidecar rewritten to match the new file: the signed root still tells.
    from sic_share._layout import digest_file

    Path(f"{slide}.blocks").write_bytes(digest_file(slide).blocks)
    with pytest.raises(VerificationError, match=r"s0\.parquet\.blocks of lab-a/crc@1 does not match"):
        run_query("SELECT sum(x) FROM patches('lab-a/crc')", str(hub))
    assert honest != [{"x": None}]


def test_a_slide_rewritten_on_s3_is_refused_and_reads_stay_pruned(dev_hub, as_user, tmp_path, publisher):
    name = f"crc{secrets.token_hex(4)}"
    root = make_dataset(tmp_path / "crc", slides=2, n=3000, dim=128)
    sign_dataset(root, name=name, key_path=publisher.private)
    hub = f"s3://{BUCKET}/"
    publish(root, hub)
    as_user("reader")
    assert grouped(run_query(COUNT.format(ref=f"lab-a/{name}"), hub)) == {"s0": 3000, "s1": 3000}
    writer = s3(dev_hub, "lab-a")  # whoever can write the bucket: the publisher's own credentials, an operator
    (key,) = writer.glob(f"{BUCKET}/lab-a/{name}/1/*/slides/s0.parquet")
    writer.pipe_file(key, rewritten(root / "slides" / "s0.parquet"))
    with pytest.raises(VerificationError) as info:
        run_query(f"SELECT sum(x) FROM patches('lab-a/{name}')", hub)
    assert str(info.value) == MODIFIED.format(ref=f"{name}@1")


def format_1_0(root: Path, key: Path) -> None:
    """Re-sign a dataset folder's manifest as format 1.0 (no block digests, no row counts)."""
    statement = json.loads((root / MANIFEST).read_bytes())
    predicate = statement["predicate"]
    predicate.pop("format_minor", None)
    predicate.pop("signer_key", None)
    for entry in predicate["files"]:
        entry.pop("blocks", None)
        entry.pop("rows", None)
    body = (json.dumps(statement, indent=2, sort_keys=True) + "\n").encode()
    (root / MANIFEST).write_bytes(body)
    (root / ENVELOPE).write_bytes(sign_envelope(body, load_private_key(key)))


@pytest.mark.parametrize("manifest_format", ["1.0", "1.1"])
def test_versions_published_in_layout_1_0_are_verified_whole(tmp_path, publisher, manifest_format):
    """Layout 1.0 (``<version>/slides/``, no sidecars): the files are fetched whole, verified, and cached."""
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name="crc", key_path=publisher.private)
    if manifest_format == "1.0":
        format_1_0(root, publisher.private)
    hub = tmp_path / "hub"
    version = hub / "lab-a" / "crc" / "1"
    shutil.copytree(root / "slides", version / "slides")
    for fname in (MANIFEST, ENVELOPE):
        shutil.copy(root / fname, version / fname)
    cache = BlobCache(tmp_path / "cache")
    assert grouped(run_query(COUNT.format(ref="lab-a/crc"), str(hub), cache=cache)) == {"s0": 200, "s1": 200}
    assert len(cache.entries()) == 2
    (version / "slides" / "s1.parquet").write_bytes(rewritten(version / "slides" / "s1.parquet"))
    cache.clear()
    with pytest.raises(VerificationError, match="slides/s1.parquet of lab-a/crc@1 on the hub does not match its "
                                                "signed sha256"):
        run_query("SELECT sum(x) FROM patches('lab-a/crc')", str(hub), cache=cache)


# --- rollback -----------------------------------------------------------------------------------


def test_a_hidden_newest_version_is_refused_unless_allowed(hub, tmp_path, publisher, cli):
    v2 = make_dataset(tmp_path / "crc2", slides=1, n=50, seed=5)
    sign_dataset(v2, name="crc", key_path=publisher.private, version=2)
    publish(v2, str(hub))
    assert grouped(run_query(COUNT.format(ref="lab-a/crc"), str(hub))) == {"s0": 50}
    assert VersionRecord().highest("lab-a", "crc") == 2
    shutil.rmtree(hub / "lab-a" / "crc" / "2")  # the hub hides version 2
    with pytest.raises(VerificationError, match=r"the newest lab-a/crc on the hub is version 1, older "
                                                           r"than version 2, which you saw before \(possible rollback\)"):
        run_query(COUNT.format(ref="lab-a/crc"), str(hub))
    assert_one_line_error(cli("query", COUNT.format(ref="lab-a/crc"), "--hub", hub), "possible rollback",
                          "--allow-rollback")
    assert grouped(run_query(COUNT.format(ref="lab-a/crc"), str(hub), allow_rollback=True)) == {"s0": 200, "s1": 200}
    result = cli("query", COUNT.format(ref="lab-a/crc"), "--hub", hub, "--allow-rollback", "--json")
    assert result.code == 0 and json.loads(result.out) == [{"slide_id": "s0", "n": 200}, {"slide_id": "s1", "n": 200}]
    assert grouped(run_query(COUNT.format(ref="lab-a/crc@1"), str(hub))) == {"s0": 200, "s1": 200}  # named: as asked
    assert VersionRecord().highest("lab-a", "crc") == 2


# --- hostile strings are data -------------------------------------------------------------------


def test_hostile_strings_in_results_are_printed_as_data(tmp_path, publisher, cli):
    evil = "evil[/][bold red]\x1b[2J\x1b]0;pwned\x07\u202e"
    root = tmp_path / "evil"
    coords = np.array([[128, 128], [256, 128]], dtype=np.int32)
    write_slide(root / "slides" / "s0.parquet", slide_id="s0", metadata=metadata(8, model_id=evil),
                coords=coords, embeddings=np.ones((2, 8), dtype=np.float32))
    sign_dataset(root, name="evil", key_path=publisher.private)
    hub = tmp_path / "hub"
    publish(root, str(hub))
    for fmt in ((), ("--csv",), ("--json",)):
        for sql in ("SELECT model FROM datasets", "SELECT '[/]' AS \"[bold]x\", '\x1b[31mred' AS y"):
            result = cli("query", sql, "--hub", hub, *fmt)
            assert result.code == 0, (fmt, sql, result.err)
            assert "\x1b" not in result.out and "\x07" not in result.out and "\u202e" not in result.out, result.out
            assert "[/]" in result.out, (fmt, result.out)
    table = cli("query", "SELECT model FROM datasets", "--hub", hub)
    assert "evil[/][bold red]\\x1b[2J" in table.out, table.out
