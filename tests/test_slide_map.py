"""The holder's slide map: concurrent records keep every entry; a URL is kept as a URL, without its secrets."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, REPO, assert_one_line_error
from sic_share.errors import SicShareError
from sic_share.privacy import SlideMap

_RECORDER = """
import sys, time
from pathlib import Path
from sic_share.privacy import SlideMap

path, who, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.001)
slide_map = SlideMap(path)
for i in range(count):
    slide_map.record([(f"{who}-{i:03d}", f"slide-{who}-{i}", f"/data/{who}/{i}.svs")])
"""


def test_processes_recording_at_once_keep_every_entry(tmp_path):
    """Shard tasks that start together each record their slides; none may lose another's (slides lookup)."""
    path = tmp_path / "keys" / "slide-map.json"
    go = tmp_path / "go"
    workers, count = 6, 25
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _RECORDER, str(path), f"w{w}", str(count), str(go)], env=env)
             for w in range(workers)]
    time.sleep(1.0)  # every interpreter is up and waiting, so the records overlap
    go.touch()
    assert [proc.wait(timeout=60) for proc in procs] == [0] * workers
    entries = SlideMap(path).entries()
    assert len(entries) == workers * count
    assert {e.slide_id for e in entries} == {f"w{w}-{i:03d}" for w in range(workers) for i in range(count)}
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_url_stays_a_url_without_its_credentials(tmp_path, cli, home):
    slide_map = SlideMap()
    presigned = ("https://reader:hunter2@slides.example:8443/cohort/a.svs?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                 "&X-Amz-Credential=AKIAEXAMPLE%2F20261205&X-Amz-Signature=deadbeef#page")
    slide_map.record([("aaaa1111", "a", presigned), ("bbbb2222", "b", "s3://wsi/cohort/b.svs"),
                      ("cccc3333", "c", "simplecache::s3://wsi/cohort/c.svs?versionId=7"),
                      ("dddd4444", "d", "file:///data/d.svs"), ("eeee5555", "e", "relative/e.svs")])
    paths = {e.slide_id: e.path for e in slide_map.entries()}
    assert paths == {"aaaa1111": "https://slides.example:8443/cohort/a.svs", "bbbb2222": "s3://wsi/cohort/b.svs",
                     "cccc3333": "simplecache::s3://wsi/cohort/c.svs", "dddd4444": "/data/d.svs",
                     "eeee5555": str(Path("relative/e.svs").resolve())}
    raw = slide_map.path.read_text()
    for secret in ("hunter2", "reader", "X-Amz", "AKIAEXAMPLE", "deadbeef", "versionId", "#page"):
        assert secret not in raw
    # the holder finds a slide by its URL (as recorded, or the presigned one they pasted) or its file name
    for query in ("s3://wsi/cohort/b.svs", "b.svs"):
        found = cli("slides", "lookup", query)
        assert found.code == 0 and "bbbb2222" in found.out, found
    pasted = cli("slides", "lookup", presigned)
    assert pasted.code == 0 and "aaaa1111" in pasted.out and "hunter2" not in pasted.out, pasted


def test_an_export_of_s3_slides_records_their_urls(tmp_path, cli, as_user, home):
    pytest.importorskip("torch")
    pytest.importorskip("openslide")
    import fsspec

    from conftest import BUCKET

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.put_file(str(DATA / "cmu_small_region.svs"), f"{BUCKET}/lab-a/map/cmu_small_region.svs")
    url = f"s3://{BUCKET}/lab-a/map/cmu_small_region.svs"
    result = cli("export", url, "--out", tmp_path / "ds", "--workers", "0", "--no-sign")
    assert result.code == 0, result.err
    [entry] = SlideMap().entries()
    assert (entry.name, entry.path) == ("cmu_small_region", url)
    assert entry.slide_id in cli("slides", "lookup", url).out


def test_a_map_locked_too_long_is_one_line(tmp_path, cli, monkeypatch):
    pytest.importorskip("fcntl")
    from sic_share.privacy import _slide_map

    monkeypatch.setattr(_slide_map, "_LOCK_TIMEOUT_S", 0.2)
    slide_map = SlideMap(tmp_path / "slide-map.json")
    slide_map.record([("aaaa1111", "a", "/data/a.svs")])
    before = slide_map.path.read_bytes()
    fd = os.open(tmp_path / ".slide-map.json.lock", os.O_RDWR)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; fcntl.flock(sys.stdin.fileno(), "
                               "fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)"],
                              stdin=fd, stdout=subprocess.PIPE, text=True)
    os.close(fd)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SicShareError, match="locked by another process for over 0.2 s") as caught:
            slide_map.record([("bbbb2222", "b", "/data/b.svs")])
        assert "\n" not in str(caught.value)
        assert slide_map.path.read_bytes() == before  # nothing half-written
        # through the CLI: an export records its slides before it embeds any: one line, nothing written
        if importlib.util.find_spec("torch") and importlib.util.find_spec("openslide"):
            result = cli("export", DATA / "cmu_small_region.svs", "--out", tmp_path / "ds", "--workers", "0",
                         "--no-sign", "--secret", tmp_path / "holder.secret")
            assert_one_line_error(result, "slide map", "locked by another process")
            assert not (tmp_path / "ds").exists()
    finally:
        holder.kill()
        holder.wait()
