"""Encoders: handcrafted features, timm models with local weights, layer cuts, and their errors.

Real timm models with random weights that the tests save themselves (no network here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("safetensors")

from PIL import Image  # noqa: E402

from sic_share.encoders import FEATURE_NAMES, Encoder, create_encoder, list_encoders  # noqa: E402
from sic_share.encoders._handcrafted import _GROUP_SCALE, rgb_to_hed  # noqa: E402
from sic_share.errors import EncoderError  # noqa: E402

PURPLE = (90, 60, 150)  # haematoxylin-rich: nuclei
PINK = (240, 110, 170)  # eosin-rich: stroma, cytoplasm
WHITE = (245, 245, 245)  # background


def patches(colour: tuple[int, int, int], n: int = 2, size: int = 256, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size) patches of one colour with mild texture noise."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.int16).reshape(1, 3, 1, 1)
    noise = rng.integers(-12, 13, (n, 3, size, size), dtype=np.int16)
    return torch.from_numpy(np.clip(base + noise, 0, 255).astype(np.uint8))


def blocky(n: int = 3, size: int = 96, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3) images of 8x8 random blocks: structure a network responds to."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, 1), 8, 2)


def to_batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def feature(values: torch.Tensor, name: str) -> torch.Tensor:
    return values[:, FEATURE_NAMES.index(name)]


@pytest.fixture(scope="session")
def resnet18_state() -> dict[str, torch.Tensor]:
    """A ResNet-18 state dict with its 1000-class ``fc`` head, as torchvision or timm save it."""
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False).state_dict()


@pytest.fixture(scope="session")
def resnet18_file(resnet18_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(resnet18_state, path)
    return path


@pytest.fixture(scope="session")
def resnet50_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "weights.pt"
    torch.save(timm.create_model("resnet50", pretrained=False).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def resnet18_encoder(resnet18_file):
    return create_encoder("resnet18", weights=resnet18_file)


@pytest.fixture(scope="session")
def probe() -> torch.Tensor:
    """One small patch; the encoder resizes it to the network's 224 px."""
    return to_batch(blocky(n=1, size=64, seed=5))


@pytest.fixture(scope="session")
def probe_embedding(resnet18_encoder, probe) -> torch.Tensor:
    return resnet18_encoder(probe)


# --- handcrafted -------------------------------------------------------------------------------


def test_handcrafted_shape_dtype_finite_for_any_square_size():
    encoder = create_encoder("handcrafted")
    assert isinstance(encoder, Encoder)
    assert encoder.dim == len(FEATURE_NAMES) == 40
    for size in (256, 257, 64):
        out = encoder(patches(PURPLE, n=3, size=size))
        assert out.shape == (3, 40)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
    black_and_white = torch.zeros(2, 3, 256, 256, dtype=torch.uint8)
    black_and_white[1] = 255
    assert torch.isfinite(encoder(black_and_white)).all()


def test_handcrafted_is_deterministic():
    batch = torch.cat([patches(PURPLE), patches(PINK), patches(WHITE)])
    first = create_encoder("handcrafted")(batch)
    again = create_encoder("handcrafted")(batch)
    assert torch.equal(first, again)
    # a patch's features do not depend on the rest of its batch
    assert torch.equal(create_encoder("handcrafted")(batch[2:3]), first[2:3])


def test_handcrafted_tells_haematoxylin_from_eosin_from_background():
    encoder = create_encoder("handcrafted")
    purple, pink, white = (encoder(patches(c, n=4, seed=i)) for i, c in enumerate((PURPLE, PINK, WHITE)))
    assert (feature(purple, "h_mean") > 5 * feature(pink, "h_mean").max()).all()
    assert (feature(pink, "e_mean") > 1.5 * feature(purple, "e_mean").max()).all()
    assert (feature(white, "tissue_fraction") == 0).all()
    assert (feature(purple, "tissue_fraction") == feature(pink, "tissue_fraction")).all()
    assert (feature(white, "od_mean") < 0.3 * feature(pink, "od_mean").min()).all()
    # in embedding space each colour is a tight cluster far from the others
    centres = torch.stack([purple.mean(0), pink.mean(0), white.mean(0)])
    spread = max(torch.cdist(group, group).max() for group in (purple, pink, white))
    between = torch.pdist(centres).min()
    assert between > 5 * spread


