"""Pull what you need: ``pull --slides``, the sha256-keyed cache, ``cache ls|clear``, ``verify --partial``.

The hub is a local folder here; test_s3.py pulls one slide over HTTP.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conftest import assert_one_line_error, hub_data, make_dataset
from sic_share.hub import BlobCache, fetch_slides
from sic_share.signing import ENVELOPE, MANIFEST, sha256_file, sign_dataset


@pytest.fixture
def hub(tmp_path, cli, signed) -> Path:
    """A folder hub holding lab-a/crc@1 (slides s0 and s1)."""
    root = tmp_path / "hub"
    assert cli("publish", signed, "--hub", root).code == 0
    return root


def hub_file(hub: Path, name: str) -> Path:
    return hub_data(hub / "lab-a" / "crc" / "1") / "slides" / f"{name}.parquet"


def test_pull_slides_fetches_only_those_and_verifies_them(cli, tmp_path, hub, signed):
    dest = tmp_path / "one"
    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", dest, "--slides", "s1")
    assert result.code == 0, result.err
    assert "1 of 2 slides" in result.out
    assert sorted(p.name for p in (dest / "slides").iterdir()) == ["s1.parquet"]
    assert (dest / "slides" / "s1.parquet").read_bytes() == (signed / "slides" / "s1.parquet").read_bytes()
    assert (dest / MANIFEST).read_bytes() == (signed / MANIFEST).read_bytes()
    assert [e.source for e in BlobCache().entries()] == ["slides/s1.parquet of lab-a/crc@1"]

    assert "1 of 2 files" in cli("verify", dest, "--partial").out
    assert_one_line_error(cli("verify", dest), "slides/s0.parquet", "missing")


def test_a_partial_copy_with_a_modified_slide_fails_verify_partial(cli, tmp_path, hub):
    dest = tmp_path / "one"
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", dest, "--slides", "s1").code == 0
    target = dest / "slides" / "s1.parquet"
    data = target.read_bytes()
    target.unlink()  # the pulled file is a read-only link into the cache; replace it
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert_one_line_error(cli("verify", dest, "--partial"), "slides/s1.parquet", "modified")


def test_an_unknown_slide_id_names_the_near_matches_and_fetches_nothing(cli, tmp_path, hub):
    dest = tmp_path / "one"
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--to", dest, "--slides", "s1,s9"),
                          "no slide 's9'", "did you mean", "s1")
    assert not dest.exists()
    assert BlobCache().entries() == []


def test_nothing_cached_is_downloaded_twice(cli, tmp_path, hub):
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "first").code == 0
    # Were the second pull to download the slides, it would fail: the hub lost them.
    hub_file(hub, "s0").unlink()
    hub_file(hub, "s1").unlink()
    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "second")
    assert result.code == 0, result.err
    assert cli("verify", tmp_path / "second").code == 0
    assert len(BlobCache().entries()) == 2


def test_files_are_shared_with_the_cache_and_read_only(cli, tmp_path, hub):
    dest = tmp_path / "pulled"
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", dest).code == 0
    pulled = dest / "slides" / "s0.parquet"
    blob = BlobCache().path(sha256_file(pulled))
    assert os.path.samefile(pulled, blob)  # a hard link, no second copy on disk
    assert not pulled.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_a_damaged_cache_entry_is_fetched_again(cli, tmp_path, hub):
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "first", "--slides", "s0").code == 0
    (entry,) = BlobCache().entries()
    entry.path.chmod(0o644)
    with open(entry.path, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")

    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "second", "--slides", "s0")
    assert result.code == 0, result.err
    assert cli("verify", tmp_path / "second", "--partial").code == 0
    assert sha256_file(BlobCache().path(entry.digest)) == entry.digest


def test_a_slide_tampered_on_the_hub_never_enters_the_cache(cli, tmp_path, hub):
    path = hub_file(hub, "s1")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    dest = tmp_path / "pulled"
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--to", dest), "slides/s1.parquet",
                          "modified on the hub")
    assert not dest.exists()
    cache = BlobCache()
    assert [e.source for e in cache.entries()] == ["slides/s0.parquet of lab-a/crc@1"]
    assert not list(cache.root.glob("sha256/*/.*"))  # no partial download left


def test_the_cache_is_keyed_by_content_across_datasets(cli, tmp_path, hub, signed, publisher):
    # A second dataset holding the same slide file: its pull downloads nothing new for it.
    again = make_dataset(tmp_path / "again")
    sign_dataset(again, name="crc-copy", key_path=publisher.private)
    assert cli("publish", again, "--hub", hub).code == 0
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "a").code == 0
    assert cli("pull", "lab-a/crc-copy", "--hub", hub, "--to", tmp_path / "b").code == 0
    assert len(BlobCache().entries()) == 2


def test_cache_ls_and_clear(cli, tmp_path, hub, signed):
    dest = tmp_path / "pulled"
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", dest).code == 0
    listing = cli("cache", "ls")
    assert listing.code == 0
    assert "slides/s0.parquet of lab-a/crc@1" in listing.out and "2 files" in listing.out
    size = sum((signed / "slides" / f"s{i}.parquet").stat().st_size for i in range(2))

    cleared = cli("cache", "clear")
    assert cleared.code == 0
    # the pulled folder hard-links both files: nothing is freed, their bytes stay held by it
    assert f"removed 2 cached files, 0.0 MiB freed; {size / 2**20:.1f} MiB stays on disk" in cleared.out
    assert BlobCache().entries() == []
    assert cli("verify", dest).code == 0  # the pulled folder keeps its own links
    assert "0 files" in cli("cache", "ls").out


def test_fetch_slides_gives_verified_cache_paths_without_a_folder(tmp_path, hub, signed):
    manifest, paths = fetch_slides("lab-a/crc", ["s0"], hub=str(hub))
    assert manifest.ref == "lab-a/crc@1"
    assert list(paths) == ["s0"]
    assert paths["s0"].read_bytes() == (signed / "slides" / "s0.parquet").read_bytes()
    assert not (Path.cwd() / "crc-v1").exists()


def test_pull_slides_still_checks_the_signature_first(cli, tmp_path, hub):
    envelope = hub / "lab-a" / "crc" / "1" / ENVELOPE
    envelope.write_bytes(envelope.read_bytes().replace(b'"sig": "', b'"sig": "AAAA'))
    dest = tmp_path / "one"
    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", dest, "--slides", "s0")
    assert result.code == 1
    assert not dest.exists()
    assert BlobCache().entries() == []
