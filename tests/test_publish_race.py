"""Publish under attack on a local-folder hub: racing publishers, planted links, kill -9, bad folders.

The same protocol on a real S3 server: tests/test_s3.py (moto) and tests/test_ceph.py (20 racing
rounds on Ceph RGW).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import assert_one_line_error, hub_data, make_dataset, pull_then_die
from sic_share.signing import ENVELOPE, MANIFEST, sign_dataset, verify_dataset

FORK = multiprocessing.get_context("fork")


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (links are reported as such, never followed)."""
    found = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = b"LINK" if path.is_symlink() else path.read_bytes()
    return found


def digest(folder: Path) -> str:
    return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()


@pytest.fixture
def hub(tmp_path) -> Path:
    return tmp_path / "hub"


def _publish_at(barrier, root: str, hub: str, results) -> None:
    from sic_share.errors import AlreadyPublishedError
    from sic_share.hub import publish

    barrier.wait(timeout=30)
    try:
        publish(root, hub)
        results.put((root, "won"))
    except AlreadyPublishedError:
        results.put((root, "refused"))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put((root, f"error {exc!r}"))


def test_twenty_rounds_of_two_racing_publishers_leave_the_winner_intact(tmp_path, hub, publisher):
    """Two processes publish lab-a/race<i>@1 with different data at the same instant, 20 times.

    Before hub layout 1.1 the survivor was broken in about half the rounds (the loser's slides
    overwrote the winner's under the same names).
    """
    from sic_share.hub import pull

    for round_ in range(20):
        name = f"race{round_}"
        roots = []
        for tag in "ab":
            root = make_dataset(tmp_path / f"{name}{tag}", slides=2, n=300, seed=2 * round_ + (tag == "b"))
            sign_dataset(root, name=name, key_path=publisher.private, version=1)
            roots.append(root)
        barrier, results = FORK.Barrier(2), FORK.Queue()
        workers = [FORK.Process(target=_publish_at, args=(barrier, str(r), str(hub), results)) for r in roots]
        for w in workers:
            w.start()
        outcomes = dict(results.get(timeout=60) for _ in workers)
        for w in workers:
            w.join(timeout=30)
        assert sorted(outcomes.values()) == ["refused", "won"], (round_, outcomes)
        winner = next(Path(r) for r, o in outcomes.items() if o == "won")
        loser = next(Path(r) for r, o in outcomes.items() if o == "refused")
        version = hub / "lab-a" / name / "1"
        assert (version / ENVELOPE).read_bytes() == (winner / ENVELOPE).read_bytes()
        assert not (version / digest(loser)).exists()  # the loser removed its own data, nothing else
        _, dest = pull(f"lab-a/{name}", str(hub), to=tmp_path / f"pulled{round_}")
        assert tree(dest) == tree(winner)
        verify_dataset(dest)


def test_a_folder_link_planted_in_the_hub_is_refused_and_nothing_is_written_through_it(cli, tmp_path, hub, signed):
    outside = tmp_path / "outside"
    outside.mkdir()
    (hub / "lab-a" / "crc").mkdir(parents=True)
    (hub / "lab-a" / "crc" / "1").symlink_to(outside, target_is_directory=True)

    assert_one_line_error(cli("publish", signed, "--hub", hub), "lab-a/crc/1", "symbolic link", "remove it")
    assert tree(outside) == {}


def test_file_links_planted_where_the_files_will_go_are_replaced_not_written_through(cli, tmp_path, hub, signed):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    data = hub / "lab-a" / "crc" / "1" / digest(signed)
    (data / "slides").mkdir(parents=True)
    for name in ("slides/s0.parquet", "slides/s0.parquet.blocks", MANIFEST):
        (data / name).symlink_to(victim)

    result = cli("publish", signed, "--hub", hub)
    assert result.code == 0, result.err
    assert victim.read_text() == "the user's file"
    for name in ("slides/s0.parquet", MANIFEST):
        assert not (data / name).is_symlink()
        assert (data / name).read_bytes() == (signed / name).read_bytes()
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "pulled").code == 0


def test_publish_refuses_a_corrupt_signature_and_keeps_the_version_free(cli, hub, signed, publisher):
    envelope = json.loads((signed / ENVELOPE).read_bytes())
    sig = bytearray(envelope["signatures"][0]["sig"].encode())
    sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
    envelope["signatures"][0]["sig"] = sig.decode()
    (signed / ENVELOPE).write_text(json.dumps(envelope))

    assert_one_line_error(cli("publish", signed, "--hub", hub), "signature", "does not verify", "sic-share sign")
    assert tree(hub) == {} if hub.exists() else True
    sign_dataset(signed, name="crc", key_path=publisher.private, version=1)  # the same number is still free
    assert cli("publish", signed, "--hub", hub).code == 0


