"""When a patch's neighbours cannot see the classes: the slide's regional structure instead (issue 23).

Label spreading trusts each patch's nearest neighbours in a 32-d projection. When the
lesion differs from benign tissue by a shift that is small per patch against noise
spread over every dimension (:func:`~sic_share.sic._families.faint_shift`), those
neighbours are a mix of both classes: the spread stops near the seeds under the
background prior and labels a few percent of the slide where the lesion is a fifth
of it (mean F1 0.17 on slides 30-35 of that family). Two things are wrong, and
neither the seeds nor the neighbours can fix them:

- **the projection misses the shift.** Its principal axes come from single patches,
  where a shift of 2 noise sds in a few of hundreds of dimensions carries less
  variance than the noise's own largest directions (Marchenko-Pastur), so no axis
  holds it;
- **the neighbours are noisy.** In 32 dimensions the noise between two patches is
  about 8 sds, the shift 2.

Tissue is contiguous on the slide, so a patch's grid neighbours mostly share its
class. This module uses that twice: :func:`regional_projection` finds its principal
axes on *neighbourhood means* (each sampled patch averaged with its 8 grid
neighbours, which divides the noise's variance by up to 9 and keeps a regional
shift whole), keeps the first :data:`REGIONAL_AXES` of them, and smooths the
projected patches along the grid (weight :data:`REGIONAL_SMOOTH`), so that
spreading then runs on embeddings in which a patch's neighbours are its region's,
with background weights :data:`REGIONAL_BACKGROUNDS`.

When to use it, without truth: :func:`homophily`, the chance-corrected agreement
(Cohen's kappa) of the default's own labels across the edges of its embedding
graph (on a large slide, the labels the spread gave the anchors and the seeds, over
the anchors' graph and the seeds' links: :meth:`~sic_share.sic._anchors.AnchorGraph.spread`).
Spreading follows that graph, so on a slide where the graph carries the
classes its labels agree along the edges (kappa 0.52-1.00 on slides 30-37 of the
four tuning families, 96 runs); when the graph is a noisy mix they barely do
(-0.33-0.39 on slides 30-37 of ``faint_shift``). Below :data:`HOMOPHILY_MIN` the
estimator spreads again on the regional projection (docs/sic.md has the figures).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_limits

from sic_share.sic._kmeans import _prepare_chunk, iter_chunks
from sic_share.sic._project import PCA_SAMPLE, project_onto

__all__ = [
    "HOMOPHILY_MIN",
    "REGIONAL_AXES",
    "REGIONAL_BACKGROUNDS",
    "REGIONAL_SMOOTH",
    "homophily",
    "regional_projection",
    "smooth_features",
]

#: Below this homophily of the default's labels on its own graph, neighbourhoods are judged unreliable.
HOMOPHILY_MIN = 0.45
#: Regional principal axes kept (3, 4, 6, 8, 16 tried on ``faint_shift`` slides 30-35: 0.67, 0.75, 0.77, 0.73, 0.69).
REGIONAL_AXES = 6
#: Weight of the grid neighbours when the regional projection is smoothed (0.5: 0.70, 0.8: 0.75, 0.9: 0.71).
REGIONAL_SMOOTH = 0.8
#: The background weights the regional step chooses from: a quarter of :data:`~sic_share.sic._spread.BACKGROUNDS`.
#: On the regional projection the lesion is a compact cluster and the usual weights cut it short with one
#: seed per class (``faint_shift`` slides 30-109, 240 runs: 0.877 -> 0.911, one seed 0.803 -> 0.897; halved 0.905).
REGIONAL_BACKGROUNDS = (0.00025, 0.0005, 0.001, 0.002)
_CHUNK = 8192


def homophily(graph: sparse.spmatrix, labels: np.ndarray) -> float:
    """Cohen's kappa of ``labels`` across the edges of ``graph``: 1 when every edge joins one class, 0 at chance.

    Chance is the agreement of two patches drawn at random with the label shares of
    the slide. ``1.0`` when the labels hold one class (nothing to judge).
    """
    g = sparse.coo_matrix(graph)
    if g.nnz == 0:
        return 1.0
    labels = np.asarray(labels)
    same = float(np.average(labels[g.row] == labels[g.col], weights=g.data))
    share = np.bincount(labels) / labels.size
    chance = float((share**2).sum())
    return 1.0 if chance >= 1.0 else (same - chance) / (1.0 - chance)


def regional_projection(X: np.ndarray, walk: tuple[sparse.csr_matrix, np.ndarray], *, normalize: bool,
                        random_state: np.random.RandomState, n_axes: int = REGIONAL_AXES,
                        smooth: float = REGIONAL_SMOOTH) -> tuple[np.ndarray, np.ndarray]:
    """Patches projected on the principal axes of their neighbourhood means, then smoothed along the grid.

    Parameters
    ----------
    X : ndarray of shape (n_patches, dim), float16 or float32
    walk : (csr_matrix, ndarray)
        The patch grid's :func:`~sic_share.sic._grid.grid_walk` (its non-zeros are the
        grid's edges).
    normalize : bool
        L2-normalise each embedding first.
    random_state : RandomState
        Draws the sampled rows.

    Returns
    -------
    Z : ndarray of shape (n_patches, n_axes), float32
    components : ndarray of shape (n_axes, dim), float32

    Notes
    -----
    Cost: the sample's neighbourhood means (``PCA_SAMPLE`` rows x 9 neighbours), one
    randomized SVD, one threaded chunked pass over ``X``
    (:func:`~sic_share.sic._project.project_onto`) and ``n_axes``-column smoothing:
    about what :func:`~sic_share.sic._project.project` costs. It does not depend on
    the seeds (the sample is the random rows alone; on a slide of at most
    ``PCA_SAMPLE`` patches that is every patch), so a caller that re-fits one slide
    keeps it with the slide's prepared graph (:class:`~sic_share.sic._anchors.AnchorGraph`).
    """
    n, d = X.shape
    rows = np.sort(random_state.choice(n, size=min(n, PCA_SAMPLE), replace=False))
    # each sampled patch and its grid neighbours, weight 1 each (the walk's non-zeros are the grid's edges)
    around = (sparse.identity(n, format="csr", dtype=np.float32)[rows]
              + (walk[0][rows] > 0).astype(np.float32)).tocsr()
    needed = np.unique(around.indices)
    buf = np.empty((needed.size, d), dtype=np.float32)
    for sl in iter_chunks(needed.size, _CHUNK):
        _prepare_chunk(X, needed[sl], buf[sl], normalize)
    around = around[:, needed]
    S = np.asarray(sparse.diags(1.0 / np.asarray(around.sum(axis=1)).ravel()) @ around @ buf, dtype=np.float32)
    S -= S.mean(axis=0)
    with threadpool_limits(1, user_api="blas"):
        _, _, vt = randomized_svd(S, min(n_axes, S.shape[0] - 1, d), n_iter=2, random_state=random_state)
    W = np.ascontiguousarray(vt.T, dtype=np.float32)
    return smooth_features(project_onto(X, W, normalize=normalize), walk, weight=smooth), W.T


def smooth_features(Z: np.ndarray, walk: tuple[sparse.csr_matrix, np.ndarray], *, weight: float,
                    n_iter: int = 10) -> np.ndarray:
    """Each row pulled toward its grid neighbours' mean: ``Z <- weight * walk Z + (1 - weight) Z0``, ``n_iter`` times.

    The iteration of :func:`~sic_share.sic._grid.smooth_with_walk` on features
    (rows are not renormalised); a patch without grid neighbours keeps its row.
    """
    step, alone = walk
    kept = (1 - weight) * Z
    out = Z
    for _ in range(n_iter):
        out = weight * (step @ out) + kept
        out[alone] = Z[alone]
    return np.ascontiguousarray(out, dtype=np.float32)
