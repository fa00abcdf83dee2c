"""Where a method is least sure: the confidence layer's tiers, the regions to seed next, and the PNG that draws them."""

from __future__ import annotations

import numpy as np
import pytest

from sic_share.errors import SicShareError
from sic_share.viz import confidence_scale, render_confidence, uncertain_regions
from sic_share.viz._confidence import TIER_COLORS


def grid(cols: int, rows: int, stride: int = 128) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(cols) * stride + 128, np.arange(rows) * stride + 128)
    return np.column_stack([xs.ravel(), ys.ravel()]).astype(np.int32)


def test_tiers_mark_the_least_certain_shares_whatever_the_values():
    # margins all below 0.5, as label spreading's often are: still only a fifth is marked
    conf = np.linspace(0.01, 0.45, 200).astype(np.float32)
    scale = confidence_scale(conf)
    assert scale.counts == (10, 30)
    assert (scale.tier[:10] == 0).all() and (scale.tier[10:40] == 1).all() and (scale.tier[40:] == -1).all()
    assert scale.limits[0] == pytest.approx(conf[9]) and scale.limits[1] == pytest.approx(conf[39])
    lines = scale.legend()
    assert lines[0] == "least certain 5% (10 patches): confidence 0.01-0.03"
    assert lines[1] == "next 15% (30 patches): confidence 0.03-0.10"
    assert lines[2] == "the other 160 patches: surer (confidence above 0.10)"


def test_patches_as_sure_as_the_surest_are_never_marked():
    assert (confidence_scale(np.ones(50)).tier == -1).all()
    conf = np.ones(100, np.float32)
    conf[:3] = 0.2
    scale = confidence_scale(conf)
    assert scale.counts == (3, 0) and (scale.tier[3:] == -1).all()
    assert scale.legend()[0] == "least certain 3% (3 patches): confidence 0.20-0.20"


def test_ties_make_a_tier_larger_and_its_legend_says_how_large():
    conf = np.full(100, 0.6, np.float32)
    conf[:12] = 0.0  # SIC's patches in a cluster without seeds all have confidence 0
    scale = confidence_scale(conf)
    assert scale.counts[0] == 12 and scale.legend()[0] == "least certain 12% (12 patches): confidence 0.00-0.00"


def test_bad_confidence_is_one_sentence():
    with pytest.raises(SicShareError, match=r"\[0, 1\]"):
        confidence_scale(np.array([0.5, 1.5]))
    with pytest.raises(SicShareError, match="increasing"):
        confidence_scale(np.ones(4), shares=(0.5, 0.2))


def test_regions_are_the_largest_groups_of_unsure_patches_on_the_grid_largest_first():
    coords = grid(20, 20)
    conf = np.full(400, 0.9, np.float32)
    band = (coords[:, 0] == 128 + 5 * 128) & (coords[:, 1] <= 128 + 14 * 128)  # 15 patches in column 5
    blob = (coords[:, 0] >= 128 + 15 * 128) & (coords[:, 1] >= 128 + 17 * 128)  # 5 x 3 = 15 ... trimmed below
    blob &= coords[:, 0] <= 128 + 16 * 128  # 2 x 3 = 6 patches
    lone = np.flatnonzero((coords[:, 0] == 128 + 12 * 128) & (coords[:, 1] == 128 + 2 * 128))
    conf[band] = 0.2
    conf[blob] = 0.1
    conf[lone] = 0.05
    scale = confidence_scale(conf)  # 20 % of 400 = 80 patches: every one of the 22 unsure patches is marked
    regions = uncertain_regions(coords, scale, conf)
    assert [r.n_patches for r in regions] == [15, 6, 1]
    first = regions[0]
    assert band[first.patch] and (first.x, first.y) == tuple(coords[first.patch])
    assert first.y == 128 + 7 * 128  # the middle of the band
    assert first.box == (768, 128, 768, 1920) and first.confidence == pytest.approx(0.2)
    assert regions[2].patch == lone[0]


def test_the_png_marks_the_tiers_in_yellow_and_numbers_the_regions(tmp_path):
    coords = grid(30, 30)
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 0.5, 900).astype(np.float32)
    corner = (coords[:, 0] < 128 * 6) & (coords[:, 1] < 128 * 6)
    conf[corner] = rng.uniform(0.0, 0.02, corner.sum())  # 25 patches, far less certain than the rest
    image = render_confidence(coords=coords, confidence=conf, patch_size=256, max_side=600, legend=True,
                              title="t")
    layer = np.asarray(image)[: image.info["overlay_height"]]
    opaque = (layer[..., :3] == TIER_COLORS[0][:3]).all(axis=2) & (layer[..., 3] == TIER_COLORS[0][3])
    cell = image.info["overlay_height"] / (30 * 128 + 128) * 128
    # 5 % of 900 = 45 patches opaque yellow (the 25 of the corner and 20 more; cells on the slide's edge are
    # larger), less the disc of region 1; the other 95 % are not
    assert 40 * cell**2 < opaque.sum() <= 60 * cell**2
    top_left = layer[: int(5 * cell), : int(5 * cell)]
    assert (top_left[..., 3] > 0).mean() > 0.9  # the corner is marked
    assert ((layer[..., :3] == 255).all(axis=2) & (layer[..., 3] == 255)).any()  # a white disc (a number)
    # the surer patches are a faint grey, so the tissue's outline shows on a PNG of its own
    middle = layer[int(15 * cell):int(20 * cell), int(15 * cell):int(20 * cell)]
    assert (middle[..., 3] > 0).all() and (middle[..., 3] < 100).mean() > 0.6  # some are in the next 15 %
    band = np.asarray(image.convert("RGB"))[image.info["overlay_height"]:]
    assert (band < 60).all(axis=2).sum() > 100  # the legend's text
    bare = render_confidence(coords=coords, confidence=conf, patch_size=256, max_side=600)
    assert bare.height == image.info["overlay_height"]
