"""Semi-supervised methods beside SIC, and the registry behind ``--method``.

Every method is a scikit-learn style estimator with the same contract as
:class:`~sic_share.sic.SeededIterativeClustering`: ``fit(X, seeds, coords=None)``
with embeddings ``X`` of shape (n_patches, dim) (float16 or float32), ``seeds`` a
class index per seeded patch and -1 elsewhere, and optional level-0 patch centres;
it sets ``labels_``, ``proba_`` and ``confidence_``.

- ``prototype``: :class:`NearestPrototype`, the nearest seed-class mean
  (scikit-learn's ``NearestCentroid``);
- ``logreg``: :class:`SeedLogisticRegression`, logistic regression on the seeds;
- ``spreading``: :class:`SeedLabelSpreading`, scikit-learn's ``LabelSpreading`` on a
  graph joining embedding neighbours and grid neighbours;
- ``sic``: :class:`~sic_share.sic.SeededIterativeClustering` (rules structure, paper,
  authors).

The registry behind ``--method`` (:func:`create_method`, :func:`list_methods`) is
:mod:`sic_share.sic._registry`, which imports none of this until a method is built.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid, NearestNeighbors
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state

from sic_share.errors import SeedError
from sic_share.sic._anchors import AnchorGraph, build_anchor_graph
from sic_share.sic._confidence import check_smooth, finish_labels
from sic_share.sic._grid import grid_graph, grid_walk
from sic_share.sic._kmeans import check_embeddings, check_seeds
from sic_share.sic._project import project
from sic_share.sic._regional import HOMOPHILY_MIN, REGIONAL_BACKGROUNDS, homophily, regional_projection
from sic_share.sic._spread import filled_proba, spread_labels
from sic_share.sic._trim import unseeded_part
from sic_share.sic._registry import DEFAULT_METHOD, MethodInfo, create_method, list_methods, method_info

__all__ = [
    "DEFAULT_METHOD",
    "MethodInfo",
    "NearestPrototype",
    "SeedLabelSpreading",
    "SeedLogisticRegression",
    "create_method",
    "list_methods",
    "method_info",
]

#: Most patches the label-spreading graph is built on; larger slides spread on a random
#: sample of this many (plus every seed) and extend to the rest (see SeedLabelSpreading).
GRAPH_SAMPLE = 4096
_EXTEND = 5  # anchors each patch of a large slide takes its labels from


def check_seed_classes(seeds: np.ndarray, k: int, what: str) -> None:
    """Every one of the ``k`` classes needs a seed: one sentence naming the first that has none."""
    present = set(np.unique(seeds[seeds >= 0]).tolist())
    if k < 2:
        raise SeedError(f"seeds hold {'no class' if not present else 'only class ' + str(min(present))}: {what} "
                        "needs seeds of at least two classes")
    missing = sorted(set(range(k)) - present)
    if missing:
        raise SeedError(f"class {missing[0]} has no seed but n_classes={k}: {what} needs a seed of every class — "
                        "add one, or lower n_classes")


class _SeedMethod(ClusterMixin, BaseEstimator):
    """Shared fit: checks, the working projection, the method's probabilities, grid smoothing, labels."""

    _name = "method"

    def fit(self, X: np.ndarray, seeds: np.ndarray, coords: np.ndarray | None = None) -> _SeedMethod:
        """Fit on ``X`` of shape (n_samples, dim), ``seeds`` of shape (n_samples,) and optional ``coords``.

        Returns ``self``.
        """
        X, seeds, k, coords, smooth, rng = self._checked(X, seeds, coords)
        Z, self.components_, _ = project(X, seeds, k, self.n_components, normalize=self.normalize, random_state=rng)
        self.n_classes_ = k
        proba = self._proba(Z, seeds, k, coords, rng)
        self.proba_, self.labels_, self.confidence_ = finish_labels(proba, seeds, coords, smooth, clamp=True)
        self._check_result(Z, seeds, rng)
        return self

    def _check_result(self, Z: np.ndarray, seeds: np.ndarray, rng: np.random.RandomState) -> None:
        """A last look at the labels in the working projection ``Z``; none by default."""

    def _checked(self, X, seeds, coords):
        """The inputs checked: ``(X, seeds, k, coords, smooth, rng)``, or one sentence on what is wrong."""
        smooth = check_smooth(self.smooth)
        X = check_embeddings(X, min_samples=max(2, self.n_classes or 2))
        seeds, k = check_seeds(seeds, X.shape[0], self.n_classes)
        check_embeddings(X, min_samples=k)
        check_seed_classes(seeds, k, self._name)
        return X, seeds, k, self._checked_coords(coords, X.shape[0]), smooth, check_random_state(self.random_state)

    def _checked_coords(self, coords, n: int) -> np.ndarray | None:
        """``coords`` as an array of one centre per patch (or None), with ``n_components`` checked too."""
        if self.n_components is not None and (not isinstance(self.n_components, int) or self.n_components < 1):
            raise SeedError(f"n_components={self.n_components!r} should be a positive integer or None")
        if coords is None:
            return None
        coords = np.asarray(coords)
        if coords.shape != (n, 2):
            raise SeedError(f"coords of shape {coords.shape} should be ({n}, 2), one centre per patch")
        return coords

    def fit_predict(self, X: np.ndarray, seeds: np.ndarray, coords: np.ndarray | None = None) -> np.ndarray:
        """Fit and return ``labels_``."""
        return self.fit(X, seeds, coords).labels_

    def _proba(self, Z: np.ndarray, seeds: np.ndarray, k: int, coords: np.ndarray | None,
               rng: np.random.RandomState) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


