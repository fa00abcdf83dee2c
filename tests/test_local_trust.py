"""Local dataset folders are verified before any consumer command reads them.

For each of ``sic``, ``umap``, ``app``, ``to-anndata``, ``benchmark`` and ``similarity``:
a slide rewritten after signing (valid Parquet, other values, same size), a folder
signed by a key nobody trusts, an unsigned folder (refused without ``--unsigned``,
read with it and a note), and an older version than one verified before are each
refused in one line. Then what the folder checks cost and allow: only the slides read
are hashed, a ``pull --slides`` copy reads the slides it holds, the verified digest
reaches the app's cache.
"""

from __future__ import annotations

import os
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, make_dataset, make_publisher
from sic_share.dataset import read_slide, write_slide
from sic_share.errors import VerificationError
from sic_share.signing import VersionRecord, open_folder, sign_dataset

COMMANDS = ("sic", "umap", "app", "to-anndata", "benchmark", "similarity")


def args(command: str, folder: Path, out: Path) -> list:
    """The command line of ``command`` on slide s0 of ``folder``, writing under ``out``."""
    return {
        "sic": ["sic", folder, "--slide", "s0", "--seeds", "0:normal,1:tumour", "--out", out / "labels.csv"],
        "umap": ["umap", folder, "--slide", "s0", "--out", out / "map.png", "--method", "pca"],
        "app": ["app", folder, "--slide", "s0", "--no-browser", "--port", "0"],
        "to-anndata": ["to-anndata", folder, "--slide", "s0", "--out", out / "s0.h5ad", "--method", "pca"],
        "benchmark": ["benchmark", folder, "--clicks", "1", "--folds", "1"],
        "similarity": ["similarity", folder, folder],
    }[command]


def needs(command: str) -> None:
    if command == "to-anndata":
        pytest.importorskip("anndata")
    if command == "app":
        pytest.importorskip("starlette")
        pytest.importorskip("uvicorn")


def rewrite_same_size(path: Path) -> None:
    """Rewrite a slide file as valid Parquet with other values (every patch one cell to the right), same size.

    Written by the project's own writer, so only the values differ; readers find column chunks
    by the offsets in the footer, so zero bytes placed before the footer are never read.
    """
    size = path.stat().st_size
    slide = read_slide(path)
    coords = slide.coords + np.array([128, 0], np.int32)
    tmp = path.with_name("tampered.parquet")
    write_slide(tmp, slide_id=slide.slide_id, metadata=slide.metadata, coords=coords,
                embeddings=slide.embeddings, labels=slide.labels)
    data = tmp.read_bytes()
    tmp.unlink()
    assert len(data) <= size, f"the tampered file has {len(data)} bytes, more than the {size} signed"
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    path.write_bytes(data[:footer] + bytes(size - len(data)) + data[footer:])
    assert path.stat().st_size == size


@pytest.fixture
def outputs(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


def no_outputs(out: Path) -> None:
    assert not list(out.iterdir()), list(out.iterdir())


@pytest.mark.parametrize("command", COMMANDS)
def test_a_slide_rewritten_after_signing_is_refused(command, cli, signed, outputs):
    needs(command)
    before = read_slide(signed / "slides" / "s0.parquet")
    rewrite_same_size(signed / "slides" / "s0.parquet")
    after = read_slide(signed / "slides" / "s0.parquet")  # valid Parquet, other values
    assert not np.array_equal(before.coords, after.coords)
    assert_one_line_error(cli(*args(command, signed, outputs)),
                          "slides/s0.parquet of lab-a/crc@1 does not match its signed sha256")
    no_outputs(outputs)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_signed_by_a_key_nobody_trusts_is_refused(command, cli, tmp_path, outputs):
    needs(command)
    stranger = make_publisher("lab-z", tmp_path / "keys-z", trust=False)
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name="crc", key_path=stranger.private)
    assert_one_line_error(cli(*args(command, root, outputs)), "is not signed by any key you trust", "trust add")
    no_outputs(outputs)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unsigned_folder_needs_the_flag_and_says_so(command, cli, tmp_path, outputs, monkeypatch):
    needs(command)
    root = make_dataset(tmp_path / "raw")
    assert_one_line_error(cli(*args(command, root, outputs)), f"{root} is not signed", "--unsigned")
    no_outputs(outputs)
    served = []
    if command == "app":  # start the server on loopback, fetch the page once, stop it
        import uvicorn

        run = uvicorn.Server.run

        def brief(self, sockets=None):
            def visit():
                while not self.started:
                    threading.Event().wait(0.02)
                port = sockets[0].getsockname()[1]
                served.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).status)
                self.should_exit = True

            threading.Thread(target=visit, daemon=True).start()
            return run(self, sockets=sockets)

        monkeypatch.setattr(uvicorn.Server, "run", brief)
    result = cli(*args(command, root, outputs), "--unsigned")
    assert result.code == 0, result.err
    notes = [line for line in result.err.splitlines() if line.startswith("note:") and "unsigned" in line]
    assert notes == [f"note: {root} is unsigned: its bytes are checked by nobody (read with --unsigned)"], result.err
    assert served == ([200] if command == "app" else [])