def test_stain_separation_matches_skimage():
    skimage_color = pytest.importorskip("skimage.color")
    image = blocky(n=1, size=64)[0]
    hed = skimage_color.rgb2hed(image)
    ours = rgb_to_hed(to_batch(image[None]).double() / 255.0)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, hed, atol=1e-10)
    # the encoder's own path (8-bit lookup table, one matrix product) at its working size
    out = create_encoder("handcrafted")(to_batch(image[None]))
    scale = _GROUP_SCALE["colour"]
    for channel, stain in enumerate("hed"):
        np.testing.assert_allclose(feature(out, f"{stain}_mean").item() / scale, hed[..., channel].mean(), rtol=1e-4)
        np.testing.assert_allclose(feature(out, f"{stain}_std").item() / scale, hed[..., channel].std(), rtol=1e-3)


def test_handcrafted_info_and_refuses_weights_or_layer(tmp_path):
    info = create_encoder("handcrafted").info()
    body = json.loads(json.dumps(asdict(info)))
    assert body["source"] == "handcrafted" and body["dim"] == 40
    assert body["preprocessing"]["input_size"] == 64
    with pytest.raises(EncoderError, match="takes no weights or layer"):
        create_encoder("handcrafted", weights=tmp_path / "w.pt")
    with pytest.raises(EncoderError, match="takes no weights or layer"):
        create_encoder("handcrafted", layer="layer3")


def test_batch_must_be_uint8_square_rgb():
    encoder = create_encoder("handcrafted")
    with pytest.raises(EncoderError, match="uint8 RGB patches"):
        encoder(torch.zeros(1, 3, 64, 64))
    with pytest.raises(EncoderError, match="uint8 RGB patches"):
        encoder(torch.zeros(1, 3, 64, 80, dtype=torch.uint8))
    with pytest.raises(EncoderError, match="uint8 RGB patches"):
        encoder(torch.zeros(1, 4, 64, 64, dtype=torch.uint8))
    assert encoder(torch.zeros(0, 3, 64, 64, dtype=torch.uint8)).shape == (0, 40)


# --- timm models with local weights ----------------------------------------------------------


def test_timm_output_equals_timm_forward_with_timm_preprocessing(resnet18_encoder, resnet18_state):
    reference = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    reference.load_state_dict({k: v for k, v in resnet18_state.items() if not k.startswith("fc.")})
    config = timm.data.resolve_data_config({}, model=reference)
    # timm's own eval transform on PIL images, without the centre crop (a patch is the field of view)
    transform = timm.data.create_transform(**{**config, "crop_pct": 1.0})
    images = blocky(n=2, size=96)
    with torch.inference_mode():
        expected = reference(torch.stack([transform(Image.fromarray(image)) for image in images]))
    out = resnet18_encoder(to_batch(images))
    assert out.shape == (2, 512) and out.dtype == torch.float32
    assert resnet18_encoder.input_size == 224
    torch.testing.assert_close(out, expected, atol=2e-3, rtol=1e-2)  # PIL rounds to uint8 after resizing
    assert torch.nn.functional.cosine_similarity(out, expected).min() > 0.9999


def test_timm_info_is_json_and_carries_the_weights_digest(resnet18_encoder, resnet18_file):
    info = resnet18_encoder.info()
    body = json.loads(json.dumps(asdict(info)))
    assert body["id"] == "resnet18" and body["dim"] == 512 and body["source"] == "local"
    assert body["weights_sha256"] == hashlib.sha256(resnet18_file.read_bytes()).hexdigest()
    assert body["layer"] is None
    assert body["preprocessing"] == {
        "input_size": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "interpolation": "bicubic",
    }