_COMMON_DOC = """
    n_classes : int or None, default=None
        Number of classes; None takes ``seeds.max() + 1``. Every class needs a seed.
    normalize : bool, default=False
        L2-normalise each embedding first.
    n_components : int or None, default=32
        Work in this many principal axes plus one direction per seeded class (see
        :func:`sic_share.sic._project.project`); None uses the whole embedding.
    smooth : float in [0, 1), default={smooth}
        Weight of the grid neighbours when class probabilities are smoothed on the
        patch grid (needs ``coords``; 0: off), see
        :func:`sic_share.sic._grid.smooth_on_grid`.
    random_state : int, RandomState instance or None, default=None
        Draws the rows the projection is estimated on{more}.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,), int64
        Class of every patch; a seeded patch keeps its seed's class.
    proba_ : ndarray of shape (n_samples, n_classes_), float32
        Class probabilities (after smoothing).
    confidence_ : ndarray of shape (n_samples,), float32
        The first probability minus the second, in [0, 1]; 1 on seeds.
    components_ : ndarray of shape (n_dims, dim) or None
        The projection's basis.
    n_classes_ : int
"""
_SPREAD_DOC = """    homophily_ : float
        Cohen's kappa of the labels across the edges of the embedding graph they spread
        over, before any regional step: 1 when every edge joins one class, 0 at chance.
        On a large slide, the labels the spread gave the anchors (their most likely
        class) and the seeds (their own) across the anchors' graph and the seeds' links.
    regional_ : bool
        Whether the labels come from the regional step (``regional``).
    background_ : float
        The background weight used (two classes).
    trimmed_ : int
        Patches the trim returned to the negative class.
"""


class NearestPrototype(_SeedMethod):
    __doc__ = """Nearest class prototype: every patch takes the class of the nearest seed-class mean.

    scikit-learn's ``NearestCentroid`` fitted on the seeded patches of the projection.
    Probabilities are ``exp(-d_c^2 / t)`` normalised over classes, with ``t`` the
    mean squared distance of the patches to their nearest prototype.

    Parameters
    ----------""" + _COMMON_DOC.format(smooth="0.0", more="")

    _name = "the prototype method"

    def __init__(self, *, n_classes: int | None = None, normalize: bool = False, n_components: int | None = 32,
                 smooth: float = 0.0, random_state=None) -> None:
        self.n_classes = n_classes
        self.normalize = normalize
        self.n_components = n_components
        self.smooth = smooth
        self.random_state = random_state

    def _proba(self, Z, seeds, k, coords, rng):
        seeded = seeds >= 0
        with np.errstate(invalid="ignore", divide="ignore"):  # its spread estimate is 0/0 with one seed per class
            centroids = NearestCentroid().fit(Z[seeded], seeds[seeded]).centroids_.astype(np.float32)
        d2 = np.maximum((Z**2).sum(1)[:, None] - 2 * Z @ centroids.T + (centroids**2).sum(1)[None, :], 0)
        scale = float(d2.min(axis=1).mean()) or 1.0
        logits = -(d2 - d2.min(axis=1, keepdims=True)) / scale
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