@pytest.mark.parametrize("command", COMMANDS)
def test_an_older_version_than_one_verified_before_is_refused(command, cli, tmp_path, publisher, outputs):
    needs(command)
    old = make_dataset(tmp_path / "crc-v1")
    sign_dataset(old, name="crc", key_path=publisher.private, version=1)
    new = tmp_path / "crc-v2"
    shutil.copytree(old, new)
    sign_dataset(new, name="crc", key_path=publisher.private, version=2)
    assert cli("verify", new).code == 0
    assert_one_line_error(cli(*args(command, old, outputs)), "lab-a/crc@1 is older than version 2", "--allow-rollback")
    no_outputs(outputs)
    if command != "app":  # the way out the message names
        assert cli(*args(command, old, outputs), "--allow-rollback").code == 0


def test_reading_a_folder_records_its_version(cli, tmp_path, publisher, outputs):
    old = make_dataset(tmp_path / "crc-v1")
    sign_dataset(old, name="crc", key_path=publisher.private, version=1)
    new = tmp_path / "crc-v2"
    shutil.copytree(old, new)
    sign_dataset(new, name="crc", key_path=publisher.private, version=2)
    assert cli(*args("sic", new, outputs)).code == 0  # no 'verify': annotating v2 is enough
    assert VersionRecord().highest("lab-a", "crc") == 2
    assert_one_line_error(cli(*args("benchmark", old, outputs)), "older than version 2")


def test_only_the_slides_read_are_hashed(tmp_path, publisher, monkeypatch):
    from sic_share.compare import open_dataset
    from sic_share.sic import locate_slide
    import sic_share.signing._manifest as folder_module  # where every slide is hashed

    root = make_dataset(tmp_path / "crc", slides=4, n=50)
    manifest = sign_dataset(root, name="crc", key_path=publisher.private)
    hashed = []
    real = folder_module.sha256_file
    monkeypatch.setattr(folder_module, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    located = locate_slide(root, "s2")
    assert hashed == ["s2.parquet"]
    assert located.digest == manifest.files["slides/s2.parquet"][1] and located.note is None
    hashed.clear()
    assert sorted(open_dataset(root).files) == ["s0", "s1", "s2", "s3"]
    assert sorted(hashed) == ["s0.parquet", "s1.parquet", "s2.parquet", "s3.parquet"]


def test_the_app_caches_by_the_verified_digest_without_hashing_again(signed, tmp_path, monkeypatch):
    pytest.importorskip("starlette")
    from sic_share.app import locate_slide, open_cached
    import sic_share.app._slide as slide_module

    located = locate_slide(signed, "s0")
    monkeypatch.setattr(slide_module, "_file_digest", lambda *a: pytest.fail("the verified file was hashed again"))
    assert open_cached(located, root=tmp_path / "cache").digest == located.digest


def test_a_copy_pulled_with_slides_reads_the_slides_it_holds(cli, signed, tmp_path, outputs):
    hub, part = tmp_path / "hub", tmp_path / "part"
    assert cli("publish", signed, "--hub", hub).code == 0
    assert cli("pull", "lab-a/crc", "--hub", hub, "--slides", "s0", "--out", part).code == 0
    assert sorted(p.name for p in (part / "slides").iterdir()) == ["s0.parquet"]
    assert cli(*args("sic", part, outputs)).code == 0
    assert cli("benchmark", part, "--clicks", "1", "--folds", "1").code == 0  # over the slides it holds
    assert_one_line_error(cli("sic", part, "--slide", "s1", "--seeds", "0:normal,1:tumour", "--out",
                              outputs / "s1.csv"),
                          "partial copy of lab-a/crc@1 without slide 's1'", "pull lab-a/crc@1 --slides s1")


def test_an_unlisted_slide_or_an_edited_manifest_is_refused(cli, signed, outputs):
    shutil.copy(signed / "slides" / "s0.parquet", signed / "slides" / "planted.parquet")
    assert_one_line_error(cli(*args("sic", signed, outputs)),
                          "slides/planted.parquet is not listed in the signed manifest of lab-a/crc@1")
    (signed / "slides" / "planted.parquet").unlink()
    manifest = signed / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"version": 1', b'"version": 7'))
    assert_one_line_error(cli(*args("similarity", signed, outputs)), "is not the signed manifest")


def test_the_unsigned_flag_never_weakens_a_signed_folder(signed):
    rewrite_same_size(signed / "slides" / "s1.parquet")
    folder = open_folder(signed, unsigned=True)
    assert folder.manifest is not None and folder.note is None
    folder.verify(["s0"])  # the slide read verifies
    with pytest.raises(VerificationError, match="s1.parquet of lab-a/crc@1 does not match its signed sha256"):
        folder.verify(["s1"])


def test_a_file_replaced_between_the_check_and_the_read_is_refused(signed, tmp_path):
    from sic_share.app import open_cached
    from sic_share.sic import load_slide, locate_slide

    located = locate_slide(signed, "s0")  # verified: hashed against the signed sha256
    other = tmp_path / "other.parquet"
    shutil.copy(signed / "slides" / "s0.parquet", other)
    rewrite_same_size(other)
    os.replace(other, signed / "slides" / "s0.parquet")  # swapped in before the command reads it
    with pytest.raises(VerificationError, match="changed while it was read"):
        load_slide(located, None)
    with pytest.raises(VerificationError, match="changed while it was read"):
        open_cached(located, root=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("slide.json"))  # nothing cached under the verified digest
