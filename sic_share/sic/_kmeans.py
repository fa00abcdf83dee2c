"""Seeded KMeans (Basu et al. 2002) on top of scikit-learn, plus the input checks SIC shares.

Embeddings arrive as float16 or float32 matrices of shape (n_patches, dim). Every
helper here streams them in row chunks so that no float64 copy, and at most one
float32 working copy, is ever made.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state

from sic_share.errors import SeedError

__all__ = ["SeededKMeans"]

#: Rows per chunk when casting or projecting: 4096 x 1024 float32 is 16 MiB, which
#: stays in cache-friendly territory and keeps the temporary buffer small.
CHUNK_ROWS = 4096

_FLOAT_KINDS = ("f", "i", "u")


def check_embeddings(X: object, *, min_samples: int = 1) -> np.ndarray:
    """Check that ``X`` is a 2-D numeric array with at least ``min_samples`` rows.

    Finiteness is checked later, chunk by chunk, where the data is touched anyway.
    """
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if X.ndim != 2:
        raise SeedError(
            f"embeddings should be a 2-D array of shape (n_patches, dim), got shape {X.shape}"
            " — pass one row per patch"
        )
    if X.dtype.kind not in _FLOAT_KINDS:
        raise SeedError(f"embeddings should be numeric, got dtype {X.dtype} — pass float16 or float32")
    n, d = X.shape
    if d == 0:
        raise SeedError("embeddings have 0 features per patch — pass at least one column")
    if n < min_samples:
        raise SeedError(f"n_samples={n} should be >= n_clusters={min_samples}: the slide has fewer patches than classes")
    return X


def check_seeds(seeds: object, n_samples: int, n_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Check a seed vector and return it as int64 together with the number of classes.

    Parameters
    ----------
    seeds : array-like of shape (n_samples,)
        Class index of each seeded patch, -1 for unlabelled patches.
    n_samples : int
        Number of rows of the embedding matrix.
    n_classes : int or None
        Expected number of classes; None infers ``seeds.max() + 1``.
    """
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.shape[0] != n_samples:
        raise SeedError(
            f"seeds should have shape ({n_samples},), one entry per patch, got shape {seeds.shape}"
            " — use -1 for unlabelled patches"
        )
    if seeds.dtype.kind == "b" or seeds.dtype.kind not in ("i", "u"):
        if seeds.dtype.kind == "f" and np.all(np.isfinite(seeds)) and np.all(seeds == np.round(seeds)):
            seeds = seeds.astype(np.int64)
        else:
            raise SeedError(f"seeds should be integer class indices, got dtype {seeds.dtype} — use -1 for unlabelled patches")
    seeds = seeds.astype(np.int64, copy=False)
    if n_classes is None:
        n_classes = int(seeds.max()) + 1 if n_samples else 0
    bad = seeds[(seeds < -1) | (seeds >= max(n_classes, 0))]
    if bad.size:
        raise SeedError(
            f"seed class index {int(bad[0])} is out of range: use 0..{n_classes - 1} for the classes and -1 for unlabelled patches"
        )
    return seeds, int(n_classes)


def iter_chunks(n: int, chunk_rows: int = CHUNK_ROWS) -> Iterator[slice]:
    """Row slices of at most ``chunk_rows`` rows covering ``range(n)``."""
    for start in range(0, n, chunk_rows):
        yield slice(start, min(n, start + chunk_rows))


def _prepare_chunk(
    X: np.ndarray, rows: slice | np.ndarray, out: np.ndarray, normalize: bool, *, check_finite: bool = True,
) -> np.ndarray:
    """Cast ``X[rows]`` into ``out`` (float32), L2-normalise rows if asked, and check finiteness.

    ``check_finite=False`` is for callers that check a product of ``out`` instead:
    NaN and inf propagate through a matrix product, so one check of the small
    result replaces a pass over the chunk.
    """
    if X.dtype == np.float16:
        half_to_float32(X[rows], out)
    else:
        np.copyto(out, X[rows], casting="unsafe")
        if check_finite and not np.isfinite(out).all():
            raise_non_finite()
    if normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))
        np.maximum(norms, np.finfo(np.float32).tiny, out=norms)
        out /= norms[:, None]
    return out


#: 2**112 rescales a float16 exponent (bias 15) shifted into a float32 (bias 127).
_HALF_SCALE = np.float32(2.0**112)
#: Every float16 inf or NaN maps to a magnitude >= 2**16 in ``half_to_float32``; finite ones stay <= 65504.
_HALF_NONFINITE = np.float32(2.0**16)


