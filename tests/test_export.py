"""`sic-share export`: real slide, synthetic pyramids, resume, shards, labels, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
openslide = pytest.importorskip("openslide")

from conftest import DATA, assert_one_line_error, slide_image, write_pyramid  # noqa: E402
from sic_share.dataset import read_slide, slide_files  # noqa: E402
from sic_share.privacy import holder_secret, pseudonym  # noqa: E402
from sic_share.slides import make_grid, open_slide  # noqa: E402

CMU = DATA / "cmu_small_region.svs"


@pytest.fixture(scope="module")
def pyramids(tmp_path_factory) -> Path:
    """Three synthetic 0.25 µm/px slides with tissue in known rectangles."""
    folder = tmp_path_factory.mktemp("pyramids")
    for i in range(3):
        image = slide_image((3072, 2048), (512 + 256 * i, 512, 2560, 1536), seed=i)
        write_pyramid(folder / f"patient-{i}.tif", image, levels=3, mpp=0.25)
    return folder


def sorted_rows(coords: np.ndarray) -> np.ndarray:
    return coords[np.lexsort((coords[:, 0], coords[:, 1]))]


def dataset_rows(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {p.stem: (read_slide(p).coords, read_slide(p).embeddings) for p in slide_files(folder)}


def test_real_slide_export_signs_and_leaks_nothing(tmp_path, cli, home):
    keys = home / "config" / "keys"
    assert cli("keys", "generate", "--publisher", "lab-a").code == 0
    out = tmp_path / "cmu-hc"
    result = cli("export", CMU, "--out", out, "--model", "handcrafted", "--workers", "1")
    assert result.code == 0, result.err
    assert "signed lab-a/cmu-hc@1" in result.out
    assert cli("trust", "add", keys / "lab-a.pub", "--publisher", "lab-a").code == 0
    assert cli("verify", out).code == 0

    [path] = slide_files(out)
    slide = read_slide(path)
    assert slide.slide_id == pseudonym("cmu_small_region", holder_secret())
    with open_slide(CMU) as reader:
        grid = make_grid(reader)
        # count matches the grid, coordinates are the grid's (rows come in strips of blocks, not row-major)
        np.testing.assert_array_equal(sorted_rows(slide.coords), grid.coords)
        assert (slide.tissue >= 0.5).all()
        # coordinates fall on tissue: the patch centres are far more saturated than the slide's background
        def saturation(x, y):
            rgb = reader.read_region((int(x) - 16, int(y) - 16), 0, (32, 32)).astype(float)
            return float((rgb.max(-1) - rgb.min(-1)).mean())
        kept = np.mean([saturation(x, y) for x, y in slide.coords[::5]])
        corner = saturation(40, 40)
        assert kept > corner + 20
    # nothing from the slide's properties reaches the dataset
    with openslide.OpenSlide(str(CMU)) as raw:
        properties = dict(raw.properties)
        associated = list(raw.associated_images)
    secrets_ = {v for k, v in properties.items()
                if len(v) >= 5 and not v.replace(".", "").replace("-", "").isdigit()}
    secrets_ |= {"cmu_small_region", str(CMU.parent), "Aperio"}
    assert any("/" in s or ":" in s for s in properties.values())  # the slide does carry dates and paths
    assert associated  # and label/macro images
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for text in secrets_:
        assert text.encode() not in blob, text
    assert b"\xff\xd8\xff" not in blob  # no JPEG stream (tiles, label, macro)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "manifest.dsse.json", "manifest.json", f"slides/{slide.slide_id}.parquet"]
    assert cli("audit", out, "--forbid", "cmu_small_region").code == 0


def test_timm_model_with_local_weights_on_the_same_grid(tmp_path, cli):
    import timm
    import torch

    weights = tmp_path / "resnet18.pt"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), weights)
    result = cli("export", CMU, "--out", tmp_path / "r18", "--model", "resnet18", "--weights", weights,
                 "--no-sign", "--workers", "0", "--batch-size", "32")
    assert result.code == 0, result.err
    [path] = slide_files(tmp_path / "r18")
    slide = read_slide(path)
    assert slide.embeddings.shape[1] == 512 and np.isfinite(slide.embeddings).all()
    assert slide.metadata.model.source == "local" and slide.metadata.model.weights_sha256
    assert slide.embeddings.std(axis=0).mean() > 0  # patches differ
    # same grid as the handcrafted export: the two datasets join on (slide_id, x, y)
    assert cli("export", CMU, "--out", tmp_path / "hc", "--no-sign", "--workers", "0").code == 0
    [other] = slide_files(tmp_path / "hc")
    assert other.name == path.name
    np.testing.assert_array_equal(sorted_rows(read_slide(other).coords), sorted_rows(slide.coords))


def test_two_models_in_one_run_write_two_datasets_on_one_grid(tmp_path, cli, pyramids):
    import timm
    import torch

    weights = tmp_path / "resnet18.pt"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), weights)
    result = cli("export", pyramids / "patient-0.tif", "--out", tmp_path / "both", "--model", "handcrafted",
                 "--model", f"resnet18={weights}", "--no-sign", "--workers", "0", "--batch-size", "16")
    assert result.code == 0, result.err
    [hc] = slide_files(tmp_path / "both" / "handcrafted")
    [r18] = slide_files(tmp_path / "both" / "resnet18")
    assert hc.name == r18.name
    a, b = read_slide(hc), read_slide(r18)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert (a.metadata.model.id, b.metadata.model.id) == ("handcrafted", "resnet18")
    assert b.embeddings.shape[1] == 512


def test_pretrained_weights_without_network_are_refused_with_the_fix(tmp_path, cli, pyramids):
    result = cli("export", pyramids / "patient-0.tif", "--out", tmp_path / "ds", "--model", "resnet18",
                 "--no-sign", "--workers", "0")
    assert_one_line_error(result, "--weights")
    assert not (tmp_path / "ds").exists()


def test_pyramid_levels_and_target_resolution(tmp_path, cli, pyramids):
    result = cli("export", pyramids / "patient-1.tif", "--out", tmp_path / "ds", "--no-sign", "--workers", "0",
                 "--magnification", "20")
    assert result.code == 0, result.err
    [path] = slide_files(tmp_path / "ds")
    slide = read_slide(path)
    patching = slide.metadata.patching
    assert (patching.level0_mpp, patching.target_mpp, patching.level0_size_px) == (0.25, 0.5, 512)
    # tissue is the rectangle (768, 512)-(2560, 1536) in level-0 px: a kept patch (512 px) has at least
    # half of itself inside, so its centre lies inside the rectangle
    x, y = slide.coords[:, 0], slide.coords[:, 1]
    assert ((x >= 768) & (x <= 2560) & (y >= 512) & (y <= 1536)).all()
    assert len(slide.coords) >= 20
    with open_slide(pyramids / "patient-1.tif") as reader:
        grid = make_grid(reader, target_mpp=0.5)
        assert grid.level == 1 and len(grid.coords) == len(slide.coords)


def test_shards_together_equal_one_run(tmp_path, cli, pyramids):
    assert cli("export", pyramids, "--out", tmp_path / "all", "--no-sign", "--workers", "0").code == 0
    for i in range(2):
        assert cli("export", pyramids, "--out", tmp_path / "sharded", "--shard", f"{i}/2",
                   "--workers", "0").code == 0
    whole, sharded = dataset_rows(tmp_path / "all"), dataset_rows(tmp_path / "sharded")
    assert len(whole) == 3 and sorted(whole) == sorted(sharded)
    for key, (coords, emb) in whole.items():
        np.testing.assert_array_equal(sharded[key][0], coords)
        np.testing.assert_array_equal(sharded[key][1], emb)
    assert not (tmp_path / "sharded" / "manifest.json").exists()  # shards never sign; sign once after


def test_resume_after_a_kill(tmp_path, pyramids, home):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "sic_share.cli", "export", str(pyramids), "--out", str(out), "--no-sign",
           "--workers", "0", "--batch-size", "4"]
    env = {**os.environ, "SIC_SHARE_HOME": str(home)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("slides/*.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = sorted(out.glob("slides/*.parquet"))
    assert 1 <= len(first) < 3, "the kill should land mid-run"
    before = {p.name: p.read_bytes() for p in first}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"skipped {len(first)} already done" in result.stdout
    files = sorted(out.glob("slides/*"))
    assert len(files) == 3 and all(p.suffix == ".parquet" for p in files)  # no temporary leftovers
    assert {p.name: p.read_bytes() for p in first} == before  # finished slides untouched
    for path in files:
        read_slide(path)


def test_mask_labels_follow_the_half_coverage_rule(tmp_path, cli, pyramids):
    from PIL import Image

    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((512, 768), np.uint8)  # 1/4 of the 2048 x 3072 slide
    mask[128:384, 384:640] = 255  # level-0 box (1536, 512)-(2560, 1536)
    Image.fromarray(mask).save(masks / "patient-0.png")
    result = cli("export", pyramids / "patient-0.tif", "--out", tmp_path / "ds", "--no-sign", "--workers", "0",
                 "--masks", str(masks / "{stem}.png"), "--classes", "benign,tumour")
    assert result.code == 0, result.err
    [path] = slide_files(tmp_path / "ds")
    slide = read_slide(path)
    assert slide.metadata.classes == ("benign", "tumour")
    x, y = slide.coords[:, 0], slide.coords[:, 1]
    inside = (x - 256 >= 1536) & (x + 256 <= 2560) & (y - 256 >= 512) & (y + 256 <= 1536)
    outside = (x + 256 <= 1536)
    assert inside.any() and outside.any()
    assert (slide.labels[inside] == 1).all() and (slide.labels[outside] == 0).all()


# --- bad input: one clear line, non-zero exit, nothing half-written -------------------------


def test_one_bad_slide_does_not_stop_the_run(tmp_path, cli, pyramids):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in pyramids.glob("*.tif"):
        (folder / p.name).symlink_to(p)
    (folder / "broken.svs").write_text("not a slide")
    result = cli("export", folder, "--out", tmp_path / "ds", "--no-sign", "--workers", "0")
    assert result.code == 1
    assert "broken.svs" in result.err and "1 slide(s) failed" in result.err
    assert "Traceback" not in result.err
    assert len(slide_files(tmp_path / "ds")) == 3
    fast = cli("export", folder, "--out", tmp_path / "ff", "--no-sign", "--workers", "0", "--fail-fast")
    assert_one_line_error(fast, "broken.svs")


@pytest.mark.parametrize(
    "make, args, fragment",
    [
        (lambda d: (d / "notes.svs").write_text("hello"), (), "notes.svs"),
        (lambda d: (d / "cut.svs").write_bytes(CMU.read_bytes()[: CMU.stat().st_size // 2]), (), "cut.svs"),
        (lambda d: write_pyramid(d / "nompp.tif", slide_image((512, 512), (0, 0, 512, 512)), levels=1), (), "--mpp"),
        (lambda d: (d / "ok.svs").symlink_to(CMU), ("--model", "no-such-net-xyz"), "no-such-net-xyz"),
        (lambda d: (d / "ok.svs").symlink_to(CMU), ("--device", "cuda"), "CUDA"),
    ],
)
def test_bad_input_is_one_line(tmp_path, cli, make, args, fragment):
    folder = tmp_path / "in"
    folder.mkdir()
    make(folder)
    result = cli("export", folder, "--out", tmp_path / "ds", "--no-sign", "--workers", "0", "--fail-fast", *args)
    assert_one_line_error(result, fragment)
    assert not list((tmp_path / "ds").glob("slides/*")) if (tmp_path / "ds").exists() else True


def test_weights_for_another_architecture_name_the_missing_keys(tmp_path, cli):
    import timm
    import torch

    weights = tmp_path / "r50.pt"
    torch.save(timm.create_model("resnet50", pretrained=False, num_classes=0).state_dict(), weights)
    result = cli("export", CMU, "--out", tmp_path / "ds", "--model", "resnet18", "--weights", weights, "--no-sign")
    assert_one_line_error(result, "r50.pt", "resnet18")
    assert not (tmp_path / "ds").exists()


def test_mask_with_the_wrong_aspect_is_refused(tmp_path, cli, pyramids):
    from PIL import Image

    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "patient-0.png")
    result = cli("export", pyramids / "patient-0.tif", "--out", tmp_path / "ds", "--no-sign", "--workers", "0",
                 "--masks", str(tmp_path / "{stem}.png"), "--fail-fast")
    assert_one_line_error(result, "patient-0.png")


def test_a_slide_without_tissue_writes_nothing_and_warns(tmp_path, cli):
    write_pyramid(tmp_path / "blank.tif", np.full((1024, 1024, 3), 245, np.uint8), levels=2, mpp=0.5)
    result = cli("export", tmp_path / "blank.tif", "--out", tmp_path / "ds", "--no-sign", "--workers", "0")
    assert result.code == 0
    assert "no tissue" in result.err and "blank.tif" in result.err
    assert not list((tmp_path / "ds").glob("slides/*.parquet"))


def test_one_process_streams_while_the_next_slides_are_planned(tmp_path, home, monkeypatch):
    """A cohort in one process starts embedding after its first slide's plan, not after every slide's.

    The bar moves (a slide done) before the later slides are even planned; the
    datasets are those of a run that planned nothing ahead (the shards test
    checks them against one run); a broken slide among them is still named.
    """
    from sic_share.export import ExportOptions, export_slides
    from sic_share.export._pipeline import _SlideExporter

    folder = tmp_path / "cohort"
    folder.mkdir()
    for i in range(5):
        write_pyramid(folder / f"s{i}.tif", slide_image((1536, 1536), (0, 0, 1536, 1536), seed=i), levels=2, mpp=0.5)
    (folder / "s2b.svs").write_text("not a slide")  # sorts between s2 and s3
    events: list[tuple] = []
    plan = _SlideExporter.plan

    def recorded(self, job, path):
        events.append(("plan", job.name))
        return plan(self, job, path)

    monkeypatch.setattr(_SlideExporter, "plan", recorded)
    report = export_slides([folder], tmp_path / "ds", ExportOptions(models=["handcrafted"], batch_size=16, workers=0),
                           progress=lambda s: events.append(("progress", s.slides_done, s.patches_done)))
    assert report.exported == 5 and [p.slide for p in report.problems] == ["s2b.svs"]
    first_done = next(i for i, e in enumerate(events) if e[0] == "progress" and e[1] >= 1)
    planned = {e[1]: i for i, e in enumerate(events) if e[0] == "plan"}
    assert planned["s0.tif"] < first_done < planned["s4.tif"], events[:12]
    assert len(slide_files(tmp_path / "ds")) == 5
    done = [e for e in events if e[0] == "progress"][-1]
    assert done[1] == 5 and done[2] == report.patches > 0