class SeedLogisticRegression(_SeedMethod):
    __doc__ = """Logistic regression on the seeds: a linear classifier learnt from the clicked patches only.

    scikit-learn's ``LogisticRegression`` (L2, ``C``, balanced class weights) on the
    standardised projection of the seeded patches; ``predict_proba`` on every patch.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength.""" + _COMMON_DOC.format(smooth="0.0", more="")

    _name = "logistic regression"

    def __init__(self, *, n_classes: int | None = None, C: float = 1.0, normalize: bool = False,
                 n_components: int | None = 32, smooth: float = 0.0, random_state=None) -> None:
        self.n_classes = n_classes
        self.C = C
        self.normalize = normalize
        self.n_components = n_components
        self.smooth = smooth
        self.random_state = random_state

    def _proba(self, Z, seeds, k, coords, rng):
        if not (isinstance(self.C, int | float) and self.C > 0):
            raise SeedError(f"C={self.C!r} should be a positive number")
        scaler = StandardScaler().fit(Z[rng.choice(Z.shape[0], min(Z.shape[0], 20_000), replace=False)])
        seeded = seeds >= 0
        model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000)
        model.fit(scaler.transform(Z[seeded]), seeds[seeded])
        proba = np.zeros((Z.shape[0], k), dtype=np.float32)
        for start in range(0, Z.shape[0], 65536):
            block = scaler.transform(Z[start:start + 65536])
            proba[start:start + block.shape[0], model.classes_] = model.predict_proba(block)
        return proba


