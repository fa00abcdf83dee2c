"""The working matrix every method clusters or classifies: a chunked projection of the embeddings.

float16 embeddings of a million patches never become a float32 copy here: rows
are cast in chunks into a reused buffer per thread, optionally L2-normalised,
and projected onto a few principal axes plus the seed-class mean directions.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_limits

from sic_share.sic._kmeans import _prepare_chunk, as_float32, class_means, iter_chunks, raise_non_finite

__all__ = ["PCA_SAMPLE", "project", "project_onto"]

#: Rows per chunk of the threaded projection pass: 4 MiB of float32 per thread at dim 1024.
_PROJECT_ROWS = 1024
#: Rows drawn to estimate the principal subspace.
PCA_SAMPLE = 4096


def project(
    X: np.ndarray, seeds: np.ndarray, n_classes: int, n_components: int | None, *, normalize: bool,
    random_state: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Project ``X`` onto ``n_components`` principal axes plus one direction per seeded class.

    Parameters
    ----------
    X : ndarray of shape (n_samples, dim), float16 or float32
    seeds : ndarray of shape (n_samples,)
        Class index per seeded row, -1 elsewhere.
    n_classes : int
    n_components : int or None
        Principal axes; None (or a ``dim`` of at most ``n_components + n_classes``)
        returns the embedding itself as float32.
    normalize : bool
        L2-normalise each row first.
    random_state : RandomState
        Draws the rows the principal axes are estimated on.

    Returns
    -------
    Z : ndarray of shape (n_samples, n_dims), float32
    components : ndarray of shape (n_dims, dim) or None
        Orthonormal basis of the projection; None when ``Z`` is the embedding.
    owned : bool
        Whether ``Z`` is a new buffer (callers may modify it).

    Notes
    -----
    The basis is a randomized SVD of 4096 random rows (plus every seed) and the
    seed-class means, orthonormalised by QR, so a lesion too small to own a
    principal axis keeps its direction. The projection is not centred (the
    methods here are translation-invariant). One pass over ``X``, threaded over
    chunks of 1024 rows; non-finite values are caught on the small result (NaN and
    inf propagate through a product). Small factorisations run on one BLAS thread:
    a 1024 x 35 QR took 0.3 s with two OpenBLAS threads on a busy 2-core machine,
    2 ms with one.
    """
    n, d = X.shape
    m = n_components
    if m is None or d <= m + n_classes:
        Z, owned = as_float32(X, normalize=normalize)
        return Z, None, owned
    rows = np.union1d(random_state.choice(n, size=min(n, PCA_SAMPLE), replace=False), np.flatnonzero(seeds >= 0))
    S = np.empty((rows.size, d), dtype=np.float32)
    _prepare_chunk(X, rows, S, normalize)
    mean = S.mean(axis=0, dtype=np.float64)
    means, has_seed = class_means(S, seeds[rows], n_classes)
    with threadpool_limits(1, user_api="blas"):
        _, _, vt = randomized_svd(S - mean.astype(np.float32), min(m, rows.size - 1), n_iter=2,
                                  random_state=random_state)
        basis, _ = np.linalg.qr(np.vstack([vt.astype(np.float64), (means - mean)[has_seed]]).T)
    W = np.ascontiguousarray(basis, dtype=np.float32)
    return project_onto(X, W, normalize=normalize), W.T, True


def project_onto(X: np.ndarray, W: np.ndarray, *, normalize: bool) -> np.ndarray:
    """``X @ W`` as float32, in one threaded pass over chunks of ``X`` (cast, optionally L2-normalised).

    ``W`` is float32 of shape (dim, n_dims); the result (n_samples, n_dims). Raises the
    non-finite error when ``X`` holds NaN or inf (they propagate to the product).
    """
    n, d = X.shape
    Z = np.empty((n, W.shape[1]), dtype=np.float32)
    chunks = list(iter_chunks(n, _PROJECT_ROWS))
    workers = max(1, min(len(chunks), os.cpu_count() or 1, 4))
    local = threading.local()

    def run(sl: slice) -> None:
        # One float32 buffer per thread; numpy's casts and products release the GIL.
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty((min(n, _PROJECT_ROWS), d), dtype=np.float32)
        b = buf[: sl.stop - sl.start]
        _prepare_chunk(X, sl, b, normalize, check_finite=False)
        np.matmul(b, W, out=Z[sl])

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, chunks))
    if not np.isfinite(Z).all():
        raise_non_finite()
    return Z