def test_publish_refuses_an_expired_manifest(cli, hub, signed, publisher, monkeypatch):
    sign_dataset(signed, name="crc", key_path=publisher.private, version=1, expires_days=1)
    later = datetime.now(timezone.utc) + timedelta(days=2)
    monkeypatch.setattr("sic_share.signing._manifest._now", lambda: later)
    assert_one_line_error(cli("publish", signed, "--hub", hub), "expired", "sign a new version")
    assert not hub.exists() or tree(hub) == {}


def _killed_during(stage: str, root: str, hub: str) -> None:
    """Run publish and SIGKILL this process in the middle of ``stage``."""
    from sic_share.hub import _hub

    if stage == "data":
        real = _hub._LocalHubWriter.write
        calls = []

        def write_then_die(fd, name, source, *, exclusive=False):
            real(fd, name, source, exclusive=exclusive)
            calls.append(name)
            if len(calls) == 2:  # manifest.json and one slide are there, the rest is not
                os.kill(os.getpid(), signal.SIGKILL)

        _hub._LocalHubWriter.write = staticmethod(write_then_die)
    _hub.publish(root, hub)


def test_kill_9_during_publish_leaves_nothing_visible_and_the_rerun_completes(cli, tmp_path, hub, signed):
    worker = FORK.Process(target=_killed_during, args=("data", str(signed), str(hub)))
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == -signal.SIGKILL
    assert (hub / "lab-a" / "crc" / "1" / digest(signed)).is_dir()  # something was written

    assert json.loads(cli("ls", "--hub", hub, "--json").out) == []
    assert_one_line_error(cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "x"), "no dataset lab-a/crc")
    result = cli("publish", signed, "--hub", hub)
    assert result.code == 0, result.err
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "pulled").code == 0
    assert tree(tmp_path / "pulled") == tree(signed)


def test_kill_9_during_pull_leaves_no_destination_and_the_next_pull_works(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    dest = tmp_path / "downloads" / "crc"
    worker = FORK.Process(target=pull_then_die, args=("lab-a/crc", str(hub), str(dest)))
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == -signal.SIGKILL
    assert not dest.exists()

    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", dest)
    assert result.code == 0, result.err
    assert tree(dest) == tree(signed)


def test_hub_gc_removes_what_no_version_uses_and_keeps_every_published_byte(cli, tmp_path, hub, signed, publisher):
    assert cli("publish", signed, "--hub", hub).code == 0
    published = tree(hub)
    # A lost race's data, an interrupted publish of version 2, and a killed writer's temporary file.
    other = make_dataset(tmp_path / "other", slides=1, seed=9)
    sign_dataset(other, name="crc", key_path=publisher.private, version=1)
    orphan = hub / "lab-a" / "crc" / "1" / digest(other) / "slides"
    orphan.mkdir(parents=True)
    (orphan / "s0.parquet").write_bytes(b"lost")
    (hub / "lab-a" / "crc" / "2" / "slides").mkdir(parents=True)
    (hub / "lab-a" / "crc" / "2" / "slides" / "s0.parquet").write_bytes(b"interrupted")
    (hub / "lab-a" / "crc" / "1" / ".manifest.dsse.json.1234.tmp").write_bytes(b"half")

    fresh = cli("hub", "gc", "--hub", hub)  # everything is younger than a day: nothing goes
    assert fresh.code == 0 and "removed 0 objects" in fresh.out
    dry = cli("hub", "gc", "--hub", hub, "--older-than", "0", "--dry-run")
    assert dry.code == 0 and "would remove 3 objects" in dry.out
    result = cli("hub", "gc", "--hub", hub, "--older-than", "0")
    assert result.code == 0, result.err
    assert "removed 3 objects" in result.out
    assert tree(hub) == published
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "pulled").code == 0


def test_a_version_published_in_layout_1_0_still_pulls_and_verifies(cli, tmp_path, hub, signed):
    """Hub layout 1.0 (before this change): files directly under <version>/, no sidecars."""
    version = hub / "lab-a" / "crc" / "1"
    (version / "slides").mkdir(parents=True)
    for path in sorted((signed / "slides").iterdir()):
        (version / "slides" / path.name).write_bytes(path.read_bytes())
    (version / MANIFEST).write_bytes((signed / MANIFEST).read_bytes())
    (version / ENVELOPE).write_bytes((signed / ENVELOPE).read_bytes())

    result = cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "pulled")
    assert result.code == 0, result.err
    assert tree(tmp_path / "pulled") == tree(signed)
    assert hub_data(version).exists() is False
