"""Issue 23: when a patch's neighbours cannot see the classes, the default uses the slide's regional structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.metrics import f1_score

from sic_share.errors import SeedError
from sic_share.sic import FAMILIES, SeedLabelSpreading, create_method, draw_seeds
from sic_share.sic._families import FAINT_LEVELS
from sic_share.sic._methods import GRAPH_SAMPLE
from sic_share.sic._regional import HOMOPHILY_MIN, homophily


def test_the_faint_shift_family_and_its_held_out_draw_follow_the_issue():
    slide = FAMILIES["faint_shift"](4)
    other = FAMILIES["faint_shift_2"](4)
    assert 1200 <= slide.y.size < 2400 and 0.09 <= slide.y.mean() <= 0.31 and slide.X.shape[1] in (256, 384, 512)
    assert slide.X.shape != other.X.shape or not np.array_equal(slide.y, other.y)  # another random stream
    assert len(FAINT_LEVELS) == 3
    # per patch the shift is small against the noise: the lesion's mean is well inside one patch's noise radius
    X = slide.X.astype(np.float64)
    shift = np.linalg.norm(X[slide.y == 1].mean(axis=0) - X[slide.y == 0].mean(axis=0))
    noise = np.linalg.norm(X[slide.y == 0] - X[slide.y == 0].mean(axis=0), axis=1).mean()
    assert shift < 0.25 * noise


def test_homophily_by_hand():
    # a 4-cycle 0-1-2-3-0, labels 0 0 1 1: edges 0-1 and 2-3 agree, 1-2 and 3-0 do not; chance 1/2
    graph = sparse.csr_matrix((np.ones(8), ([0, 1, 1, 2, 2, 3, 3, 0], [1, 0, 2, 1, 3, 2, 0, 3])), shape=(4, 4))
    assert homophily(graph, np.array([0, 0, 1, 1])) == pytest.approx(0.0)
    assert homophily(graph, np.array([0, 1, 0, 1])) == pytest.approx(-1.0)
    assert homophily(graph, np.array([0, 0, 0, 0])) == 1.0
    whole = sparse.csr_matrix((np.ones(4), ([0, 1, 2, 3], [1, 0, 3, 2])), shape=(4, 4))
    assert homophily(whole, np.array([0, 0, 1, 1])) == pytest.approx(1.0)


def test_the_default_uses_the_regional_structure_where_neighbours_are_a_mix_and_only_there():
    faint = FAMILIES["faint_shift"](2, n_patches=900)
    seeds = draw_seeds(faint.y, 3, random_state=0)
    est = create_method("spreading", random_state=0).fit(faint.X, seeds, faint.coords)
    plain = create_method("spreading", random_state=0, regional=False).fit(faint.X, seeds, faint.coords)
    assert est.homophily_ < HOMOPHILY_MIN and est.regional_ and not plain.regional_
    assert plain.labels_.mean() < 0.5 * faint.y.mean()  # the collapse of the issue: the spread stops near the seeds
    assert f1_score(faint.y, est.labels_) > f1_score(faint.y, plain.labels_) + 0.4
    assert (est.labels_[seeds >= 0] == seeds[seeds >= 0]).all() and est.confidence_[seeds >= 0].min() == 1.0
    assert est.components_.shape == (6, faint.X.shape[1]) and est.proba_.shape == (900, 2)

    clear = FAMILIES["shapes"](4, n_patches=900)
    seeds = draw_seeds(clear.y, 3, random_state=0)
    est = create_method("spreading", random_state=0).fit(clear.X, seeds, clear.coords)
    assert est.homophily_ > 0.9 and not est.regional_
    assert np.array_equal(est.labels_, create_method("spreading", random_state=0, regional=False)
                          .fit(clear.X, seeds, clear.coords).labels_)


def test_without_coords_or_with_more_classes_there_is_no_regional_step():
    faint = FAMILIES["faint_shift"](2, n_patches=900)
    seeds = draw_seeds(faint.y, 3, random_state=0)
    assert not SeedLabelSpreading(random_state=0).fit(faint.X, seeds).regional_
    three = np.where(seeds == 0, 2 * (np.arange(900) % 2), seeds)  # class 0 seeds split into classes 0 and 2
    est = SeedLabelSpreading(random_state=0, regional=True).fit(faint.X, three, faint.coords)
    assert not est.regional_ and est.n_classes_ == 3


def test_regional_is_checked_and_belongs_to_spreading():
    faint = FAMILIES["faint_shift"](2, n_patches=400)
    seeds = draw_seeds(faint.y, 1, random_state=0)
    with pytest.raises(SeedError, match="regional='always' should be 'auto', True or False"):
        SeedLabelSpreading(regional="always").fit(faint.X, seeds, faint.coords)
    with pytest.raises(SeedError, match="option regional applies to method 'spreading' only"):
        create_method("sic", regional=True)


def test_a_large_slide_judges_the_anchors_graph_and_spreads_regionally():
    faint = FAMILIES["faint_shift"](5, n_patches=GRAPH_SAMPLE + 1500)
    seeds = draw_seeds(faint.y, 3, random_state=0)
    est = create_method("spreading", random_state=0).fit(faint.X, seeds, faint.coords)
    assert est.regional_ and est.homophily_ < HOMOPHILY_MIN
    assert f1_score(faint.y, est.labels_) > 0.5


def test_on_a_large_slide_a_spread_that_labels_no_anchor_positive_still_takes_the_step():
    """The anchor path judges the graph the labels spread over (anchors and seeds), not the anchors' final labels.

    On this 20,000-patch slide the first spread labels about the seeds alone; the anchors' final labels
    held one class, which read as homophily 1.0, and the step did not run (F1 0.002).
    """
    faint = FAMILIES["faint_shift"](1, n_patches=20_000)
    seeds = draw_seeds(faint.y, 3, random_state=0)
    prepared = SeedLabelSpreading(random_state=0).prepare(faint.X, faint.coords)
    plain = SeedLabelSpreading(random_state=0, regional=False).fit(faint.X, seeds, faint.coords, prepared=prepared)
    assert f1_score(faint.y, plain.labels_) < 0.05 and not plain.labels_[prepared.anchors].any()
    est = SeedLabelSpreading(random_state=0).fit(faint.X, seeds, faint.coords, prepared=prepared)
    assert est.regional_ and est.homophily_ < HOMOPHILY_MIN
    assert f1_score(faint.y, est.labels_) > 0.9


def test_on_a_large_slide_of_a_clear_family_the_step_does_not_run():
    clear = FAMILIES["mosaic"](4, n_patches=20_000)
    seeds = draw_seeds(clear.y, 3, random_state=0)
    prepared = SeedLabelSpreading(random_state=0).prepare(clear.X, clear.coords)
    est = SeedLabelSpreading(random_state=0).fit(clear.X, seeds, clear.coords, prepared=prepared)
    assert not est.regional_ and est.homophily_ > 0.9 and f1_score(clear.y, est.labels_) > 0.95
    plain = SeedLabelSpreading(random_state=0, regional=False).fit(clear.X, seeds, clear.coords, prepared=prepared)
    np.testing.assert_array_equal(est.labels_, plain.labels_)


def test_a_tuple_of_background_weights_is_auto_among_them():
    slide = FAMILIES["shapes"](4, n_patches=600)
    seeds = draw_seeds(slide.y, 3, random_state=0)
    est = SeedLabelSpreading(random_state=0, background=(0.0003, 0.0007)).fit(slide.X, seeds, slide.coords)
    assert est.background_ in (0.0003, 0.0007)
    with pytest.raises(SeedError, match="a tuple of them"):
        SeedLabelSpreading(background=(0.001, 2.0)).fit(slide.X, seeds)


def test_a_prepared_graph_keeps_the_regional_structures_for_the_next_fit(monkeypatch):
    """The regional projection and its graph depend on the slide only: an app's next click spreads on them at once."""
    import sic_share.sic._methods as methods

    faint = FAMILIES["faint_shift"](5, n_patches=GRAPH_SAMPLE + 1500)
    built = []
    real = methods.regional_projection
    monkeypatch.setattr(methods, "regional_projection", lambda *a, **k: built.append(1) or real(*a, **k))
    est = SeedLabelSpreading(random_state=0)
    prepared = est.prepare(faint.X, faint.coords)
    assert "regional" not in prepared.derived
    for clicks in (3, 4, 5):
        seeds = draw_seeds(faint.y, clicks, random_state=clicks)
        kept = SeedLabelSpreading(random_state=0).fit(faint.X, seeds, faint.coords, prepared=prepared)
        fresh = SeedLabelSpreading(random_state=0).fit(faint.X, seeds, faint.coords)
        assert kept.regional_ and fresh.regional_
        np.testing.assert_array_equal(kept.labels_, fresh.labels_)
        np.testing.assert_array_equal(kept.proba_, fresh.proba_)
        np.testing.assert_array_equal(kept.components_, fresh.components_)
    assert len(built) == 1 + 3  # once into prepared, once per fresh fit
    assert "regional" in prepared.derived