class SeedLabelSpreading(_SeedMethod):
    __doc__ = """Label spreading from the seeds over a graph of embedding and grid neighbours.

    scikit-learn's ``LabelSpreading`` (Zhou et al. 2004) on a graph that joins each
    patch to its ``n_neighbors`` nearest patches in the projection and, with weight
    ``grid_weight``, to its 8 neighbours on the patch grid (when ``coords`` are
    given).

    Parameters
    ----------
    n_neighbors : int, default=7
        Embedding neighbours per patch (exact, scikit-learn ``NearestNeighbors``).
    alpha : float in (0, 1), default=0.9
        How far labels spread: the share of a patch's value taken from its neighbours
        at each step (scikit-learn's ``alpha``).
    grid_weight : float >= 0, default=2.0
        Weight of a grid edge relative to an embedding edge; 0 leaves space out.
        (7 neighbours and 2.0 were chosen on the tuning families, docs/sic.md.)
    background : "auto", float in [0, 1) or tuple of them, default="auto"
        Two classes only: the weight of each patch's link to a private negative node,
        so that a patch no seed explains leans to the first class (everything else).
        "auto" spreads with 0.001, 0.002, 0.004 and 0.008 and keeps the one whose
        final labels (after ``smooth``) have the smallest normalized cut of the graph
        plus that of the patch grid (large slides: 0.001-0.004, the anchors' own
        labels and graph; :mod:`sic_share.sic._spread`); the weights are scaled by
        the positive seeds (x0.5 for one, x2 for five or more: more seeds, more
        positive mass to hold back). A tuple is "auto" among its weights. The
        weight used is ``background_``.
    trim : bool, default=True
        Two classes: when every positive seed fell in one distinct part of the
        positive class and that is unlikely by chance (:mod:`sic_share.sic._trim`),
        the other part goes back to the negative class; ``trimmed_`` counts its
        patches.
    regional : "auto" or bool, default="auto"
        Two classes with ``coords``: spread again on the slide's regional structure
        (:mod:`sic_share.sic._regional`: principal axes of grid-neighbourhood means,
        the projected patches smoothed along the grid, background weights a quarter
        of the usual ones) when the labels agree too little along the edges of the
        embedding graph to trust it (``homophily_`` < 0.45, chance-corrected). True
        always does, False never. ``regional_`` says whether it did.""" + _COMMON_DOC.format(
        smooth="0.5", more=" and the graph's sample on large slides") + _SPREAD_DOC + """
    Notes
    -----
    **Cost at scale.** An exact kNN graph is quadratic, so above ``GRAPH_SAMPLE`` =
    4096 patches labels spread over that many random anchor patches instead
    (:mod:`sic_share.sic._anchors`): the anchors' kNN graph and each patch's 5
    nearest anchors are found once, in principal axes that do not depend on the
    seeds (:meth:`prepare`, one brute-force pass, O(n x 4096 x n_components)); each
    seed joins as a node linked to its nearest anchors, labels spread over anchors
    and seeds, and every patch takes the weighted mean of its anchors' labels,
    then the grid smoothing (``smooth``) brings back the grid neighbours the
    anchors lack. An app that re-fits one slide per click calls :meth:`prepare`
    once and passes it to ``fit(..., prepared=)``: a fit then costs milliseconds. ``benchmarks/sic.py`` measures
    both at 100k and 1M patches.

    **Unreached patches.** A patch in a graph component without seeds receives no
    label mass; it gets equal probabilities (confidence 0) and the first class.

    **Neighbourhoods that cannot see the classes** (issue 23). When the lesion differs
    from benign tissue by a shift small per patch against noise in every dimension,
    a patch's embedding neighbours are a mix of both classes and the spread stops
    near the seeds. ``homophily_`` measures that on the result, without truth, and
    ``regional="auto"`` then spreads again on :func:`~sic_share.sic._regional.regional_projection`
    (a projection pass and a second anchor graph on a large slide, built by the first fit
    that needs them and kept in ``prepared``, so a later click only spreads). In the suite (docs/sic.md) mean F1 on
    ``faint_shift`` rose from 0.164 to 0.901 and on its held-out draw from 0.158 to
    0.886; no run of the earlier families got worse (three collapsed runs of the real
    families were repaired).

    On a large slide ``homophily_`` is judged on the graph the labels spread over,
    with the labels the spread gave its nodes: each anchor's most likely class and
    each seed's own, across the anchors' kNN edges and the seeds' links to them. Not
    on the anchors' final labels: those are averages of other anchors, then smoothed
    with the grid neighbours' (which the anchors, scattered over the slide, mostly
    are not), so where the spread stops at the seeds they hold one class, and a kappa
    of one class has nothing to judge and read as 1.0: on 20,000 to 1,000,000-patch
    ``faint_shift`` slides the step then did not run (F1 near 0; forced, 0.99). The
    seeds always hold two classes, so this kappa is defined; it needs no truth, and
    it is what the exact path measures, on the graph that carried the labels.
    """

    _name = "label spreading"

    def __init__(self, *, n_classes: int | None = None, n_neighbors: int = 7, alpha: float = 0.9,
                 grid_weight: float = 2.0, background: float | str | tuple[float, ...] = "auto", trim: bool = True,
                 regional: bool | str = "auto", normalize: bool = False, n_components: int | None = 32,
                 smooth: float = 0.5, random_state=None) -> None:
        self.n_classes = n_classes
        self.n_neighbors = n_neighbors
        self.alpha = alpha
        self.grid_weight = grid_weight
        self.background = background
        self.trim = trim
        self.regional = regional
        self.normalize = normalize
        self.n_components = n_components
        self.smooth = smooth
        self.random_state = random_state

    def _check(self) -> None:
        if not isinstance(self.n_neighbors, int) or self.n_neighbors < 1:
            raise SeedError(f"n_neighbors={self.n_neighbors!r} should be a positive integer")
        if not (isinstance(self.alpha, int | float) and 0 < self.alpha < 1):
            raise SeedError(f"alpha={self.alpha!r} should be in (0, 1)")
        if not (isinstance(self.grid_weight, int | float) and self.grid_weight >= 0):
            raise SeedError(f"grid_weight={self.grid_weight!r} should be a number >= 0")
        weights = self.background if isinstance(self.background, tuple) and self.background else (self.background,)
        if self.background != "auto" and not all(isinstance(w, int | float) and 0 <= w < 1 for w in weights):
            raise SeedError(f"background={self.background!r} should be 'auto', a weight in [0, 1) or a tuple of them")
        if not isinstance(self.trim, bool | np.bool_):
            raise SeedError(f"trim={self.trim!r} should be True or False")
        if not (self.regional == "auto" or isinstance(self.regional, bool | np.bool_)):
            raise SeedError(f"regional={self.regional!r} should be 'auto', True or False")

    def _proba(self, Z, seeds, k, coords, rng):
        """The exact path (at most ``GRAPH_SAMPLE`` patches): a kNN graph over every patch, plus grid edges."""
        self._check()
        start = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=min(self.n_neighbors, Z.shape[0] - 1), algorithm="brute").fit(Z)
        dist_k, idx = nn.kneighbors()
        m = Z.shape[0]
        rows = np.repeat(np.arange(m), idx.shape[1])
        graph = sparse.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(m, m))
        graph = graph.maximum(graph.T).tocsr()
        self._knn = graph  # the embedding graph alone, for homophily_
        grid = grid_graph(coords) if coords is not None else None
        if grid is not None and self.grid_weight > 0:
            graph = (graph + self.grid_weight * _similar_grid(Z, grid, dist_k[:, -1])).tocsr()
        self.graph_seconds_ = time.perf_counter() - start
        self.graph_edges_ = int(graph.nnz)
        walk = grid_walk(grid) if grid is not None and self.smooth > 0 else None

        def judge(dist: np.ndarray) -> np.ndarray:  # the labels fit will return, for the background choice
            return finish_labels(filled_proba(dist, k), seeds, coords, self.smooth, clamp=True, walk=walk)[1]

        dist, self.background_ = spread_labels(graph, seeds, k, alpha=self.alpha, background=self.background,
                                               judge=judge, space=grid)
        return filled_proba(dist, k)

    def _graph_key(self) -> tuple:
        seed = self.random_state if isinstance(self.random_state, int | None) else id(self.random_state)
        return (self.n_neighbors, self.n_components, bool(self.normalize), seed, GRAPH_SAMPLE, _EXTEND)

    def prepare(self, X: np.ndarray, coords: np.ndarray | None = None) -> AnchorGraph | None:
        """The seed-independent part of a fit on a large slide, to pass to :meth:`fit` as ``prepared``.

        Returns None on a slide of at most ``GRAPH_SAMPLE`` patches (the exact path
        has nothing to keep). An app that re-fits one slide for every click builds it
        once: the fit then costs milliseconds (see :mod:`sic_share.sic._anchors`). The
        regional step's projection and graph, seed-independent too, are added to it by
        the first fit that needs them (``regional``) and reused by every later one.
        """
        self._check()
        X = check_embeddings(X, min_samples=2)
        if X.shape[0] <= GRAPH_SAMPLE:
            return None
        coords = self._checked_coords(coords, X.shape[0])
        start = time.perf_counter()
        graph = self._anchor_graph(X, coords)
        self.graph_seconds_ = time.perf_counter() - start
        self.graph_edges_ = int(graph.graph.nnz + graph.extend.nnz)
        return graph

    def _anchor_graph(self, X: np.ndarray, coords: np.ndarray | None, walk=None) -> AnchorGraph:
        """:func:`~sic_share.sic._anchors.build_anchor_graph` with this estimator's settings.

        ``walk``: the grid walk of ``coords`` when the caller has built it (not built again).
        """
        return build_anchor_graph(X, coords, n_anchors=GRAPH_SAMPLE, n_neighbors=self.n_neighbors,
                                  n_extend=_EXTEND, n_components=self.n_components, normalize=self.normalize,
                                  random_state=check_random_state(self.random_state), key=self._graph_key(),
                                  walk=walk)

    def fit(self, X, seeds, coords=None, prepared: AnchorGraph | None = None):
        """Fit on ``X``, ``seeds`` and optional ``coords``; ``prepared`` is :meth:`prepare`'s result for this slide.

        Returns ``self``.
        """
        self._check()
        n = np.asarray(X).shape[0]
        if n <= GRAPH_SAMPLE:
            super().fit(X, seeds, coords)
            self.homophily_ = homophily(self.__dict__.pop("_knn"), self.labels_)
            return self._regional_step(X, seeds, coords, None)
        X, seeds, k, coords, smooth, _ = self._checked(X, seeds, coords)
        if prepared is None:
            prepared = self.prepare(X, coords)
        elif not prepared.matches(n, self._graph_key()):
            raise SeedError("prepared was built for another slide or other settings: call prepare(X, coords) again")
        if coords is not None and prepared.walk is None:
            raise SeedError("prepared was built without coords: call prepare(X, coords) with them")
        self.components_, self.n_classes_ = prepared.components, k
        # The background weight is judged on the anchors' own labels here: judging the smoothed labels of
        # every patch, as the exact path does, cost 60 ms a click at 100k and no F1 (docs/sic.md).
        # homophily_ is judged on the graph the labels spread over (class notes, "Neighbourhoods that cannot see
        # the classes"): the anchors' final labels come from their grid neighbours' anchors after smoothing
        proba, self.background_, self.homophily_ = prepared.spread(seeds, k, n_neighbors=self.n_neighbors,
                                                                   alpha=self.alpha, background=self.background)
        self.proba_, self.labels_, self.confidence_ = finish_labels(proba, seeds, coords, smooth, clamp=True,
                                                                    walk=prepared.walk)
        self._check_result(prepared.Z, seeds, check_random_state(self.random_state))
        return self._regional_step(X, seeds, coords, prepared)

    def _regional_step(self, X, seeds, coords, prepared: AnchorGraph | None) -> SeedLabelSpreading:
        """With ``regional``: spread again on the slide's regional structure (class notes); returns ``self``.

        On a large slide the regional projection and its anchor graph do not depend on
        the seeds: the first fit that needs them keeps them in ``prepared.derived``, and
        a later fit with the same ``prepared`` (the app's next click) spreads on them at
        once.
        """
        self.regional_ = False
        use = self.regional is True or (self.regional == "auto" and self.homophily_ < HOMOPHILY_MIN)
        if not use or coords is None or self.n_classes_ != 2:
            return self
        background = REGIONAL_BACKGROUNDS if self.background == "auto" else self.background
        inner = clone(self).set_params(regional=False, n_components=None, normalize=False, background=background)
        if prepared is None:  # the exact path: a small slide, nothing kept
            X = check_embeddings(X, min_samples=2)
            seeds, _ = check_seeds(seeds, X.shape[0], self.n_classes)
            coords = np.asarray(coords)
            Z, components = regional_projection(X, grid_walk(grid_graph(coords)), normalize=self.normalize,
                                                random_state=check_random_state(self.random_state))
            inner.fit(Z, seeds, coords)
        else:
            if "regional" not in prepared.derived:
                Z, components = regional_projection(X, prepared.walk, normalize=self.normalize,
                                                    random_state=check_random_state(self.random_state))
                prepared.derived["regional"] = (components, inner._anchor_graph(Z, coords, prepared.walk))
            components, graph = prepared.derived["regional"]
            inner.fit(graph.Z, seeds, coords, prepared=graph)
        for name in ("labels_", "proba_", "confidence_", "background_", "trimmed_"):
            setattr(self, name, getattr(inner, name))
        self.components_, self.regional_ = components, True
        return self

    def _check_result(self, Z, seeds, rng):
        """With ``trim`` and two classes: a distinct part of the positive class that no seed fell in goes back."""
        self.trimmed_ = 0
        if not self.trim or self.n_classes_ != 2:
            return
        rows = unseeded_part(Z, self.labels_, seeds, random_state=rng)
        if rows.size:
            self.labels_[rows] = 0
            self.proba_[rows] = self.proba_[rows][:, ::-1]  # the labels stay the most likely class; same margin
        self.trimmed_ = int(rows.size)


def _similar_grid(Z: np.ndarray, grid: sparse.csr_matrix, scale: np.ndarray) -> sparse.csr_matrix:
    """Grid-neighbour edges weighted by embedding similarity, ``exp(-d^2 / (s_i s_j))``.

    ``s_i`` is the distance of patch ``i`` to its k-th embedding neighbour (the
    self-tuning scale of Zelnik-Manor and Perona 2004): neighbours on the grid that
    look alike are joined with weight near 1, a grid edge across a tissue border
    with weight near 0, so space links regions without leaking labels across them.
    """
    grid = grid.tocoo()
    i, j = grid.row, grid.col
    d2 = ((Z[i] - Z[j]) ** 2).sum(axis=1)
    s2 = np.maximum(scale[i] * scale[j], 1e-12)
    return sparse.csr_matrix((np.exp(-d2 / s2).astype(np.float32), (i, j)), shape=grid.shape)
