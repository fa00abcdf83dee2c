"""``info`` gives exactly the verdict ``pull`` would, and counts only what was signed."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import hub_data, make_dataset
from sic_share.signing import sign_dataset


@pytest.fixture
def hub(tmp_path):
    return tmp_path / "hub"


def test_a_misplaced_envelope_is_not_trusted_by_info_as_pull_refuses_it(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    shutil.copytree(hub / "lab-a" / "crc" / "1", hub / "lab-a" / "crc" / "7")  # replayed as version 7

    assert cli("pull", "lab-a/crc@7", "--hub", hub, "--to", tmp_path / "x").code == 1
    info = json.loads(cli("info", "lab-a/crc@7", "--hub", hub, "--json").out)
    assert info["trusted"] is False and "misplaced or replayed" in info["trust_note"]
    assert json.loads(cli("info", "lab-a/crc@1", "--hub", hub, "--json").out)["trusted"] is True


def test_a_rolled_back_version_is_not_trusted_by_info(cli, tmp_path, hub, signed, publisher):
    assert cli("publish", signed, "--hub", hub).code == 0
    sign_dataset(signed, name="crc", key_path=publisher.private, version=2)
    assert cli("publish", signed, "--hub", hub).code == 0
    assert cli("pull", "lab-a/crc@2", "--hub", hub, "--to", tmp_path / "v2").code == 0

    assert cli("pull", "lab-a/crc@1", "--hub", hub, "--to", tmp_path / "v1").code == 1
    info = json.loads(cli("info", "lab-a/crc@1", "--hub", hub, "--json").out)
    assert info["trusted"] is False and "older than version 2" in info["trust_note"]


def test_every_hub_read_records_the_version_so_a_hidden_newer_one_is_noticed(cli, tmp_path, hub, signed, publisher):
    """Only 'sic' and 'pull --slides' ever read v2; a hub that then hides v2 is refused, not rolled back."""
    assert cli("publish", signed, "--hub", hub).code == 0
    sign_dataset(signed, name="crc", key_path=publisher.private, version=2)
    assert cli("publish", signed, "--hub", hub).code == 0
    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "one", "--slides", "s0")
    assert result.code == 0, result.err
    shutil.rmtree(hub / "lab-a" / "crc" / "2")  # the hub hides the newest version

    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "again", "--slides", "s0")
    assert result.code == 1 and "older than version 2" in result.err


def test_info_counts_signed_rows_not_the_footers_of_hub_files(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    before = json.loads(cli("info", "lab-a/crc", "--hub", hub, "--json").out)
    # The hub rewrites a slide with another number of rows: info, which reads no data, must not repeat it.
    forged = make_dataset(tmp_path / "forged", slides=2, n=7, seed=3)
    shutil.copy(forged / "slides" / "s0.parquet", hub_data(hub / "lab-a" / "crc" / "1") / "slides" / "s0.parquet")
    after = json.loads(cli("info", "lab-a/crc", "--hub", hub, "--json").out)
    assert [s["patches"] for s in after["slides"]] == [s["patches"] for s in before["slides"]] == [200, 200]
    assert after["n_patches"] == 400


def test_ls_skips_an_oversized_or_broken_envelope_without_reading_it_and_says_so(cli, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    huge = hub / "lab-x" / "huge" / "1" / "manifest.dsse.json"
    huge.parent.mkdir(parents=True)
    with open(huge, "wb") as handle:  # 64 MiB, sparse: costs nothing unless read
        handle.truncate(64 << 20)
    broken = hub / "lab-y" / "bad" / "1" / "manifest.dsse.json"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x1b[31m not an envelope")

    result = cli("ls", "--hub", hub)
    assert result.code == 0, result.err
    assert "lab-a/crc@1" in result.out and "huge" not in result.out
    assert "lab-x/huge/1" in result.err and "more than any sic-share manifest" in result.err
    assert "lab-y/bad/1" in result.err and "\x1b" not in result.err
    assert [e["name"] for e in json.loads(cli("ls", "--hub", hub, "--json").out)] == ["crc"]
