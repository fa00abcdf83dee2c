"""The hub on a local folder: publish, list, pull, and everything a hub may get wrong.

The hub here is a plain folder (``--hub tmp_path/hub``), or the default one under
``$SIC_SHARE_HOME`` when no hub is named; the S3 path is tested elsewhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line_error, hub_data, make_dataset, make_publisher
from sic_share.hub import list_datasets
from sic_share.signing import ENVELOPE, MANIFEST, load_private_key, sign_dataset, sign_envelope


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its bytes."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def table_row(text: str, ref: str) -> list[str]:
    """The cells of the row of ``sic-share ls`` that names ``ref``."""
    line = next(line for line in text.splitlines() if ref in line)
    return [cell.strip() for cell in line.split("\u2502") if cell.strip()]


def leftovers(parent: Path) -> list[str]:
    """Hidden partial downloads left beside a destination."""
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name) if parent.exists() else []


@pytest.fixture
def hub(tmp_path) -> Path:
    return tmp_path / "hub"


# --- the happy path ---------------------------------------------------------------------------


def test_publish_ls_pull_round_trip(cli, tmp_path, hub, signed):
    result = cli("publish", signed, "--hub", hub)
    assert result.code == 0, result.err
    assert "lab-a/crc/1" in result.out
    version_dir = hub / "lab-a" / "crc" / "1"
    assert (version_dir / ENVELOPE).read_bytes() == (signed / ENVELOPE).read_bytes()
    assert (hub_data(version_dir) / MANIFEST).read_bytes() == (signed / MANIFEST).read_bytes()

    listing = cli("ls", "--hub", hub)
    assert listing.code == 0, listing.err
    row = table_row(listing.out, "lab-a/crc@1")
    assert row[0] == "lab-a/crc@1" and row[1] == "test-model" and row[-1] == "yes"

    entries = json.loads(cli("ls", "--hub", hub, "--json").out)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["publisher"], entry["name"], entry["version"]) == ("lab-a", "crc", 1)
    assert entry["model"] == "test-model" and entry["dim"] == 16
    assert (entry["slides"], entry["patches"]) == (2, 400)
    assert entry["trusted"] is True

    dest = tmp_path / "pulled" / "crc"
    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", dest)
    assert result.code == 0, result.err
    assert "lab-a/crc@1" in result.out
    assert snapshot(dest) == snapshot(signed)
    verified = cli("verify", dest)
    assert verified.code == 0, verified.err
    assert leftovers(dest.parent) == []


def test_pull_without_to_lands_in_the_working_folder(cli, tmp_path, hub, signed, monkeypatch):
    assert cli("publish", signed, "--hub", hub).code == 0
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = cli("pull", "lab-a/crc", "--hub", hub)
    assert result.code == 0, result.err
    assert (work / "crc-v1" / "slides" / "s0.parquet").read_bytes() == (signed / "slides" / "s0.parquet").read_bytes()


def test_default_hub_lives_under_sic_share_home(cli, tmp_path, home, signed):
    result = cli("publish", signed)
    assert result.code == 0, result.err
    assert (home / "data" / "hub" / "lab-a" / "crc" / "1" / ENVELOPE).exists()

    listing = cli("ls")
    assert listing.code == 0 and "lab-a/crc@1" in listing.out
    dest = tmp_path / "pulled"
    assert cli("pull", "lab-a/crc", "--to", dest).code == 0
    assert cli("verify", dest).code == 0


def test_sic_share_hub_names_the_default_hub(cli, tmp_path, home, signed, monkeypatch):
    elsewhere = tmp_path / "env-hub"
    monkeypatch.setenv("SIC_SHARE_HUB", str(elsewhere))
    assert cli("publish", signed).code == 0
    assert (elsewhere / "lab-a" / "crc" / "1" / ENVELOPE).exists()
    assert not (home / "data" / "hub").exists()
    assert "lab-a/crc@1" in cli("ls").out


def test_ls_of_an_empty_hub_lists_nothing(cli, hub):
    hub.mkdir()  # an empty hub is an empty folder; a folder that does not exist is an error
    result = cli("ls", "--hub", hub, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == []


# --- immutability and commit-last --------------------------------------------------------------


def test_publishing_a_published_version_again_changes_nothing(cli, tmp_path, hub, signed, publisher):
    assert cli("publish", signed, "--hub", hub).code == 0
    before = snapshot(hub)

    assert_one_line_error(cli("publish", signed, "--hub", hub), "already published", "--version 2")
    assert snapshot(hub) == before

    # Even a different dataset signed with the same version number cannot replace it.
    make_dataset(signed, slides=3, seed=11)
    sign_dataset(signed, name="crc", key_path=publisher.private, version=1)
    assert_one_line_error(cli("publish", signed, "--hub", hub), "already published")
    assert snapshot(hub) == before


def test_an_interrupted_publish_is_invisible_and_re_publish_completes_it(cli, tmp_path, hub, signed):
    version_dir = hub / "lab-a" / "crc" / "1"
    shutil.copytree(signed / "slides", version_dir / "slides")
    shutil.copy(signed / MANIFEST, version_dir / MANIFEST)  # no envelope: the upload stopped here

    assert json.loads(cli("ls", "--hub", hub, "--json").out) == []
    assert "crc" not in cli("ls", "--hub", hub).out
    dest = tmp_path / "pulled"
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--to", dest), "no dataset lab-a/crc")
    assert_one_line_error(cli("pull", "lab-a/crc@1", "--hub", hub, "--to", dest), "no dataset lab-a/crc")
    assert not dest.exists()

    result = cli("publish", signed, "--hub", hub)
    assert result.code == 0, result.err
    assert [e["version"] for e in json.loads(cli("ls", "--hub", hub, "--json").out)] == [1]
    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", dest)
    assert result.code == 0, result.err
    assert snapshot(dest) == snapshot(signed)


def test_publish_refuses_a_dataset_modified_after_signing(cli, hub, signed):
    flip_byte(signed / "slides" / "s1.parquet")
    assert_one_line_error(cli("publish", signed, "--hub", hub), "slides/s1.parquet")
    hub.mkdir(exist_ok=True)
    assert json.loads(cli("ls", "--hub", hub, "--json").out) == []
    assert snapshot(hub) == {}


def test_publish_refuses_an_unsigned_dataset(cli, tmp_path, hub):
    root = make_dataset(tmp_path / "crc")
    assert_one_line_error(cli("publish", root, "--hub", hub), "not signed", "sic-share sign")
    assert snapshot(hub) == {}


def test_publish_refuses_a_manifest_edited_after_signing(cli, hub, signed):
    statement = json.loads((signed / MANIFEST).read_bytes())
    statement["predicate"]["counts"]["patches"] = 1
    (signed / MANIFEST).write_text(json.dumps(statement, indent=2, sort_keys=True) + "\n")
    assert_one_line_error(cli("publish", signed, "--hub", hub), "manifest.json")
    assert snapshot(hub) == {}


# --- pull refuses what it cannot verify, and leaves nothing behind ------------------------------


def test_pull_of_a_file_tampered_on_the_hub_leaves_nothing(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    flip_byte(hub_data(hub / "lab-a" / "crc" / "1") / "slides" / "s0.parquet")
    parent = tmp_path / "downloads"
    parent.mkdir()
    dest = parent / "crc"

    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", dest)
    assert_one_line_error(result, "slides/s0.parquet")
    assert not dest.exists()
    assert list(parent.iterdir()) == []


def test_pull_of_a_file_missing_on_the_hub_leaves_nothing(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    (hub_data(hub / "lab-a" / "crc" / "1") / "slides" / "s1.parquet").unlink()
    dest = tmp_path / "downloads" / "crc"
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--to", dest), "slides/s1.parquet", "missing")
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_pull_ignores_unlisted_files_on_the_hub(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    extra = hub_data(hub / "lab-a" / "crc" / "1") / "slides" / "s9.parquet"
    shutil.copy(signed / "slides" / "s0.parquet", extra)
    dest = tmp_path / "pulled"
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", dest).code == 0
    assert not (dest / "slides" / "s9.parquet").exists()
    assert cli("verify", dest).code == 0


def test_pull_of_an_untrusted_publisher_downloads_nothing(cli, tmp_path, hub):
    stranger = make_publisher("lab-c", tmp_path / "keys-c", trust=False)
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name="crc", key_path=stranger.private)
    assert cli("publish", root, "--hub", hub).code == 0  # publishers need not trust themselves

    entries = json.loads(cli("ls", "--hub", hub, "--json").out)
    assert [(e["publisher"], e["trusted"]) for e in entries] == [("lab-c", False)]
    assert table_row(cli("ls", "--hub", hub).out, "lab-c/crc@1")[-1] == "no"

    parent = tmp_path / "downloads"
    dest = parent / "crc"
    result = cli("pull", "lab-c/crc", "--hub", hub, "--to", dest)
    assert_one_line_error(result, "not signed by any key you trust")
    assert not dest.exists()
    assert leftovers(parent) == []


def test_pull_of_a_key_trusted_for_another_publisher_is_refused(cli, tmp_path, hub):
    # lab-b's key, trusted for lab-b, signs a manifest that claims to be lab-a's.
    impostor = make_publisher("lab-b", tmp_path / "keys-b")
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name="crc", key_path=impostor.private, publisher="lab-a")
    assert cli("publish", root, "--hub", hub).code == 0
    dest = tmp_path / "pulled"
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--to", dest), "'lab-a'", "'lab-b'")
    assert not dest.exists()


# --- versions ---------------------------------------------------------------------------------


@pytest.fixture
def two_versions(cli, hub, signed, publisher) -> Path:
    """lab-a/crc@1 (two slides) and @2 (three slides) on the hub."""
    assert cli("publish", signed, "--hub", hub).code == 0
    make_dataset(signed, slides=3, seed=0)  # adds s2, rewrites s0/s1 identically
    sign_dataset(signed, name="crc", key_path=publisher.private)
    assert cli("publish", signed, "--hub", hub).code == 0
    return signed


def test_pull_picks_the_asked_version_or_the_newest(cli, tmp_path, hub, two_versions):
    listed = sorted(e["version"] for e in json.loads(cli("ls", "--hub", hub, "--json").out))
    assert listed == [1, 2]

    result = cli("pull", "lab-a/crc@1", "--hub", hub, "--to", tmp_path / "v1")
    assert result.code == 0, result.err
    assert "lab-a/crc@1" in result.out
    assert sorted(p.name for p in (tmp_path / "v1" / "slides").iterdir()) == ["s0.parquet", "s1.parquet"]
    assert json.loads((tmp_path / "v1" / MANIFEST).read_bytes())["predicate"]["version"] == 1

    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "newest")
    assert result.code == 0, result.err
    assert "lab-a/crc@2" in result.out
    assert snapshot(tmp_path / "newest") == snapshot(two_versions)


def test_pull_refuses_a_rollback_unless_allowed(cli, tmp_path, hub, two_versions):
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "newest").code == 0
    dest = tmp_path / "old"
    assert_one_line_error(cli("pull", "lab-a/crc@1", "--hub", hub, "--to", dest), "rollback", "--allow-rollback")
    assert not dest.exists()
    result = cli("pull", "lab-a/crc@1", "--hub", hub, "--to", dest, "--allow-rollback")
    assert result.code == 0, result.err


def test_pull_of_a_version_that_does_not_exist(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    assert_one_line_error(cli("pull", "lab-a/crc@3", "--hub", hub, "--to", tmp_path / "x"), "no version 3")
    assert_one_line_error(cli("pull", "lab-a/nope", "--hub", hub, "--to", tmp_path / "x"), "no dataset lab-a/nope")
    assert not (tmp_path / "x").exists()


def test_pull_into_an_existing_folder_is_refused(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--to", dest), "already exists")
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]
    assert (dest / "notes.txt").read_text() == "keep me"


def test_a_manifest_under_the_wrong_version_folder_is_refused(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    shutil.copytree(hub / "lab-a" / "crc" / "1", hub / "lab-a" / "crc" / "2")

    dest = tmp_path / "v2"
    assert_one_line_error(cli("pull", "lab-a/crc@2", "--hub", hub, "--to", dest), "lab-a/crc@1")
    assert not dest.exists()
    assert leftovers(tmp_path) == []
    # ls does not vouch for the misplaced copy.
    trusted = {(e.version, e.trusted) for e in list_datasets(str(hub))}
    assert trusted == {(1, True), (1, False)}


def test_a_manifest_under_another_dataset_name_is_refused(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    shutil.copytree(hub / "lab-a" / "crc", hub / "lab-a" / "other")
    dest = tmp_path / "other"
    assert_one_line_error(cli("pull", "lab-a/other", "--hub", hub, "--to", dest), "lab-a/crc@1")
    assert not dest.exists()


# --- references -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref, fragment",
    [
        ("lab-a/../etc", "not a dataset reference"),
        ("../x/y", "not a dataset reference"),
        ("lab-a/x/y", "not a dataset reference"),
        ("LAB/x", "not a valid name"),
        ("lab-a/..", "not a valid name"),
        ("lab-a/crc@-1", "not a dataset reference"),
        ("lab-a", "not a dataset reference"),
    ],
)
def test_references_with_path_tricks_are_refused(cli, tmp_path, hub, signed, ref, fragment):
    assert cli("publish", signed, "--hub", hub).code == 0
    before = snapshot(tmp_path)
    assert_one_line_error(cli("pull", ref, "--hub", hub, "--to", tmp_path / "out"), fragment)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_one_unreadable_envelope_does_not_hide_the_rest_of_the_hub(cli, tmp_path, hub, signed):
    """Anyone who can write one prefix of a hub must not be able to break 'ls' for everyone."""
    assert cli("publish", signed, "--hub", hub).code == 0
    garbage = hub / "lab-x" / "junk" / "1" / ENVELOPE
    garbage.parent.mkdir(parents=True)
    garbage.write_text("{not json")
    # A well-formed envelope, signed by a stranger, over a manifest whose names are not path-safe.
    stranger = make_publisher("lab-s", tmp_path / "keys-s", trust=False)
    statement = json.loads((signed / MANIFEST).read_bytes())
    statement["predicate"]["publisher"] = "Bad Name"
    bad = hub / "lab-s" / "bad" / "1" / ENVELOPE
    bad.parent.mkdir(parents=True)
    bad.write_bytes(sign_envelope(json.dumps(statement).encode(), load_private_key(stranger.private)))

    result = cli("ls", "--hub", hub, "--json")
    assert result.code == 0, result.err
    entries = json.loads(result.out)
    assert [(e["publisher"], e["name"], e["version"], e["trusted"]) for e in entries if e["trusted"]] == [
        ("lab-a", "crc", 1, True)
    ]
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "pulled").code == 0


def test_ls_filters_by_publisher_and_model(tmp_path, cli, publisher):
    from conftest import make_dataset, make_publisher
    from sic_share.signing import sign_dataset

    hub = tmp_path / "hub"
    other = make_publisher("lab-b", tmp_path / "keys-b")
    for who, name in ((publisher, "crc"), (other, "lung")):
        root = make_dataset(tmp_path / name)
        sign_dataset(root, name=name, key_path=who.private)
        assert cli("publish", root, "--hub", hub).code == 0
    listed = lambda *args: [e["name"] for e in json.loads(cli("ls", "--hub", hub, "--json", *args).out)]  # noqa: E731
    assert sorted(listed()) == ["crc", "lung"]
    assert listed("--publisher", "lab-b") == ["lung"]
    assert sorted(listed("--model", "TEST-MOD")) == ["crc", "lung"]  # case-insensitive substring
    assert listed("--model", "resnet") == []