def test_lightning_checkpoint_with_prefixes_and_heads_loads(resnet18_state, probe, probe_embedding, tmp_path):
    # Ciga et al.'s SimCLR checkpoint: Lightning "state_dict", keys "model.resnet.<key>", a
    # projection head and argparse hyper-parameters next to the weights.
    state = {f"model.resnet.{k}": v for k, v in resnet18_state.items()}
    state["model.projection.0.weight"] = torch.zeros(128, 512)
    checkpoint = {
        "epoch": 3,
        "state_dict": state,
        "hyper_parameters": {"args": argparse.Namespace(arch="resnet18", lr=0.1)},
    }
    path = tmp_path / "tenpercent_resnet18.ckpt"
    torch.save(checkpoint, path)
    encoder = create_encoder("resnet18", weights=path)
    assert torch.equal(encoder(probe), probe_embedding)
    assert encoder.info().weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_ddp_prefixes_nested_under_model_key_load(resnet18_state, probe, probe_embedding, tmp_path):
    path = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.backbone.{k}": v for k, v in resnet18_state.items()}}, path)
    assert torch.equal(create_encoder("resnet18", weights=path)(probe), probe_embedding)


def test_safetensors_file_loads(resnet18_state, probe, probe_embedding, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_state.items()}, str(path))
    encoder = create_encoder("resnet18", weights=str(path))
    assert torch.equal(encoder(probe), probe_embedding)
    assert encoder.info().weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_resnet50_weights_for_resnet18_name_the_keys(resnet50_file):
    with pytest.raises(EncoderError) as caught:
        create_encoder("resnet18", weights=resnet50_file)
    message = str(caught.value)
    assert message.startswith("weights.pt does not match resnet18: ")
    assert "shape mismatch layer1.0.conv1.weight (file [64, 64, 1, 1], model [64, 64, 3, 3])" in message
    assert "more)" in message
    assert message.endswith("is it a resnet50 checkpoint?")
    assert "\n" not in message


def test_missing_keys_are_named(resnet18_state, tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in resnet18_state.items() if not k.startswith("layer4.1.")}, path)
    with pytest.raises(EncoderError, match=r"partial.pt does not match resnet18: missing layer4\.1\.\w+.*more\)"):
        create_encoder("resnet18", weights=path)


def test_unreadable_or_missing_weights_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(EncoderError, match="junk.pt is not a PyTorch or safetensors weights file"):
        create_encoder("resnet18", weights=junk)
    with pytest.raises(EncoderError, match="does not exist"):
        create_encoder("resnet18", weights=tmp_path / "absent.pt")
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 1, "state_dict": {}}, empty)
    with pytest.raises(EncoderError, match="holds no tensors"):
        create_encoder("resnet18", weights=empty)


# --- layer cuts -------------------------------------------------------------------------------


def test_resnet50_layer3_is_1024_dimensional(resnet50_file):
    encoder = create_encoder("resnet50", weights=resnet50_file, layer="layer3")
    assert encoder.dim == 1024
    out = encoder(to_batch(blocky(n=1, size=64)))
    assert out.shape == (1, 1024) and torch.isfinite(out).all()
    info = encoder.info()
    assert info.layer == "layer3" and info.dim == 1024 and info.source == "local"


def test_layer_cut_loads_the_same_weights_as_the_full_model(resnet18_file, resnet18_state):
    encoder = create_encoder("resnet18", weights=resnet18_file, layer="layer3")
    assert encoder.dim == 256
    reference = timm.create_model("resnet18", pretrained=False).eval()
    reference.load_state_dict(resnet18_state)
    batch = to_batch(blocky(n=1, size=64))
    x = encoder.preprocess(batch)
    with torch.inference_mode():
        h = reference.maxpool(reference.act1(reference.bn1(reference.conv1(x))))
        expected = reference.layer3(reference.layer2(reference.layer1(h))).mean(dim=(2, 3))
    torch.testing.assert_close(encoder(batch), expected, atol=1e-5, rtol=1e-5)


def test_unknown_layer_lists_the_valid_ones():
    with pytest.raises(EncoderError, match="resnet50 has no layer 'layer5': use one of act1, layer1, layer2, layer3, layer4"):
        create_encoder("resnet50", layer="layer5")


# --- names, network, devices ------------------------------------------------------------------


def test_unknown_name_lists_handcrafted_and_where_to_look():
    with pytest.raises(EncoderError) as caught:
        create_encoder("resnet5o")
    message = str(caught.value)
    assert "unknown model 'resnet5o'" in message
    assert "handcrafted" in message and "sic-share models" in message and "timm.list_models" in message
    assert "resnet50" in message  # close-match suggestion


