"""SQL over a hub: the ``datasets`` catalog, ``patches(ref)``, trust, and the same answers on S3."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import BUCKET, make_dataset, make_publisher
from sic_share.errors import SicShareError
from sic_share.hub import publish
from sic_share.query import connect, format_result, run_query
from sic_share.signing import sign_dataset


def slide_counts(root: Path) -> dict[str, int]:
    """Patches per slide, read from a dataset folder's Parquet files directly."""
    counts: dict[str, int] = {}
    for path in sorted((root / "slides").glob("*.parquet")):
        ids = pq.read_table(path, columns=["slide_id"]).column("slide_id")
        for entry in pc.value_counts(ids).to_pylist():
            slide_id, n = entry["values"], entry["counts"]
            counts[slide_id] = counts.get(slide_id, 0) + n
    return counts


def grouped(table) -> dict[str, int]:
    return dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))


COUNT = "SELECT slide_id, count(*) AS n FROM patches('{ref}') GROUP BY 1 ORDER BY 1"


@pytest.fixture
def hub_with_two(tmp_path, publisher) -> tuple[Path, dict[str, Path]]:
    """A folder hub with lab-a/crc@1 (2 x 200), lab-a/crc@2 (3 x 50) and an untrusted lab-x/lung@1."""
    hub = tmp_path / "hub"
    v1 = make_dataset(tmp_path / "crc1")
    sign_dataset(v1, name="crc", key_path=publisher.private)
    v2 = make_dataset(tmp_path / "crc2", slides=3, n=50, seed=7)
    sign_dataset(v2, name="crc", key_path=publisher.private, version=2)
    stranger = make_publisher("lab-x", tmp_path / "keys-lab-x", trust=False)
    lung = make_dataset(tmp_path / "lung", slides=1, n=30)
    sign_dataset(lung, name="lung", key_path=stranger.private)
    for root in (v1, v2, lung):
        publish(root, str(hub))
    return hub, {"lab-a/crc@1": v1, "lab-a/crc@2": v2, "lab-x/lung@1": lung}


def test_datasets_lists_trusted_versions_and_untrusted_only_when_asked(hub_with_two):
    hub, _ = hub_with_two
    sql = "SELECT publisher, name, version, model, dim, slides, patches, trusted, url FROM datasets"
    rows = run_query(sql, str(hub)).to_pylist()
    got = {(r["publisher"], r["name"], r["version"]): r for r in rows}
    assert set(got) == {("lab-a", "crc", 1), ("lab-a", "crc", 2)}
    assert got["lab-a", "crc", 1]["trusted"] is True and got["lab-a", "crc", 2]["trusted"] is True
    assert (got["lab-a", "crc", 1]["slides"], got["lab-a", "crc", 1]["patches"]) == (2, 400)
    assert got["lab-a", "crc", 1]["model"] == "test-model" and got["lab-a", "crc", 1]["dim"] == 16
    assert Path(got["lab-a", "crc", 2]["url"]) == hub / "lab-a" / "crc" / "2"
    every = {(r["publisher"], r["name"], r["version"]): r["trusted"]
             for r in run_query(sql, str(hub), include_untrusted=True).to_pylist()}
    assert every == {("lab-a", "crc", 1): True, ("lab-a", "crc", 2): True, ("lab-x", "lung", 1): False}


def test_patches_counts_match_the_parquet_files_and_version_selects(hub_with_two):
    hub, roots = hub_with_two
    newest = grouped(run_query(COUNT.format(ref="lab-a/crc"), str(hub)))
    assert newest == slide_counts(roots["lab-a/crc@2"]) == {"s0": 50, "s1": 50, "s2": 50}
    first = grouped(run_query(COUNT.format(ref="lab-a/crc@1"), str(hub)))
    assert first == slide_counts(roots["lab-a/crc@1"]) == {"s0": 200, "s1": 200}


def test_patches_reads_only_that_versions_files_and_columns(hub_with_two):
    hub, _ = hub_with_two
    con = connect(str(hub))
    plan = "\n".join(row[1] for row in con.sql(
        f"EXPLAIN ANALYZE {COUNT.format(ref='lab-a/crc@1')}").fetchall())
    con.close()
    assert "Total Files Read: 2" in plan, plan
    assert "crc/2" not in plan and "lung" not in plan


def test_embedding_is_a_float_list_of_dim(hub_with_two):
    hub, _ = hub_with_two
    table = run_query("SELECT DISTINCT len(embedding) AS d, typeof(embedding) AS t FROM patches('lab-a/crc@1')",
                      str(hub))
    assert table.to_pylist() == [{"d": 16, "t": "FLOAT[]"}]


