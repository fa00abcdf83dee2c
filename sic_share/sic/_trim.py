"""A check that the positive class is what the seeds point at: trim a distinct part that no seed fell in.

Label spreading grows the lesion's seeds to the lesion's natural cluster in the
graph. When a benign tissue looks like the lesion (a sub-type of the lesion's
neighbour, or a look-alike), that cluster holds both, and the positive class comes
out several times too large. SIC's loop resolves it by splitting the positive
cluster and asking the seeds; this is that one step, applied to the spreading's result:

1. cut the positive patches in two with 2-means (scikit-learn ``KMeans``);
2. if every positive seed fell in one part, holding a share ``f`` of the positive
   patches, then with ``q`` seeds drawn at random from the whole positive class this
   happens with probability ``f ** q``; below ``alpha`` (0.05) the other part is
   unlikely to be what the user meant;
3. and if the cut is real structure, not one cloud cut in two (the cross-fitted
   normality test of SIC's structure rule, :func:`~sic_share.sic._sic.split_is_significant`),
   the part without seeds goes back to the negative class.

Two classes only, and only with two or more positive seeds (one seed cannot tell a
region from a part of it). In the experiment that chose it (the tuning families, 30
slides each, 3 and 5 seeds per class; docs/sic.md) it changed 17 of 240 results, all
for the better (mosaic with 3 seeds 0.875 -> 0.953). Cutting again inside the kept
part, or inside both parts when both hold seeds, changed none of those results: one
cut is all it does. 2-means takes 3 starts: one start was 8 ms instead of 20 ms at
100k patches but missed a look-alike the 3 starts found.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state

from sic_share.sic._sic import MIN_SPLIT, split_is_significant

__all__ = ["ALPHA", "unseeded_part"]

#: The chance, under seeds drawn at random from the positive class, below which a part without seeds is trimmed.
ALPHA = 0.05
_FIT_ROWS = 4096  # positive patches the 2-means is fitted on (all are assigned)


def unseeded_part(Z: np.ndarray, labels: np.ndarray, seeds: np.ndarray, *, alpha: float = ALPHA,
                  random_state=None) -> np.ndarray:
    """Indices of the positive patches (class 1 of two) to return to class 0; empty when the check keeps them all.

    Parameters
    ----------
    Z : ndarray of shape (n_patches, n_dims)
        The working projection the labels were found in.
    labels : ndarray of shape (n_patches,)
        Final labels, 0 and 1, seeds already clamped to their class.
    seeds : ndarray of shape (n_patches,)
        Class index per seeded patch, -1 elsewhere.
    alpha : float
        See the module notes.
    random_state : int, RandomState instance or None
    """
    positive = np.flatnonzero(labels == 1)
    q = int((seeds[positive] == 1).sum())
    none = np.empty(0, dtype=np.int64)
    if q < 2 or positive.size < 2 * MIN_SPLIT:
        return none
    rng = check_random_state(random_state)
    Zp = np.asarray(Z[positive], dtype=np.float32)
    fit = Zp if positive.size <= _FIT_ROWS else Zp[np.sort(rng.choice(positive.size, _FIT_ROWS, replace=False))]
    part = KMeans(2, n_init=3, random_state=rng).fit(fit).predict(Zp)
    seeded = np.unique(part[seeds[positive] == 1])
    if seeded.size != 1:
        return none
    kept = part == seeded[0]
    if float(kept.mean()) ** q >= alpha:
        return none
    significant, _ = split_is_significant(Zp, kept.astype(np.int64), rng)
    return positive[~kept] if significant else none
