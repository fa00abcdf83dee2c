"""What a new user sees in the first hour of the command line (issue 21): one key id length
everywhere, messages that name what was typed, ``--json`` where a table is printed, help
examples that copy-paste, errors before heavy imports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, make_dataset, make_publisher, sign_local

SIC_SHARE = str(Path(sys.executable).parent / "sic-share")


# --- key ids: 16 hex characters everywhere, any unique prefix of 4+ in 'trust rm' ---------------


def test_keys_generate_prints_the_key_id_keys_ls_shows(cli, tmp_path, home):
    result = cli("keys", "generate", "--publisher", "lab-k")
    assert result.code == 0, result.err
    fingerprint = result.out.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    assert f"key id:      {fingerprint[:16]}" in result.err
    listed = cli("keys", "ls")
    assert listed.code == 0 and fingerprint[:16] in listed.out and fingerprint[:17] not in listed.out


def test_trust_ls_and_errors_show_16_characters_of_a_key_id(cli, tmp_path):
    lab = make_publisher("lab-t", tmp_path / "keys-t", trust=False)
    added = cli("trust", "add", lab.public, "--publisher", "lab-t")
    assert added.out.strip() == f"trusted {lab.keyid[:16]} for publisher lab-t"
    table = cli("trust", "ls").out
    assert lab.keyid[:16] in table and lab.keyid[:17] not in table
    result = cli("trust", "add", lab.public, "--publisher", "lab-other")
    assert_one_line_error(result, f"key {lab.keyid[:16]} is already trusted", f"'trust rm {lab.keyid[:16]}' first")
    assert lab.keyid[:17] not in result.err


def test_trust_rm_takes_a_unique_prefix_and_says_when_one_is_too_short_or_ambiguous(cli, tmp_path):
    labs = [make_publisher(f"lab-{i}", tmp_path / f"keys-{i}") for i in range(2)]
    short = cli("trust", "rm", labs[0].keyid[:3])
    assert_one_line_error(short, "at least 4 characters")
    result = cli("trust", "rm", labs[0].keyid[:5])
    assert result.code == 0, result.err
    assert result.out.strip() == f"removed {labs[0].keyid[:16]} (lab-0)"
    assert labs[0].keyid not in {k["keyid"] for k in json.loads(cli("trust", "ls", "--json").out)}


def test_trust_rm_refuses_a_prefix_two_keys_share(cli, tmp_path, monkeypatch):
    from sic_share.signing import _trust

    a = make_publisher("lab-a1", tmp_path / "ka")
    b = make_publisher("lab-b1", tmp_path / "kb")
    store = _trust.TrustStore()
    keys = store.keys()
    # Give both keys the same first 8 characters (the store checks only the id's form).
    forged = [k.__class__("abcd1234" + k.keyid[8:], k.publisher, k.public_pem, k.added) for k in keys]
    store._save(forged)
    result = cli("trust", "rm", "abcd12")
    assert_one_line_error(result, "'abcd12' starts 2 trusted key ids", "give more characters")
    assert len(store.keys()) == 2 and a and b


# --- sic: which class is positive, and which method needs what -----------------------------------


def _index_seeds(ds, slide="s0", per_class=3) -> str:
    from sic_share.dataset import read_slide

    data = read_slide(ds / "slides" / f"{slide}.parquet")
    picks = [(i, data.metadata.classes[c]) for c in (0, 1) for i in np.flatnonzero(data.labels == c)[:per_class]]
    return ",".join(f"{i}:{name}" for i, name in picks)


@pytest.fixture
def ds(tmp_path, local_key, trust_local):
    return sign_local(make_dataset(tmp_path / "ds", n=400), local_key)


def test_sic_says_which_class_it_took_as_positive(cli, tmp_path, ds):
    seeds = _index_seeds(ds)
    for order, positive in (("normal,tumour", "tumour"), ("tumour,normal", "normal")):
        result = cli("sic", ds, "--slide", "s0", "--seeds", seeds, "--classes", order, "--out", tmp_path / f"{positive}.csv")
        assert result.code == 0, result.err
        assert f"positive class {positive}, the second of --classes" in result.out
        as_json = cli("sic", ds, "--slide", "s0", "--seeds", seeds, "--classes", order, "--json",
                      "--out", tmp_path / f"{positive}-j.csv")
        assert json.loads(as_json.out)["positive_class"] == positive
    result = cli("sic", ds, "--slide", "s0", "--seeds", seeds, "--out", tmp_path / "default.csv")
    assert result.code == 0 and "positive class tumour, the second of the dataset's classes" in result.out


def test_sic_help_says_the_order_of_classes_matters(cli):
    result = cli("sic", "--help")
    text = " ".join(result.out.split())
    assert "the order matters: the first is the negative (background) class, the second the positive one" in text


def test_seed_errors_name_the_method_that_needs_them(cli, tmp_path, ds):
    from sic_share.dataset import read_slide

    data = read_slide(ds / "slides" / "s0.parquet")
    one_class = ",".join(f"{i}:tumour" for i in np.flatnonzero(data.labels == 1)[:2])
    for method in ("spreading", "sic"):
        result = cli("sic", ds, "--slide", "s0", "--seeds", one_class, "--classes", "normal,tumour",
                     "--method", method, "--out", tmp_path / "o.csv")
        assert_one_line_error(result, f"the {method} method needs both classes", "add at least one seed on 'normal'")
        assert "SIC needs" not in result.err


# --- pull, slides lookup, hub ls, cache ls -------------------------------------------------------


def test_pull_into_an_existing_folder_names_out(cli, tmp_path, signed):
    hub = tmp_path / "hub"
    assert cli("publish", signed, "--hub", hub).code == 0
    dest = tmp_path / "mine"
    dest.mkdir()
    result = cli("pull", "lab-a/crc", "--hub", hub, "--out", dest)
    assert_one_line_error(result, "already exists: choose another --out or remove it")


def test_slides_lookup_of_a_too_short_prefix_says_so(cli, home):
    from sic_share.privacy import SlideMap

    SlideMap().record([("77e0a1b2c3d4e5f6", "biopsy-1", "/slides/biopsy-1.svs")])
    assert_one_line_error(cli("slides", "lookup", "77e"), "'77e' is too short",
                          "a slide id prefix needs at least 4 characters", "1 recorded slide ids start with it")
    found = cli("slides", "lookup", "77e0")
    assert found.code == 0 and "biopsy-1" in found.out
    assert_one_line_error(cli("slides", "lookup", "abc"), "no slide 'abc' in the slide map")


def test_an_empty_hub_ls_says_what_to_do(cli, home):
    result = cli("hub", "ls")
    assert result.code == 0 and result.out == ""
    assert "no named hubs" in result.err and "sic-share hub add NAME URL" in result.err
    assert json.loads(cli("hub", "ls", "--json").out) == []
    assert cli("hub", "add", "lab-s3", "s3://bucket/sic", "--endpoint-url", "http://127.0.0.1:7480").code == 0
    assert json.loads(cli("hub", "ls", "--json").out) == [
        {"name": "lab-s3", "url": "s3://bucket/sic", "endpoint_url": "http://127.0.0.1:7480", "region": None}]


def test_cache_ls_json(cli, tmp_path, signed):
    hub = tmp_path / "hub"
    assert cli("publish", signed, "--hub", hub).code == 0
    assert json.loads(cli("cache", "ls", "--json").out) == []
    assert cli("pull", "lab-a/crc", "--hub", hub, "--out", tmp_path / "p").code == 0
    entries = json.loads(cli("cache", "ls", "--json").out)
    assert entries and all(re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) and e["size"] > 0 for e in entries)
    assert any("s0.parquet" in e["source"] for e in entries), entries


# --- help examples copy-paste; export checks its arguments first ---------------------------------


def _examples():
    import typer

    from sic_share import cli as cli_module

    def walk(command, prefix):
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*prefix, name])
        if not hasattr(command, "commands"):
            for line in (command.help or "").splitlines():
                if line.strip().startswith("Example: "):
                    yield prefix, line.strip()

    return list(walk(typer.main.get_command(cli_module.app), []))


def test_help_examples_stay_on_one_line_at_80_columns():
    examples = _examples()
    assert len(examples) >= 20
    env = {**os.environ, "COLUMNS": "80"}
    long = [(p, e) for p, e in examples if len(e) > 76]
    assert long, "no example is longer than a line: the test would prove nothing"
    for prefix, example in long[:6] + [e for e in examples if e[0] == ["export"]]:
        shown = subprocess.run([SIC_SHARE, *prefix, "--help"], env=env, capture_output=True, text=True).stdout
        assert example in [line.strip() for line in shown.splitlines()], (prefix, example, shown)


def test_export_of_a_missing_file_says_so_at_once(tmp_path):
    started = time.perf_counter()
    run = subprocess.run([SIC_SHARE, "export", str(tmp_path / "nope.svs"), "--out", str(tmp_path / "ds")],
                         env={**os.environ, "SIC_SHARE_HOME": str(tmp_path / "home")}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert run.returncode == 1
    assert run.stderr.strip() == f"error: {tmp_path / 'nope.svs'} does not exist: give slide files or folders holding them"
    assert seconds < 2.5, f"{seconds:.1f} s: the export pipeline (torch) was imported first"


# --- one name for one choice: umap writes its TissUUmaps CSV with --out, as sic does --------------


def test_umap_writes_its_tissuumaps_csv_by_suffix_like_sic(cli, tmp_path, signed):
    png, csv = tmp_path / "map.png", tmp_path / "map.tissuumaps.csv"
    result = cli("umap", signed, "--slide", "s0", "--method", "pca", "--out", png, "--out", csv)
    assert result.code == 0, result.err
    assert png.is_file() and csv.read_text().startswith("x,y,color")
    assert f"wrote {png} and {csv}" in " ".join(result.out.split())
    # the old option still works, unlisted
    old = tmp_path / "old.csv"
    assert cli("umap", signed, "--slide", "s0", "--method", "pca", "--out", tmp_path / "m2.png",
               "--tissuumaps", old).code == 0 and old.is_file()
    assert "--tissuumaps" not in cli("umap", "--help").out
    assert_one_line_error(cli("umap", signed, "--slide", "s0", "--out", tmp_path / "a.png", "--out", tmp_path / "b.png"),
                          "2 .png and 0 .tissuumaps.csv were given", "give one --out FILE.png")


def test_app_takes_method_for_the_map_like_umap_and_to_anndata():
    """The same choice has the same name in app, umap and to-anndata; --projection still works."""
    from typer.testing import CliRunner

    from sic_share.cli import app

    for name in ("app", "umap", "to-anndata"):
        shown = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        assert "--method" in shown, name
    assert "--projection" in CliRunner().invoke(app, ["app", "--help"], env={"COLUMNS": "200"}).output
