"""Label spreading over a graph built beforehand, with the background prior chosen per slide.

Both paths of :class:`~sic_share.sic.SeedLabelSpreading` end here: the exact one
(a graph over every patch) and the anchor one (:mod:`sic_share.sic._anchors`).

**The background prior.** With two classes, the first is "everything else": its
seeds sample a few of the slide's many tissues. Each node gets a private negative
node joined with weight ``background`` (relative to its degree), so a patch far
from every seed drifts to the negative class instead of taking whichever seed the
graph happens to reach first. How far the positive class spreads depends on that
weight, and the best weight varies by slide: on 40 slides of the four tuning
families (3 seed counts each), picking the best of 0.001/0.002/0.004 per slide after
seeing its truth would raise mean F1 from 0.80 to 0.88; this rule reaches 0.84.
``background="auto"`` picks, among :data:`BACKGROUNDS`, the weight whose labels cut
the graph least (the normalized cut of Shi and Malik 2000: edges
across the two classes over each class's volume), a criterion that needs no truth:
a weight too small leaks the lesion into its neighbours, one too large cuts it
short, and both cut through dense parts of the graph.

On a slide small enough for the exact graph, the labels judged are the final ones
(after the grid smoothing) and the criterion adds their normalized cut of the patch
grid (a compact labelling on the slide), over 0.001-0.008: on the four tuning
families (30 slides, 1/3/5 seeds) 0.915 -> 0.923, no family and seed count worse,
after the same rule had held on slides the suite never draws (+0.007 and +0.008 on
two sets of 20 slides per family). The anchor path keeps the graph cut over
:data:`ANCHOR_BACKGROUNDS` (see there).

**More seeds, larger weights.** Every positive seed adds positive mass to the graph,
so the weight that stops the lesion at its border grows with the positive seeds:
on the tuning families the best weight per slide was mostly 0.0005-0.001 with one
seed per class and 0.004-0.008 with five. The candidates are therefore scaled by
:func:`seed_scale` (x0.5 at one positive seed, x1 at two and three, x1.41 at four,
x2 at five and more), on both paths. Tuning families, 1/3/5 seeds: the suite's
slides 0.923 -> 0.932; slides 30-49, which the suite never draws, 0.926 -> 0.939
(the four runs there that lost more than 0.05 to the authors' path: none left);
slides 50-69 with 1-5 seeds, looked at only after the rule was fixed, 0.945 -> 0.950
(one seed 0.917 -> 0.919, four 0.962 -> 0.967, five 0.944 -> 0.964). Slides of
12,000 patches (the anchor path, 20 per family): 0.872 -> 0.925, one seed 0.701 ->
0.862, five 0.958 -> 0.954. Scaling in proportion to the seeds (x1/3 at one, x5/3
at five) scored 0.921 on the suite's slides; x0.71 at two seeds lost to x1 on
slides 30-49 (0.961 -> 0.939), hence the step there. It counts the lesion seeds, not
the others: with unequal counts (lesion:other 1:3, 1:5, 2:5, 3:1, 5:1; slides 30-49)
scaling by the lesion seeds scored 0.923, no scaling 0.893, by the other class's
seeds 0.843, by their mean 0.890.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.semi_supervised import LabelSpreading

__all__ = ["ANCHOR_BACKGROUNDS", "BACKGROUNDS", "filled_proba", "normalized_cut", "seed_scale", "spread_labels"]

#: The background weights ``background="auto"`` chooses from at two or three positive seeds;
#: :func:`seed_scale` scales them for other counts (see the module notes).
BACKGROUNDS = (0.001, 0.002, 0.004, 0.008)
#: Those of the large-slide (anchor) path, scaled the same way: 0.008 changed no F1 there
#: (24 slides of 12,000 patches, 3 seeds) and cost 20 ms a click at 100k patches.
ANCHOR_BACKGROUNDS = (0.001, 0.002, 0.004)


def seed_scale(n_positive: int) -> float:
    """The factor on the candidate weights for ``n_positive`` positive seeds (module notes).

    x0.5 at one seed, x1 at two and three (the count the weights were set with),
    x1.41 at four, x2 at five, held at x2 above five. Each step is measured: at two
    seeds x0.71 lost to x1 (20 slides per family), at four and at ten the larger
    weights won.
    """
    q = int(n_positive)
    return 0.5 if q <= 1 else 1.0 if q <= 3 else float(2.0 ** ((min(q, 5) - 3) / 2))


def filled_proba(dist: np.ndarray, k: int) -> np.ndarray:
    """Spread distributions as probabilities: rows summing to 1, equal for a node no label reached (a new array)."""
    total = dist.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    proba = dist / np.where(empty[:, None], 1.0, total)
    proba[empty] = 1.0 / k
    return proba


def normalized_cut(graph: sparse.csr_matrix, labels: np.ndarray) -> float:
    """Shi and Malik's normalized cut of a labelling: sum over classes of (edges leaving it) / (its volume).

    ``inf`` when a class is empty or has no edges (a labelling that gives up a class
    is never preferred).
    """
    degree = np.asarray(graph.sum(axis=1)).ravel()
    total = 0.0
    for c in np.unique(labels):
        inside = (labels == c).astype(np.float64)
        volume = float(degree @ inside)
        if volume <= 0:
            return float("inf")
        total += (volume - float(inside @ (graph @ inside))) / volume
    return total if np.unique(labels).size > 1 else float("inf")


def _spread_once(graph: sparse.csr_matrix, labels: np.ndarray, k: int, alpha: float, background: float) -> np.ndarray:
    """scikit-learn's ``LabelSpreading`` over ``graph`` (plus the background nodes); distributions of its nodes."""
    m = graph.shape[0]
    if k == 2 and background > 0:
        # A private negative node per node, joined with background x its degree: its normalised weight is `background`.
        share = background**2 / (1 - background**2)
        prior = sparse.diags(share * np.asarray(graph.sum(axis=1)).ravel())
        graph = sparse.bmat([[graph, prior], [prior, None]], format="csr")
        labels = np.concatenate([labels, np.zeros(m, labels.dtype)])
    spreading = LabelSpreading(kernel=lambda *_: graph, alpha=alpha, max_iter=100, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        spreading.fit(np.zeros((labels.size, 1), np.float32), labels)
    dist = np.zeros((m, k), dtype=np.float64)
    dist[:, spreading.classes_] = spreading.label_distributions_[:m]
    return dist


def spread_labels(graph: sparse.csr_matrix, labels: np.ndarray, k: int, *, alpha: float,
                  background: float | str | tuple[float, ...],
                  judge: Callable[[np.ndarray], np.ndarray] | None = None,
                  space: sparse.csr_matrix | None = None,
                  candidates: tuple[float, ...] = BACKGROUNDS) -> tuple[np.ndarray, float]:
    """Class distributions of every node of ``graph`` from ``labels`` (class index, -1 none), and the weight used.

    ``background`` is a weight in [0, 1) or ``"auto"`` (the one of ``candidates``,
    scaled by :func:`seed_scale` of the positive seeds, whose labels have the
    smallest :func:`normalized_cut` of ``graph``; module notes).
    ``judge`` turns one weight's distributions into the labels of the nodes that the
    cut is measured on: the caller's final labels, so the cut judges what the user
    will see (the methods pass their grid smoothing here). Without it, the most
    likely class of each node. Seeded nodes keep their class either way. ``space``,
    a graph over the same nodes (the patch grid), adds its normalized cut of those
    labels to the criterion: a labelling must also be compact on the slide.
    Rows of a node no label reached are zero. A tuple ``background`` is ``"auto"``
    among those weights instead of ``candidates`` (the regional step's, :mod:`sic_share.sic._regional`).
    """
    if isinstance(background, tuple):
        candidates, background = background, "auto"
    if k != 2 or background != "auto":
        weight = float(background) if background != "auto" else 0.0
        return _spread_once(graph, labels, k, alpha, weight), weight
    seeded = labels >= 0
    scale = seed_scale(int(np.count_nonzero(labels == 1)))
    candidates = tuple(round(c * scale, 8) for c in candidates)
    best = None
    for weight, dist in zip(candidates, _spread_with_backgrounds(graph, labels, alpha, candidates)):
        guess = np.argmax(dist, axis=1) if judge is None else np.asarray(judge(dist))
        guess[seeded] = labels[seeded]
        cut = normalized_cut(graph, guess) + (normalized_cut(space, guess) if space is not None else 0.0)
        if best is None or cut < best[0]:
            best = (cut, dist, weight)
    return best[1], best[2]


def _spread_with_backgrounds(graph: sparse.csr_matrix, labels: np.ndarray, alpha: float,
                             weights: tuple[float, ...], max_iter: int = 100, tol: float = 1e-4) -> list[np.ndarray]:
    """:func:`_spread_once` for two classes and several background weights in one pass; the same numbers.

    scikit-learn's ``LabelSpreading`` iterates ``F <- alpha S F + (1 - alpha) Y`` with
    ``S = D^-1/2 W D^-1/2`` (zero diagonal) over the graph plus one background node per
    node, and stops a run when the summed change falls below ``tol``. Written out, a
    background node only scales its node's degree and adds one term, so the weights
    share every product with ``W``: one sparse product with 2 x len(weights) columns
    per step instead of one ``LabelSpreading`` per weight (at three weights on 1,500
    patches, 20 ms against 44 ms). ``tests/test_sic_methods.py`` checks it against
    scikit-learn.
    """
    m = graph.shape[0]
    W = sparse.csr_matrix(graph, dtype=np.float64, copy=True)
    W.setdiag(0)
    W.eliminate_zeros()
    own = np.asarray(graph.sum(axis=1)).ravel()  # the background node's weight follows the full row sum
    off = np.asarray(W.sum(axis=1)).ravel()
    b = len(weights)
    scale = np.empty((m, 2 * b))  # D^-1/2 of each weight's graph, per column
    link = np.empty((m, 2 * b))  # each node's normalised weight to its background node
    for j, weight in enumerate(weights):
        p = weight**2 / (1 - weight**2) * own
        degree = off + p
        inv = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 1.0)
        scale[:, 2 * j:2 * j + 2] = inv[:, None]
        link[:, 2 * j:2 * j + 2] = np.where(p > 0, np.sqrt(p) * inv, 0.0)[:, None]
    F = np.zeros((m, 2 * b))
    seeded = labels >= 0
    F[seeded, labels[seeded]] = 1.0
    F = np.tile(F[:, :2], (1, b))
    G = np.zeros((m, 2 * b))  # the background nodes, all of class 0
    G[:, 0::2] = 1.0
    static_F, static_G = (1 - alpha) * F, (1 - alpha) * G
    prev_F, prev_G = np.zeros_like(F), np.zeros_like(G)
    done: list[np.ndarray | None] = [None] * b
    for _ in range(max_iter):
        change = (np.abs(F - prev_F).sum(axis=0) + np.abs(G - prev_G).sum(axis=0)).reshape(b, 2).sum(axis=1)
        for j in range(b):
            if done[j] is None and change[j] < tol:
                done[j] = F[:, 2 * j:2 * j + 2].copy()
        if all(d is not None for d in done):
            break
        prev_F, prev_G = F, G
        F = alpha * (scale * (W @ (scale * prev_F)) + link * prev_G) + static_F
        G = alpha * (link * prev_F) + static_G
    out = []
    for j in range(b):
        dist = done[j] if done[j] is not None else F[:, 2 * j:2 * j + 2]
        total = dist.sum(axis=1, keepdims=True)
        out.append(dist / np.where(total == 0, 1, total))
    return out
