"""`sic-share import`: .npy pairs, CLAM and TRIDENT .h5 files into format v1, pseudonymised."""

from __future__ import annotations

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import assert_one_line_error, blobs
from sic_share.dataset import read_slide, summarize
from sic_share.privacy import holder_secret, pseudonym


def write_npy(folder, stem, coords, features, labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{stem}.coords.npy", coords)
    np.save(folder / f"{stem}.features.npy", features)
    if labels is not None:
        np.save(folder / f"{stem}.labels.npy", labels)


def all_bytes(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_npy_import_round_trip_with_labels(tmp_path, cli):
    coords, emb, labels = blobs(120, 32)
    labels[:10] = -1
    write_npy(tmp_path / "in", "PATIENT-0042_slide", coords, emb, labels)
    result = cli("import", tmp_path / "in", "--out", tmp_path / "ds", "--patch-size", "256", "--mpp", "0.25",
                 "--model-id", "resnet50-l3", "--classes", "benign,tumour", "--dtype", "float32")
    assert result.code == 0, result.err
    assert "imported 1 slides, 120 patches" in result.out
    [path] = (tmp_path / "ds" / "slides").glob("*.parquet")
    slide = read_slide(path)
    assert slide.slide_id == path.stem == pseudonym("PATIENT-0042_slide", holder_secret())
    np.testing.assert_array_equal(slide.coords, coords)  # .npy holds centres already
    np.testing.assert_array_equal(slide.embeddings, emb)
    np.testing.assert_array_equal(slide.labels, labels)
    meta = slide.metadata
    assert meta.classes == ("benign", "tumour")
    assert (meta.model.id, meta.model.source, meta.model.dim) == ("resnet50-l3", "import:npy", 32)
    assert (meta.patching.level0_size_px, meta.patching.level0_mpp) == (256, 0.25)
    # the source name appears nowhere in the dataset
    assert b"PATIENT-0042" not in all_bytes(tmp_path / "ds")


def test_pseudonyms_are_stable_per_secret_and_format(tmp_path):
    secret = holder_secret()
    assert pseudonym("/data/TCGA-01.svs", secret) == pseudonym("TCGA-01.h5", secret)
    assert pseudonym("TCGA-01.features.npy", secret) == pseudonym("TCGA-01.svs", secret)
    assert pseudonym("TCGA-01.svs", secret) != pseudonym("TCGA-02.svs", secret)
    other = holder_secret(tmp_path / "other.secret")
    assert pseudonym("TCGA-01.svs", other) != pseudonym("TCGA-01.svs", secret)
    assert (tmp_path / "other.secret").stat().st_mode & 0o777 == 0o600


def clam_h5(path, coords, features, *, patch_size=256, patch_level=0, downsample=None):
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("coords", data=coords)
        dset.attrs["patch_size"] = patch_size
        dset.attrs["patch_level"] = patch_level
        if downsample is not None:
            dset.attrs["downsample"] = np.array([downsample, downsample], dtype=float)
        dset.attrs["name"] = "PATIENT-7_HE"
        dset.attrs["save_path"] = "/mnt/hospital/pathology/2024-03-01/PATIENT-7_HE"
        f.create_dataset("features", data=features)


def test_clam_h5_corners_become_centres_and_attributes_stay_behind(tmp_path, cli):
    corners, emb, _ = blobs(50, 16)
    clam_h5(tmp_path / "PATIENT-7_HE.h5", corners, emb, patch_size=256, patch_level=1, downsample=2.0)
    result = cli("import", tmp_path / "PATIENT-7_HE.h5", "--out", tmp_path / "ds", "--format", "clam",
                 "--mpp", "0.25", "--model-id", "resnet50-l3")
    assert result.code == 0, result.err
    assert "top-left corners" in result.err  # what was assumed is said
    [path] = (tmp_path / "ds" / "slides").glob("*.parquet")
    slide = read_slide(path)
    np.testing.assert_array_equal(slide.coords, corners + 256)  # 256 px at level 1 = 512 level-0 px
    assert slide.metadata.patching.level0_size_px == 512
    data = all_bytes(tmp_path / "ds")
    for secret_text in (b"PATIENT-7", b"/mnt/hospital", b"2024-03-01"):
        assert secret_text not in data
    assert "PATIENT" not in str(pq.read_schema(path).metadata)


def test_trident_h5_reads_level0_size_and_magnification(tmp_path, cli):
    corners, emb, _ = blobs(30, 8)
    with h5py.File(tmp_path / "slide_9.h5", "w") as f:
        dset = f.create_dataset("coords", data=corners)
        dset.attrs.update({"patch_size": 256, "patch_size_level0": 512, "target_magnification": 20,
                           "level0_magnification": 40, "overlap": 128, "name": "slide_9",
                           "savetodir": "/home/user/trident_out"})
        f.create_dataset("features", data=emb[None])  # TRIDENT may keep a leading batch axis
    result = cli("import", tmp_path / "slide_9.h5", "--out", tmp_path / "ds", "--model-id", "uni")
    assert result.code == 0, result.err
    assert "level0_magnification" in result.err
    summary = summarize(tmp_path / "ds", full=True)
    patching = summary.metadata.patching
    assert (patching.size_px, patching.level0_size_px, patching.stride_px) == (256, 512, 128)
    assert patching.level0_mpp == pytest.approx(0.25) and patching.target_mpp == pytest.approx(0.5)
    slide = read_slide(summary.files[0])
    np.testing.assert_array_equal(slide.coords, corners + 256)
    assert b"trident_out" not in all_bytes(tmp_path / "ds")


def test_import_then_sign_then_verify(tmp_path, cli, publisher):
    coords, emb, _ = blobs(60, 8)
    write_npy(tmp_path / "in", "a", coords, emb)
    assert cli("import", tmp_path / "in", "--out", tmp_path / "ds", "--patch-size", "256").code == 0
    assert cli("sign", tmp_path / "ds", "--name", "imported", "--key", publisher.private).code == 0
    result = cli("verify", tmp_path / "ds")
    assert result.code == 0 and "lab-a/imported@1" in result.out


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: write_npy(d, "s", np.zeros((10, 2), int), np.zeros((9, 4))), "10 coords but 9 feature rows"),
        (lambda d: write_npy(d, "s", np.zeros((10, 2), int), np.array([["a"] * 4] * 10)), "should be numeric"),
        (lambda d: write_npy(d, "s", np.zeros((10, 3), int), np.zeros((10, 4))), "expected (n_patches, 2)"),
        (lambda d: write_npy(d, "s", np.zeros((10, 2), int), np.zeros((10, 4)), np.zeros(10, int)), "--classes"),
        (lambda d: (d.mkdir(), np.save(d / "s.coords.npy", np.zeros((3, 2), int))), "s.features.npy is missing"),
        (lambda d: (d.mkdir(), np.save(d / "s.coords.npy", np.array([object()] * 2), allow_pickle=True),
                    np.save(d / "s.features.npy", np.zeros((2, 4)))), "not a plain numeric .npy"),
    ],
)
def test_bad_npy_input_is_one_line_and_writes_nothing(tmp_path, cli, make, fragment):
    make(tmp_path / "in")
    result = cli("import", tmp_path / "in", "--out", tmp_path / "ds", "--patch-size", "256")
    assert_one_line_error(result, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_npy_without_patch_size_is_refused(tmp_path, cli):
    coords, emb, _ = blobs(5, 4)
    write_npy(tmp_path / "in", "s", coords, emb)
    assert_one_line_error(cli("import", tmp_path / "in", "--out", tmp_path / "ds"), "--patch-size")


def test_h5_without_level0_size_is_refused(tmp_path, cli):
    corners, emb, _ = blobs(5, 4)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("coords", data=corners).attrs["patch_size"] = 256
        f["coords"].attrs["patch_level"] = 2
        f.create_dataset("features", data=emb)
    assert_one_line_error(cli("import", tmp_path / "x.h5", "--out", tmp_path / "ds"), "--patch-size")
    assert not (tmp_path / "ds").exists()


def test_a_failure_on_a_later_slide_leaves_no_partial_dataset(tmp_path, cli):
    coords, emb, _ = blobs(20, 4)
    write_npy(tmp_path / "in", "a", coords, emb)
    emb_bad = emb.copy()
    emb_bad[3, 0] = np.inf
    write_npy(tmp_path / "in", "b", coords, emb_bad)
    result = cli("import", tmp_path / "in", "--out", tmp_path / "ds", "--patch-size", "256")
    assert_one_line_error(result, "not finite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_import_into_existing_folder_is_refused(tmp_path, cli):
    coords, emb, _ = blobs(5, 4)
    write_npy(tmp_path / "in", "s", coords, emb)
    (tmp_path / "ds").mkdir()
    assert_one_line_error(cli("import", tmp_path / "in", "--out", tmp_path / "ds", "--patch-size", "256"),
                          "already exists")
