"""Failures that used to say "unexpected ... a bug in sic-share", each one line now.

Two pulls racing for one ``--out``, the partial folders a killed pull leaves, what
``cache clear`` really frees, and seed GeoJSON that is too deep or holds features that
cannot be seeds. Local-folder hubs throughout.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, pull_then_die
from sic_share.dataset import read_slide
from sic_share.hub import BlobCache
from sic_share.signing import verify_dataset

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def hub(tmp_path) -> Path:
    return tmp_path / "hub"


@pytest.fixture
def published(cli, hub, signed) -> Path:
    """lab-a/crc@1 (two slides) published on a local-folder hub; returns the signed folder."""
    result = cli("publish", signed, "--hub", hub)
    assert result.code == 0, result.err
    return signed


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def partials(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name)


# --- two pulls into one --out -----------------------------------------------------------------


def _cli_in_child(args: list[str]) -> tuple[int, str]:
    """Run ``sic-share ARGS`` in this (forked) process; its exit code and stderr."""
    from sic_share import cli as cli_module

    sys.argv, sys.stderr = ["sic-share", *args], io.StringIO()
    cli_module._state["debug"] = False
    try:
        cli_module.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, sys.stderr.getvalue()


def _racing_pull(barrier, args: list[str], results) -> None:
    """Pull, meeting the other puller once both have staged a file: both then passed the
    'destination exists' check, and both renames race."""
    from sic_share.hub import _cache

    real = _cache.BlobCache.place
    met = []

    def place_then_meet(self, blob, target):
        real(self, blob, target)
        if not met:
            met.append(True)
            barrier.wait(timeout=60)

    _cache.BlobCache.place = place_then_meet
    try:
        results.put(_cli_in_child(args))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put((99, repr(exc)))


def test_two_pulls_into_one_out_one_wins_the_other_is_one_line(tmp_path, hub, published):
    for round_ in range(3):
        dest = tmp_path / f"round{round_}" / "crc"
        barrier, results = FORK.Barrier(2), FORK.Queue()
        args = ["pull", "lab-a/crc", "--hub", str(hub), "--out", str(dest)]
        workers = [FORK.Process(target=_racing_pull, args=(barrier, args, results)) for _ in range(2)]
        for worker in workers:
            worker.start()
        outcomes = sorted(results.get(timeout=120) for _ in workers)
        for worker in workers:
            worker.join(timeout=60)
        (won, _), (lost, err) = outcomes
        assert (won, lost) == (0, 1), outcomes
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "created by another pull meanwhile" in lines[0] and "a bug" not in lines[0], lines[0]
        assert verify_dataset(dest).ref == "lab-a/crc@1"  # the winner's folder, whole
        assert files_of(dest) == files_of(published)
        assert partials(dest.parent) == []


def test_a_folder_made_at_the_destination_meanwhile_is_neither_replaced_nor_written_into(
    cli, tmp_path, hub, published, monkeypatch
):
    # os.rename of a folder onto an *empty* folder succeeds silently: the pull must not take it.
    from sic_share.hub import _cache

    dest = tmp_path / "out" / "crc"
    real = _cache.BlobCache.place

    def place_and_make_dest(self, blob, target):
        real(self, blob, target)
        dest.mkdir(exist_ok=True)

    monkeypatch.setattr(_cache.BlobCache, "place", place_and_make_dest)
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--out", dest), str(dest),
                          "created by another pull meanwhile", "--out")
    assert dest.is_dir() and list(dest.iterdir()) == []
    assert partials(dest.parent) == []


def test_a_folder_filled_at_the_destination_meanwhile_is_kept_as_it_is(cli, tmp_path, hub, published, monkeypatch):
    from sic_share.hub import _cache

    dest = tmp_path / "out" / "crc"
    real = _cache.BlobCache.place

    def place_and_fill_dest(self, blob, target):
        real(self, blob, target)
        dest.mkdir(exist_ok=True)
        (dest / "theirs.txt").write_text("another pull's")

    monkeypatch.setattr(_cache.BlobCache, "place", place_and_fill_dest)
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--out", dest), "created by another pull meanwhile")
    assert files_of(dest) == {"theirs.txt": b"another pull's"}


def test_without_renameat2_the_destination_is_claimed_by_an_exclusive_mkdir(cli, tmp_path, hub, published, monkeypatch):
    from sic_share import _jsonstore
    from sic_share.hub import _cache

    monkeypatch.setattr(_jsonstore, "_renameat2", lambda: None)
    assert cli("pull", "lab-a/crc", "--hub", hub, "--out", tmp_path / "ok").code == 0
    assert files_of(tmp_path / "ok") == files_of(published)

    dest = tmp_path / "out" / "crc"
    real = _cache.BlobCache.place

    def place_and_make_dest(self, blob, target):
        real(self, blob, target)
        dest.mkdir(exist_ok=True)

    monkeypatch.setattr(_cache.BlobCache, "place", place_and_make_dest)
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--out", dest), "created by another pull meanwhile")
    assert list(dest.iterdir()) == []


# --- partial folders left by a killed pull ------------------------------------------------------


def test_a_stale_partial_without_a_lock_is_removed_by_the_next_pull(cli, tmp_path, hub, published):
    # What a pull killed before this version of sic-share leaves: no lock file beside it.
    dest = tmp_path / "downloads" / "crc"
    stale = dest.parent / ".crc.partial-0badf00d"
    (stale / "slides").mkdir(parents=True)
    (stale / "slides" / "s0.parquet").write_bytes(b"half a download")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = dest.parent / ".crc.partial-5eedf00d"  # no lock and recent: maybe an older sic-share still writing
    fresh.mkdir()
    other = dest.parent / ".other.partial-0badf00d"  # another destination's: not this pull's business
    other.mkdir()
    os.utime(other, (old, old))

    orphan = dest.parent / ".crc.partial-0dd10c4d.lock"  # killed between its lock and its folder
    orphan.write_text("123\n")

    result = cli("pull", "lab-a/crc", "--hub", hub, "--out", dest)
    assert result.code == 0, result.err
    assert partials(dest.parent) == [".crc.partial-5eedf00d", ".other.partial-0badf00d"]
    assert files_of(dest) == files_of(published)


def test_the_partial_of_a_pull_killed_with_sigkill_is_removed_by_the_next_pull(cli, tmp_path, hub, published):
    dest = tmp_path / "downloads" / "crc"
    worker = FORK.Process(target=pull_then_die, args=("lab-a/crc", str(hub), str(dest)))
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == -signal.SIGKILL
    left = partials(dest.parent)
    assert any(not name.endswith(".lock") for name in left), left  # the killed pull's folder (fresh mtime)

    result = cli("pull", "lab-a/crc", "--hub", hub, "--out", dest)
    assert result.code == 0, result.err
    assert partials(dest.parent) == []
    assert files_of(dest) == files_of(published)


def _hold_staging(dest: str, ready, release) -> None:
    from sic_share._jsonstore import staged_folder

    with staged_folder(Path(dest)) as tmp:
        (tmp / "busy").write_text("still writing")
        ready.set()
        release.wait(timeout=60)
        raise SystemExit(0)  # never renamed: the parent only checks the folder was left alone


def test_a_partial_that_another_pull_is_still_writing_is_left_alone(tmp_path):
    dest = tmp_path / "downloads" / "busy"
    ready, release = FORK.Event(), FORK.Event()
    worker = FORK.Process(target=_hold_staging, args=(str(dest), ready, release))
    worker.start()
    try:
        assert ready.wait(timeout=60)
        busy = [p for p in dest.parent.iterdir() if p.name.startswith(".busy.partial-") and p.is_dir()]
        assert len(busy) == 1
        old = time.time() - 2 * 3600
        os.utime(busy[0], (old, old))  # old, but its lock is held: in use
        from sic_share._jsonstore import remove_abandoned

        assert remove_abandoned(dest) == []
        assert (busy[0] / "busy").read_text() == "still writing"
    finally:
        release.set()
        worker.join(timeout=60)
    assert partials(dest.parent) == []  # its own exit cleaned up


# --- cache clear ----------------------------------------------------------------------------------


def test_cache_clear_counts_bytes_held_by_pulled_folders_as_held_not_freed(cli, tmp_path, hub, published):
    dest = tmp_path / "pulled"
    assert cli("pull", "lab-a/crc", "--hub", hub, "--out", dest).code == 0
    sizes = {e.digest: e.size for e in BlobCache().entries()}
    assert len(sizes) == 2
    if (dest / "slides" / "s0.parquet").stat().st_nlink == 1:
        pytest.skip("this file system copies instead of hard-linking")
    # One slide's folder is gone: its blob is the cache's alone; the other stays linked by `dest`.
    (dest / "slides" / "s1.parquet").chmod(0o644)
    (dest / "slides" / "s1.parquet").unlink()
    held = (dest / "slides" / "s0.parquet").stat().st_size
    freed = sum(sizes.values()) - held

    cache = BlobCache()
    cleared = cache.clear()
    assert (cleared.files, cleared.freed, cleared.held) == (2, freed, held)
    assert cache.entries() == []
    assert (dest / "slides" / "s0.parquet").stat().st_nlink == 1  # the folder's link is all that is left

    assert cli("pull", "lab-a/crc", "--hub", hub, "--out", tmp_path / "again").code == 0
    result = cli("cache", "clear")
    assert result.code == 0, result.err
    total = sum(sizes.values())
    assert f"removed 2 cached files, 0.0 MiB freed; {total / 2**20:.1f} MiB stays on disk, hard-linked by " \
           "pulled dataset folders" in result.out, result.out


def test_cache_clear_keeps_a_partial_download_being_written(tmp_path):
    cache = BlobCache(tmp_path / "cache")
    folder = cache.root / "sha256" / "ab"
    folder.mkdir(parents=True)
    writing = folder / (".ab" + "0" * 62 + ".1234abcd.partial")
    writing.write_bytes(b"x" * 100)
    killed = folder / (".ab" + "1" * 62 + ".1234abcd.partial")
    killed.write_bytes(b"y" * 300)
    old = time.time() - 3600
    os.utime(killed, (old, old))
    cleared = cache.clear()
    assert (cleared.files, cleared.freed, cleared.held) == (0, 300, 0)
    assert writing.exists() and not killed.exists()


# --- seeds GeoJSON ------------------------------------------------------------------------------


@pytest.fixture
def slide_seeds(signed) -> tuple[Path, list[tuple[float, float, str]]]:
    """The signed folder and three seeds on patches of s0 of each class."""
    data = read_slide(signed / "slides" / "s0.parquet")
    rows = [(float(data.coords[i, 0]), float(data.coords[i, 1]), name)
            for k, name in enumerate(data.metadata.classes) for i in np.flatnonzero(data.labels == k)[:3]]
    return signed, rows


def test_a_geojson_nested_100k_deep_is_one_line(cli, tmp_path, slide_seeds):
    folder, _ = slide_seeds
    deep = tmp_path / "deep.geojson"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    result = cli("sic", folder, "--slide", "s0", "--seeds", deep, "--out", tmp_path / "out.csv")
    assert_one_line_error(result, "deep.geojson", "nested too deeply", "export it again from QuPath")

    # Objects too, inside a feature, the way a hostile QuPath-looking export would nest them.
    deep.write_text('{"type": "Feature", "properties": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}")
    result = cli("sic", folder, "--slide", "s0", "--seeds", deep, "--out", tmp_path / "out.csv")
    assert_one_line_error(result, "deep.geojson", "nested too deeply")


def test_a_seeds_file_over_the_size_limit_is_one_line(cli, tmp_path, slide_seeds, monkeypatch):
    from sic_share.sic import _seeds

    folder, _ = slide_seeds
    monkeypatch.setattr(_seeds, "MAX_SEEDS_BYTES", 1 << 20)
    big = tmp_path / "big.geojson"
    big.write_text(json.dumps({"type": "FeatureCollection", "features": [], "pad": "x" * (1 << 20)}))
    result = cli("sic", folder, "--slide", "s0", "--seeds", big, "--out", tmp_path / "out.csv")
    assert_one_line_error(result, "big.geojson", "larger than 1 MiB", "Export objects as GeoJSON")


def test_features_that_cannot_be_seeds_are_counted_on_one_stderr_line(cli, tmp_path, slide_seeds):
    folder, rows = slide_seeds
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
                 "properties": {"classification": {"name": name}}} for x, y, name in rows]
    x, y, _ = rows[0]
    features += [
        {"type": "Feature", "geometry": {"type": "Polygon",
                                         "coordinates": [[[0, 0], [600, 0], [600, 600], [0, 600], [0, 0]]]},
         "properties": {"objectType": "annotation"}},  # unclassified
        {"type": "Feature", "geometry": None, "properties": {"classification": {"name": "tumour"}}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[x, y], [x + 300, y]]},
         "properties": {"classification": {"name": "tumour"}}},
    ]
    seeds = tmp_path / "seeds.geojson"
    seeds.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    result = cli("sic", folder, "--slide", "s0", "--seeds", seeds, "--out", tmp_path / "out.csv")
    assert result.code == 0, result.err
    lines = [line for line in result.err.splitlines() if "ignored" in line]
    assert len(lines) == 1, result.err
    assert "3 GeoJSON features ignored (1 LineString, 1 unclassified, 1 without a geometry)" in lines[0], lines[0]
    assert "Set class" in lines[0]


def test_the_library_returns_the_counts_and_prints_nothing(tmp_path, capsys, slide_seeds):
    from sic_share.sic import read_seeds

    folder, rows = slide_seeds
    data = read_slide(folder / "slides" / "s0.parquet")
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
                 "properties": {"classification": {"name": name}}} for x, y, name in rows]
    features += [{"type": "Feature", "geometry": None}, {"type": "Feature", "geometry": None},
                 {"type": "Feature", "geometry": {"type": "Point", "coordinates": []},
                  "properties": {"classification": {"name": "tumour"}}},
                 "not a feature"]
    seeds = tmp_path / "seeds.geojson"
    seeds.write_text(json.dumps(features))
    found = read_seeds(seeds, data.coords, 256)
    assert found.ignored == {"without a geometry": 2, "empty": 1, "not a Feature": 1}
    assert found.skipped == 4
    assert capsys.readouterr() == ("", "")