def test_untrusted_is_read_only_when_asked(hub_with_two):
    hub, _ = hub_with_two
    with pytest.raises(SicShareError, match="no dataset lab-x/lung on the hub: see SELECT . FROM datasets for the trusted"):
        run_query(COUNT.format(ref="lab-x/lung"), str(hub))
    assert grouped(run_query(COUNT.format(ref="lab-x/lung"), str(hub), include_untrusted=True)) == {"s0": 30}


def test_unknown_ref_is_one_clear_error(hub_with_two):
    hub, _ = hub_with_two
    with pytest.raises(SicShareError, match="no dataset lab-a/crc@9 on the hub"):
        run_query(COUNT.format(ref="lab-a/crc@9"), str(hub))


def test_format_result(hub_with_two):
    hub, _ = hub_with_two
    table = run_query(COUNT.format(ref="lab-a/crc@1"), str(hub))
    assert format_result(table, "csv").splitlines() == ['"slide_id","n"', '"s0",200', '"s1",200']
    assert json.loads(format_result(table, "json")) == [{"slide_id": "s0", "n": 200}, {"slide_id": "s1", "n": 200}]
    with pytest.raises(ValueError, match="fmt='xml'"):
        format_result(table, "xml")


# --- the same over S3 (moto with authentication enforced) -------------------------------------

# dev_hub and as_user (conftest) skip themselves where moto or s3fs is missing.


def test_s3_hub_gives_the_same_counts(as_user, tmp_path, publisher):
    name = f"crc{secrets.token_hex(4)}"
    root = make_dataset(tmp_path / "crc", slides=2, n=120)
    sign_dataset(root, name=name, key_path=publisher.private)
    hub = f"s3://{BUCKET}/"
    publish(root, hub)
    as_user("reader")
    counts = grouped(run_query(COUNT.format(ref=f"lab-a/{name}"), hub))
    assert counts == slide_counts(root) == {"s0": 120, "s1": 120}
    url = run_query(f"SELECT url FROM datasets WHERE name = '{name}'", hub).column("url").to_pylist()
    assert url == [f"s3://{BUCKET}/lab-a/{name}/1"]


def test_s3_query_reads_only_the_columns_it_needs(as_user, tmp_path, publisher, monkeypatch):
    """Column pruning survives verification: the footer and one column's blocks, not the file."""
    import s3fs

    name = f"crc{secrets.token_hex(4)}"
    root = make_dataset(tmp_path / "crc", slides=1, n=2000, dim=256)
    sign_dataset(root, name=name, key_path=publisher.private)
    hub = f"s3://{BUCKET}/"
    publish(root, hub)
    as_user("reader")  # a publisher may list only its own prefix once others have published (they may have)
    fetched = []
    real = s3fs.S3FileSystem._cat_file

    async def counting(self, path, *args, start=None, end=None, **kwargs):
        data = await real(self, path, *args, start=start, end=end, **kwargs)
        if "/slides/" in path:
            fetched.append(len(data))
        return data

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counting)
    con = connect(hub)
    assert con.sql(f"SELECT count(DISTINCT slide_id) FROM patches('lab-a/{name}')").fetchall() == [(1,)]
    con.close()
    size = (root / "slides" / "s0.parquet").stat().st_size
    assert 0 < sum(fetched) < size / 4, (fetched, size)


def test_query_cli_formats_and_errors(tmp_path, cli, home):
    """`sic-share query` prints JSON, writes Parquet atomically, and refuses bad paths in one line."""
    from conftest import assert_one_line_error, make_dataset, make_publisher
    from sic_share.signing import sign_dataset

    hub = tmp_path / "hub"
    lab = make_publisher("lab-q", tmp_path / "keys-q")
    root = make_dataset(tmp_path / "qds")
    sign_dataset(root, name="qds", key_path=lab.private)
    assert cli("publish", root, "--hub", hub).code == 0
    result = cli("query", "SELECT count(*) AS n FROM patches('lab-q/qds')", "--hub", hub, "--json")
    assert result.code == 0, result.err
    assert '"n"' in result.out and "400" in result.out
    written = cli("query", "SELECT slide_id FROM patches('lab-q/qds')", "--hub", hub, "--parquet", tmp_path / "r.parquet")
    assert written.code == 0 and (tmp_path / "r.parquet").exists()
    again = cli("query", "SELECT slide_id FROM patches('lab-q/qds')", "--hub", hub, "--out", tmp_path / "o.parquet")
    assert again.code == 0 and (tmp_path / "o.parquet").read_bytes() == (tmp_path / "r.parquet").read_bytes()
    assert_one_line_error(cli("query", "SELECT 1", "--hub", hub, "--parquet", tmp_path / "no" / "r.parquet"),
                          "does not exist")
    assert_one_line_error(cli("query", "SELECT * FROM patches('lab-q/nope')", "--hub", hub), "lab-q/nope")