def test_list_encoders():
    # registered names first (sorted), then timm's
    assert list_encoders()[:4] == [
        "efficientnet_lite0.in1k", "efficientnet_lite1.in1k", "efficientnet_lite2.in1k", "handcrafted"]
    assert "resnet50" in list_encoders()
    names = list_encoders("resnet1*")
    assert "resnet18" in names and "handcrafted" not in names
    assert list_encoders("hand*") == ["handcrafted"]


def warm_hub_cache(hub: Path, repo: str, files: dict[str, bytes]) -> None:
    """Lay files out as huggingface_hub's cache does after a download of ``repo``."""
    root = hub / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_pretrained_weights_come_from_the_cache_or_fail_in_one_line(resnet18_state, tmp_path):
    from safetensors.torch import save

    home = tmp_path / "hf"
    config = {
        "architecture": "resnet18",
        "num_classes": 1000,
        "pretrained_cfg": {"input_size": [3, 160, 160], "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5],
                           "std": [0.25, 0.25, 0.25], "num_classes": 1000, "classifier": "fc"},
    }
    warm_hub_cache(home / "hub", "lab/he-resnet", {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": save(resnet18_state),
    })
    env = {**os.environ, "HF_HOME": str(home), "TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_OFFLINE": "1",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("HF_HUB_CACHE", None)
    code = textwrap.dedent(
        """
        import json, dataclasses
        from sic_share.encoders import create_encoder
        from sic_share.errors import EncoderError
        try:
            create_encoder("resnet18")
        except EncoderError as exc:
            print(exc)
        print(json.dumps(dataclasses.asdict(create_encoder("hf-hub:lab/he-resnet").info())))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    error, info = result.stdout.splitlines()
    assert error == (
        "weights for resnet18 are not in the local cache and cannot be downloaded (HF_HUB_OFFLINE is set): "
        "pass --weights FILE or warm the cache (HF_HOME) on a machine with network"
    )
    assert json.loads(info) == {
        "id": "hf-hub:lab/he-resnet", "dim": 512, "source": "hf-hub", "weights_sha256": None, "layer": None,
        "preprocessing": {"input_size": 160, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                          "interpolation": "bilinear"},
    }


def _hub_resolves() -> bool:
    import socket

    try:
        socket.getaddrinfo("huggingface.co", 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_hub_resolves() or bool(os.environ.get("HTTPS_PROXY")), reason="needs a machine without network")
def test_without_network_the_error_comes_at_once_not_after_retries(tmp_path, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.perf_counter()
    with pytest.raises(EncoderError) as caught:
        create_encoder("resnet18")
    assert time.perf_counter() - start < 15  # huggingface_hub alone retries for about 45 s
    assert str(caught.value).startswith(
        "weights for resnet18 are not in the local cache and cannot be downloaded (no network: huggingface.co "
        "does not resolve): pass --weights FILE"
    )
    assert constants.HF_HUB_OFFLINE is False  # offline mode was switched on for the call only


def test_cuda_without_gpu_is_refused():
    if torch.cuda.is_available():
        with pytest.raises(EncoderError, match="torch sees"):
            create_encoder("handcrafted", device=f"cuda:{torch.cuda.device_count()}")
        return
    with pytest.raises(EncoderError, match=r"^CUDA was asked for .* torch sees no GPU .*: use --device cpu$"):
        create_encoder("handcrafted", device="cuda")
    with pytest.raises(EncoderError, match="use --device cpu"):
        create_encoder("resnet18", device="cuda")
    with pytest.raises(EncoderError, match="is not a torch device"):
        create_encoder("handcrafted", device="gpu0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu(resnet18_file):
    batch = torch.cat([patches(PURPLE), patches(PINK), patches(WHITE)])
    cpu = create_encoder("handcrafted")(batch)
    gpu = create_encoder("handcrafted", device="cuda")(batch.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, atol=0.05, rtol=0.05)
    encoder = create_encoder("resnet18", weights=resnet18_file, device="cuda")
    images = to_batch(blocky(n=2, size=64))
    on_gpu = encoder(images).cpu()
    on_cpu = encoder.to("cpu")(images)
    assert torch.nn.functional.cosine_similarity(on_gpu, on_cpu).min() > 0.99  # bf16 autocast