def half_to_float32(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Exact float16 -> float32 conversion of ``h`` into ``out``, raising on inf or NaN.

    numpy's own cast converts element by element with branches and runs 3-6 x slower
    on ReLU-like embeddings (many zeros); this is the branch-free bit trick: move
    exponent and mantissa into float32 position and rescale by 2**112, which is exact
    for normal and subnormal halves. Infinities and NaNs land at 2**16 or above and
    are reported instead of converted. The sign bit is then moved into place with
    integer operations: a masked ``np.negative(..., where=)`` took 3.3 ms per 1024 x 384
    chunk of Gaussian data (half the values negative), against 0.4 ms for this.
    """
    bits = h.view(np.uint16)
    ob = out.view(np.uint32)
    np.bitwise_and(bits, np.uint16(0x7FFF), out=ob, casting="unsafe")
    np.left_shift(ob, np.uint32(13), out=ob)
    np.multiply(out, _HALF_SCALE, out=out)
    if out.max(initial=0.0) >= _HALF_NONFINITE:
        raise_non_finite()
    if bits.max(initial=0) >= 0x8000:  # one cheap pass spares ReLU-like embeddings (no negatives) the three below
        sign = np.bitwise_and(bits, np.uint16(0x8000), dtype=np.uint32)
        np.left_shift(sign, np.uint32(16), out=sign)
        np.bitwise_or(ob, sign, out=ob)
    return out


def raise_non_finite() -> None:
    raise SeedError("embeddings contain NaN or infinite values — re-export the slide or drop those patches")


def as_float32(X: np.ndarray, *, normalize: bool = False, chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, bool]:
    """Return a C-contiguous float32 view or copy of ``X`` with finite values.

    float32 C-contiguous input without normalisation is returned as is (no copy);
    anything else is cast chunk by chunk into one new float32 buffer, so the peak
    extra memory is exactly that buffer (never a float64 intermediate, which is what
    ``sklearn.utils.check_array`` would make of float16).

    Returns
    -------
    X32 : ndarray of shape (n_samples, dim), float32
    owned : bool
        True when ``X32`` is a new buffer that callers may modify in place.
    """
    if X.dtype == np.float32 and X.flags.c_contiguous and not normalize:
        for rows in iter_chunks(X.shape[0], chunk_rows):
            if not np.isfinite(X[rows]).all():
                raise_non_finite()
        return X, False
    out = np.empty(X.shape, dtype=np.float32)
    for rows in iter_chunks(X.shape[0], chunk_rows):
        _prepare_chunk(X, rows, out[rows], normalize)
    return out, True


def class_means(X: np.ndarray, seeds: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the seeded rows of each class, in float64 (few rows).

    Returns
    -------
    means : ndarray of shape (n_classes, dim)
        Rows of classes without a seed are left at zero.
    has_seed : ndarray of shape (n_classes,), bool
    """
    means = np.zeros((n_classes, X.shape[1]), dtype=np.float64)
    has_seed = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        idx = np.flatnonzero(seeds == c)
        if idx.size:
            means[c] = X[idx].astype(np.float64).mean(axis=0)
            has_seed[c] = True
    return means, has_seed


def fill_missing_centres(
    X: np.ndarray, centres: np.ndarray, has_seed: np.ndarray, random_state: np.random.RandomState,
    *, max_candidates: int = 10_000,
) -> np.ndarray:
    """Give every unseeded class an initial centre by k-means++ D² sampling.

    Candidates are a random subsample of at most ``max_candidates`` rows; each missing
    centre is drawn with probability proportional to the squared distance to the
    nearest centre chosen so far (seeded ones first). With no seed at all, the first
    centre is a uniformly drawn row, which makes this plain k-means++.
    """
    centres = centres.copy()
    n = X.shape[0]
    cand_idx = np.sort(random_state.choice(n, size=min(n, max_candidates), replace=False))
    cand = X[cand_idx].astype(np.float64)
    chosen = list(np.flatnonzero(has_seed))
    if not chosen:
        first = int(np.flatnonzero(~has_seed)[0])
        centres[first] = cand[random_state.randint(cand.shape[0])]
        chosen = [first]
    d2 = np.min(((cand[:, None, :] - centres[chosen][None, :, :]) ** 2).sum(-1), axis=1)
    for c in np.flatnonzero(~has_seed):
        if c in chosen:
            continue
        total = d2.sum()
        pick = random_state.randint(cand.shape[0]) if total <= 0 else random_state.choice(cand.shape[0], p=d2 / total)
        centres[c] = cand[pick]
        chosen.append(int(c))
        d2 = np.minimum(d2, ((cand - centres[c]) ** 2).sum(-1))
    return centres


class SeededKMeans(ClusterMixin, BaseEstimator):
    """KMeans whose initial centres are the means of seed patches (Basu et al. 2002).

    Parameters
    ----------
    n_clusters : int, default=2
        Number of clusters; cluster ``c`` starts at the mean of the seeds of class ``c``.
    max_iter : int, default=300
        Maximum number of Lloyd iterations of scikit-learn's ``KMeans``.
    tol : float, default=1e-4
        Relative tolerance of ``KMeans`` on the centre shift; 0 stops when no label
        changes and saves a temporary of the size of ``X`` (see Notes).
    random_state : int, RandomState instance or None, default=None
        Draws the initial centres of classes that have no seed.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster index of each sample; cluster ``c`` is the one initialised from class ``c``.
    cluster_centers_ : ndarray of shape (n_clusters, dim)
        Final centres (float32, or float64 for float64 input).
    initial_centers_ : ndarray of shape (n_clusters, dim)
        The centres Lloyd's iterations started from: seed class means, and k-means++
        draws for classes without a seed.
    seeded_ : ndarray of shape (n_clusters,), bool
        Which clusters started from seeds.
    n_iter_ : int
        Lloyd iterations run.
    inertia_ : float
        Sum of squared distances of samples to their centre.

    Notes
    -----
    The fit is scikit-learn's ``KMeans(init=centres, n_init=1, algorithm="lloyd")``;
    only the initialisation is ours. Seeds take part in Lloyd's iterations like any
    other sample and are not clamped to their class (Basu's "seeded", not
    "constrained", KMeans), so a seed may end in another cluster.

    *Classes without a seed* (only possible when ``n_clusters`` exceeds the seeded
    classes) get a centre by k-means++ D² sampling against the seeded centres, from a
    random subsample of at most 10 000 rows drawn with ``random_state``. This is a
    deliberate choice over raising: it keeps "k clusters, some named by seeds" usable,
    and never produces a NaN centre. With no seed at all it is plain k-means++.

    *Memory*: float16 (or any non-float32) input is cast chunk by chunk into one
    float32 buffer; ``check_array`` would instead make a float64 copy of float16 (4 x
    the float16 size). That buffer is ours, so ``KMeans`` runs with ``copy_x=False``
    and centres it in place instead of copying it again. C-contiguous float32 input
    is used as it is and ``KMeans`` keeps ``copy_x=True`` so the caller's array is
    never modified (one centring copy, as in scikit-learn).

    scikit-learn turns ``tol > 0`` into an absolute tolerance with ``np.var(X,
    axis=0)``, which allocates one temporary of the size of ``X``; ``tol=0`` (stop when
    no label changes, usually a few more cheap iterations for 2 clusters) avoids it,
    for a peak of one float32 buffer on float16 input.

    *Cost*: one pass to cast, then ``n_iter_`` Lloyd iterations of
    O(n_samples x dim x n_clusters) each, multithreaded by scikit-learn.
    """

    def __init__(self, n_clusters: int = 2, *, max_iter: int = 300, tol: float = 1e-4, random_state=None) -> None:
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: np.ndarray, seeds: np.ndarray, sample_weight: None = None) -> SeededKMeans:
        """Fit on embeddings ``X`` of shape (n_samples, dim) with ``seeds`` of shape (n_samples,).

        ``seeds`` holds a class index in ``0..n_clusters-1`` for seeded samples and -1
        elsewhere. Returns ``self``.
        """
        k = int(self.n_clusters)
        if k < 1:
            raise SeedError(f"n_clusters={self.n_clusters} should be >= 1")
        X = check_embeddings(X, min_samples=k)
        seeds, _ = check_seeds(seeds, X.shape[0], k)
        if X.dtype == np.float64 and X.flags.c_contiguous:
            Xw, owned = X, False
            for rows in iter_chunks(X.shape[0]):
                if not np.isfinite(X[rows]).all():
                    raise_non_finite()
        else:
            Xw, owned = as_float32(X)
        self._fit_working(Xw, seeds, owned=owned)
        return self

    def _fit_working(self, Xw: np.ndarray, seeds: np.ndarray, *, owned: bool) -> SeededKMeans:
        """Fit on an already checked float matrix; ``owned`` lets KMeans centre it in place."""
        k = int(self.n_clusters)
        rng = check_random_state(self.random_state)
        centres, has_seed = class_means(Xw, seeds, k)
        if not has_seed.all():
            centres = fill_missing_centres(Xw, centres, has_seed, rng)
        km = KMeans(
            n_clusters=k, init=centres.astype(Xw.dtype), n_init=1, max_iter=self.max_iter, tol=self.tol,
            random_state=rng, copy_x=not owned, algorithm="lloyd",
        ).fit(Xw)
        self.labels_ = km.labels_
        self.cluster_centers_ = km.cluster_centers_
        self.initial_centers_ = centres
        self.seeded_ = has_seed
        self.n_iter_ = int(km.n_iter_)
        self.inertia_ = float(km.inertia_)
        return self

    def fit_predict(self, X: np.ndarray, seeds: np.ndarray, sample_weight: None = None) -> np.ndarray:
        """Fit and return ``labels_``."""
        return self.fit(X, seeds).labels_
