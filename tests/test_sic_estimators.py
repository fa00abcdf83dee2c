"""SeededKMeans and SeededIterativeClustering on synthetic embeddings with known truth."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import blobs
from sklearn.metrics import f1_score

from sic_share.errors import SeedError, SicShareError
from sic_share.sic._kmeans import SeededKMeans, half_to_float32
from sic_share.sic._sic import SeededIterativeClustering
from sic_share.sic._synthetic import draw_seeds, make_slide


def _line(*groups: tuple[float, int]) -> np.ndarray:
    """1-D points: ``count`` points spread over [centre - 0.1, centre + 0.1] per group, as a column."""
    return np.concatenate([np.linspace(c - 0.1, c + 0.1, k) for c, k in groups]).astype(np.float32)[:, None]


# ---------------------------------------------------------------- SeededKMeans

def test_seeded_kmeans_starts_from_seed_class_means():
    _, X, y = blobs(300, 8, seed=1, n_classes=3)
    seeds = draw_seeds(y, 4, random_state=0)
    km = SeededKMeans(3, random_state=0).fit(X, seeds)
    for c in range(3):
        np.testing.assert_allclose(km.initial_centers_[c], X[seeds == c].mean(axis=0), rtol=1e-5)
    # cluster c is the one grown from class c's seeds: labels are class indices
    assert (km.labels_ == y).mean() == 1.0
    assert km.seeded_.all() and km.n_iter_ >= 1 and km.inertia_ > 0


def test_seeded_kmeans_draws_a_centre_for_an_unseeded_class():
    _, X, y = blobs(300, 8, seed=2, n_classes=3)
    seeds = draw_seeds(y, 3, random_state=0)
    seeds[seeds == 2] = -1  # nobody clicked class 2
    a = SeededKMeans(3, random_state=7).fit(X, seeds)
    b = SeededKMeans(3, random_state=7).fit(X, seeds)
    assert np.isfinite(a.initial_centers_).all()
    assert a.seeded_.tolist() == [True, True, False]
    # the unseeded centre is a data row, and the third blob is still found
    assert np.isclose(X, a.initial_centers_[2].astype(np.float32), atol=1e-6).all(axis=1).any()
    assert f1_score(y == 2, a.labels_ == 2) == 1.0
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_seeded_kmeans_float16_matches_float32_without_float64_copy():
    _, X, y = blobs(20_000, 64, seed=3)
    X16 = X.astype(np.float16)
    seeds = draw_seeds(y, 3, random_state=0)
    ref = SeededKMeans(2, random_state=0).fit(X16.astype(np.float32), seeds).labels_
    tracemalloc.start()
    got = SeededKMeans(2, tol=0, random_state=0).fit(X16, seeds).labels_  # tol=0: no np.var temporary
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got, ref)
    # one float32 buffer is 2 x the float16 matrix; a float64 copy alone would be 4 x
    assert peak < 2.6 * X16.nbytes, peak / X16.nbytes


def test_half_to_float32_is_exact_for_every_finite_float16():
    h = np.arange(65536, dtype=np.uint16).view(np.float16)
    h = h[np.isfinite(h)]
    out = half_to_float32(h, np.empty(h.shape, np.float32))
    np.testing.assert_array_equal(out.view(np.uint32), h.astype(np.float32).view(np.uint32))


# ---------------------------------------------------------------- SIC on separable blobs

@pytest.mark.parametrize("n_seeds", [1, 3, 5])
@pytest.mark.parametrize("dim", [16, 256])  # 256 runs in the 32-d principal subspace
def test_sic_reaches_the_truth_on_separable_blobs(n_seeds, dim):
    coords, X, y = blobs(1500, dim, seed=n_seeds)
    seeds = draw_seeds(y, n_seeds, random_state=n_seeds)
    sic = SeededIterativeClustering(random_state=0).fit(X, seeds)
    assert f1_score(y, sic.labels_) >= 0.95
    assert sic.labels_.shape == (coords.shape[0],)


def test_sic_is_deterministic_under_random_state():
    s = make_slide(3000, 64, random_state=5)
    seeds = draw_seeds(s.y, 1, random_state=5)
    a = SeededIterativeClustering(random_state=3).fit(s.X, seeds)
    b = SeededIterativeClustering(random_state=3).fit(s.X, seeds)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.scores_, b.scores_)
    assert a.n_rounds_ == b.n_rounds_ == len(a.scores_) - 1


def test_sic_float16_same_labels_as_float32_and_no_big_copy():
    s = make_slide(20_000, 256, random_state=1)
    X16 = s.X.astype(np.float16)
    seeds = draw_seeds(s.y, 3, random_state=1)
    ref = SeededIterativeClustering(random_state=0).fit(X16.astype(np.float32), seeds).labels_
    tracemalloc.start()
    got = SeededIterativeClustering(random_state=0).fit(X16, seeds).labels_
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (got == ref).mean() > 0.999
    assert peak < 1.5 * X16.nbytes, peak / X16.nbytes  # a float32 copy is 2 x, a float64 one 4 x


def test_normalize_makes_sic_blind_to_patch_brightness():
    _, X, y = blobs(1000, 16, seed=4)
    X = np.abs(X) + 1.0
    scaled = X * np.random.default_rng(0).uniform(0.2, 5.0, (X.shape[0], 1)).astype(np.float32)
    seeds = draw_seeds(y, 3, random_state=0)
    a = SeededIterativeClustering(normalize=True, random_state=0).fit(X, seeds).labels_
    b = SeededIterativeClustering(normalize=True, random_state=0).fit(scaled, seeds).labels_
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- deviations from the paper, by hand
# 1-D embeddings; n_components=None so the numbers below are the ones clustered.

def test_paper_rule_accepts_a_tie_and_uses_the_fallback_then_stops():
    # A: tissue near 0 (negative seed), B: look-alike at 12, C: lesion, two modes at 20 and 22.
    X = _line((0, 15), (12, 15), (20, 15), (22, 15))
    seeds = np.full(60, -1)
    seeds[0], seeds[59] = 0, 1
    sic = SeededIterativeClustering(rule="paper", n_components=None, random_state=0).fit(X, seeds)
    # Round 0: seeded 2-means (init 0 and 22.1) puts B and C together: both seeds right, F1 = 1.
    # Round 1: only the positive seed lies inside, so plain 2-means splits B | C; the seed is in C;
    # F1 stays 1 (a tie). The paper's "until the score goes down" keeps it (the authors' `<=` stops,
    # and they discard the fallback anyway). A fallback is the last round: C's two modes stay together.
    assert sic.scores_.tolist() == [1.0, 1.0] and sic.n_rounds_ == 1
    assert [h["kind"] for h in sic.history_] == ["fallback"]
    np.testing.assert_array_equal(sic.labels_, np.repeat([0, 0, 1, 1], 15))


def test_paper_rule_scores_the_initial_clustering_and_stops_when_the_score_goes_down():
    # A at -20, C1 at 20 and C2 at 30; positive seeds in C1 and C2, negative seeds in A and C2.
    X = _line((-20, 15), (20, 15), (30, 15))
    seeds = np.full(45, -1)
    seeds[0], seeds[44] = 0, 0
    seeds[20], seeds[35] = 1, 1
    sic = SeededIterativeClustering(rule="paper", n_components=None, random_state=0).fit(X, seeds)
    # Round 0: C1 and C2 positive: TP=2, FP=1 -> F1 = 0.8.
    # Round 1: seeded 2-means inside (init 30.1 vs 25) sends C2 negative: TP=1, FN=1 -> F1 = 2/3.
    # The score went down: refused. The authors start from score_prev = 0 and would keep it.
    assert sic.scores_ == pytest.approx([0.8])
    assert sic.history_[0]["kind"] == "seeded" and sic.history_[0]["score"] == pytest.approx(2 / 3)
    assert not sic.history_[0]["accepted"]
    np.testing.assert_array_equal(sic.labels_, np.repeat([0, 1, 1], 15))


def test_accuracy_scores_the_same_example_differently_and_a_tie_goes_on():
    # The data of the test above. With accuracy (the authors' score) round 0 gets 3 of 4 seeds right;
    # round 1 (C2 negative) trades seed 44 for seed 35: still 3 of 4, a tie, so the paper rule goes on.
    # Round 2: only the positive seed 20 is inside C1, so plain 2-means halves C1 (a tie again, kept);
    # a fallback is the last round under the paper rule.
    X = _line((-20, 15), (20, 15), (30, 15))
    seeds = np.full(45, -1)
    seeds[0], seeds[44] = 0, 0
    seeds[20], seeds[35] = 1, 1
    sic = SeededIterativeClustering(rule="paper", score="accuracy", n_components=None, random_state=0).fit(X, seeds)
    assert sic.scores_ == pytest.approx([0.75, 0.75, 0.75])
    assert [(h["kind"], h["accepted"]) for h in sic.history_] == [("seeded", True), ("fallback", True)]
    np.testing.assert_array_equal(np.flatnonzero(sic.labels_), np.arange(15, 22))  # half of C1, seed 20 in it


def test_a_positive_cluster_of_one_patch_ends_the_loop_without_numpy_errors():
    # Deviation 4: the authors find "one class left" through np.seterr(all="raise"); we count. A lone
    # positive patch cannot be split: no refinement is tried, under either rule.
    X = _line((0, 20), (10, 1))
    seeds = np.full(21, -1)
    seeds[0], seeds[20] = 0, 1
    for rule in ("paper", "structure"):
        sic = SeededIterativeClustering(rule=rule, n_components=None, random_state=0).fit(X, seeds)
        assert (sic.n_rounds_, sic.history_) == (0, [])
        np.testing.assert_array_equal(sic.labels_, np.repeat([0, 1], [20, 1]))


def test_max_rounds_zero_is_seeded_kmeans():
    s = make_slide(1500, 64, n_subtypes=4, lesion_fraction=0.06, random_state=3)
    seeds = draw_seeds(s.y, 3, random_state=3)
    sic = SeededIterativeClustering(max_rounds=0, n_components=None, random_state=0).fit(s.X, seeds)
    km = SeededKMeans(2, max_iter=100, random_state=0).fit(s.X, seeds)
    assert sic.n_rounds_ == 0 and sic.history_ == []
    assert (sic.labels_ == km.labels_).mean() > 0.99


def test_paper_rule_clusters_the_full_embedding_and_ours_a_projection():
    s = make_slide(3000, 256, random_state=4)
    seeds = draw_seeds(s.y, 3, random_state=4)
    assert SeededIterativeClustering(rule="paper", random_state=0).fit(s.X, seeds).components_ is None
    ours = SeededIterativeClustering(random_state=0).fit(s.X, seeds)
    assert ours.components_.shape[1] == 256 and ours.components_.shape[0] <= 32 + 2
    with pytest.raises(SeedError, match="n_components=0"):
        SeededIterativeClustering(n_components=0).fit(s.X, seeds)


def test_paper_rule_stops_when_the_fallback_splits_the_positive_seeds():
    # One positive blob with positive seeds at both ends: any 2-way split loses one seed.
    X = _line((0, 20), (10, 1), (20, 1), (30, 1))
    X[20:] = np.linspace(9.0, 11.0, 3)[:, None]  # a compact positive blob of 3 spread points
    seeds = np.full(23, -1)
    seeds[0], seeds[20], seeds[22] = 0, 1, 1
    sic = SeededIterativeClustering(rule="paper", n_components=None, random_state=0).fit(X, seeds)
    assert sic.n_rounds_ == 0 and not sic.history_[0]["accepted"]
    np.testing.assert_array_equal(sic.labels_, np.repeat([0, 1], [20, 3]))


def test_structure_rule_keeps_a_pure_lesion_whole_where_the_paper_cuts_it():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (300, 2)), rng.normal(10, 1, (200, 2))]).astype(np.float32)
    seeds = np.full(500, -1)
    seeds[0], seeds[300] = 0, 1
    truth = np.repeat([0, 1], [300, 200])
    ours = SeededIterativeClustering(n_components=None, random_state=0).fit(X, seeds)
    paper = SeededIterativeClustering(rule="paper", n_components=None, random_state=0).fit(X, seeds)
    # both try a fallback split of the lesion; the seed score ties (1.0 = 1.0)
    assert paper.n_rounds_ == 1 and f1_score(truth, paper.labels_) < 0.8
    assert ours.n_rounds_ == 0 and f1_score(truth, ours.labels_) == 1.0
    assert ours.history_[0]["statistic"] < 1.8692  # Gaussian along the split line: not significant


def test_structure_rule_splits_off_an_unseeded_look_alike_and_goes_on():
    # tissue at 0 (seeded), look-alike at 12 (no seed), lesion at 20 (seeded): 40 points each.
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(c, 0.5, 40) for c in (0, 12, 20)]).astype(np.float32)[:, None]
    seeds = np.full(120, -1)
    seeds[0], seeds[119] = 0, 1
    truth = np.repeat([0, 0, 1], 40)
    ours = SeededIterativeClustering(n_components=None, random_state=0).fit(X, seeds)
    np.testing.assert_array_equal(ours.labels_, truth)
    kinds = [(h["kind"], h["accepted"]) for h in ours.history_]
    assert kinds[0] == ("fallback", True) and ours.history_[0]["statistic"] > 1.8692
    assert kinds[-1] == ("fallback", False)  # the lesion alone is one bump: stop


# ---------------------------------------------------------------- beyond the paper, on average

def _mean_f1(rule: str, *, mimic: bool, cases: range) -> float:
    scores = []
    for case in cases:
        s = make_slide(1500, 64, mimic=mimic, mimic_gap=6.0, lesion_fraction=0.08, random_state=case)
        seeds = draw_seeds(s.y, (1, 3, 5)[case % 3], random_state=case)
        sic = SeededIterativeClustering(rule=rule, random_state=case).fit(s.X, seeds)
        scores.append(f1_score(s.y, sic.labels_))
    return float(np.mean(scores))


def test_structure_rule_beats_the_paper_on_slides_with_a_lookalike_subtype():
    ours = _mean_f1("structure", mimic=True, cases=range(10))
    paper = _mean_f1("paper", mimic=True, cases=range(10))
    assert ours > paper + 0.1, (ours, paper)


def test_structure_rule_is_not_worse_on_easy_slides():
    ours = _mean_f1("structure", mimic=False, cases=range(100, 108))
    paper = _mean_f1("paper", mimic=False, cases=range(100, 108))
    assert ours >= paper - 0.01, (ours, paper)


def test_multiclass_sic_beats_seeded_kmeans_on_classes_with_subtypes():
    sic_f1, km_f1 = [], []
    for case in range(6):
        s = make_slide(2000, 64, n_classes=3, n_subtypes=2, random_state=case)
        seeds = draw_seeds(s.subtype, 2, random_state=case)  # 2 clicks on each tissue sub-type
        seeds = np.where(seeds >= 0, s.y, -1)
        sic = SeededIterativeClustering(random_state=0).fit(s.X, seeds)
        assert sic.n_classes_ == 3 and set(np.unique(sic.labels_)) <= {0, 1, 2}
        sic_f1.append(f1_score(s.y, sic.labels_, average="macro"))
        km_f1.append(f1_score(s.y, SeededKMeans(3, random_state=0).fit(s.X, seeds).labels_, average="macro"))
    assert np.mean(sic_f1) > np.mean(km_f1) + 0.08, (np.mean(sic_f1), np.mean(km_f1))


# ---------------------------------------------------------------- bad input: one clear line

def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, SicShareError) and isinstance(err.value, ValueError)
    return msg


def test_binary_sic_with_seeds_of_one_class_says_what_to_add():
    X = blobs(100, 8)[1]
    seeds = np.full(100, -1)
    seeds[:3] = 1
    with pytest.raises(SeedError) as err:
        SeededIterativeClustering(n_classes=2).fit(X, seeds)
    msg = _one_line(err)
    assert "only class 1" in msg and "add a negative seed" in msg


def test_no_seed_at_all_is_refused():
    _, X, _ = blobs(100, 8)
    with pytest.raises(SeedError) as err:
        SeededIterativeClustering().fit(X, np.full(100, -1))
    assert "at least two classes" in _one_line(err)


def test_fewer_patches_than_classes():
    X = np.zeros((2, 4), np.float32)
    with pytest.raises(SeedError) as err:
        SeededIterativeClustering(n_classes=3).fit(X, np.array([0, 1]))
    assert _one_line(err).startswith("n_samples=2 should be >= n_clusters=3")
    with pytest.raises(SeedError, match="n_samples=2 should be >= n_clusters=3"):
        SeededKMeans(3).fit(X, np.array([0, 1]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dim", [8, 128])
def test_non_finite_embeddings(dtype, bad, dim):
    _, X, y = blobs(200, dim)
    X = X.astype(dtype)
    X[17, 3] = bad
    with pytest.raises(SeedError) as err:
        SeededIterativeClustering().fit(X, draw_seeds(y, 2, random_state=0))
    assert "NaN or infinite" in _one_line(err)


def test_seed_index_out_of_range_is_quoted():
    _, X, y = blobs(100, 8)
    seeds = draw_seeds(y, 2, random_state=0)
    seeds[5] = 7
    with pytest.raises(SeedError) as err:
        SeededIterativeClustering(n_classes=2).fit(X, seeds)
    assert "seed class index 7 is out of range" in _one_line(err)
    seeds[5] = -3
    with pytest.raises(SeedError, match="index -3"):
        SeededKMeans(2).fit(X, seeds)


def test_seeds_of_the_wrong_length():
    _, X, _ = blobs(100, 8)
    with pytest.raises(SeedError) as err:
        SeededIterativeClustering().fit(X, np.array([0, 1]))
    assert "shape (100,)" in _one_line(err)
