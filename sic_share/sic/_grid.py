"""Space: the patch grid as a graph, and smoothing of class probabilities along it.

Every dataset carries level-0 patch centres on a regular grid, and tissue regions
are contiguous: neighbouring patches agree far more often than not. These helpers
turn the centres into an 8-neighbour graph (O(n log n), no pairwise matrix) and
smooth per-patch class probabilities on it.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from sic_share.errors import SeedError

__all__ = ["grid_cells", "grid_graph", "smooth_on_grid"]

_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _stride(values: np.ndarray) -> float:
    """The grid step along one axis: the smallest gap between distinct centres (1 when there is one line)."""
    lines = np.unique(values)
    gaps = np.diff(lines)
    gaps = gaps[gaps > 0]
    return float(gaps.min()) if gaps.size else 1.0


def grid_cells(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each patch's (column, row) on its grid: its centre minus the first centre, over the stride, rounded.

    Counted from the first centre, so centres at half a stride (128 + 256 k) do not
    round half to even. Raises SeedError for coords that are not (n_patches, 2) finite.
    """
    points = np.asarray(coords, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise SeedError(f"coords of shape {points.shape} should be (n_patches, 2) finite level-0 patch centres")
    if not len(points):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    origin = points.min(axis=0)
    col = np.rint((points[:, 0] - origin[0]) / _stride(points[:, 0])).astype(np.int64)
    row = np.rint((points[:, 1] - origin[1]) / _stride(points[:, 1])).astype(np.int64)
    return col, row


def grid_graph(coords: np.ndarray) -> sparse.csr_matrix:
    """The 8-neighbour graph of patches on their grid.

    Parameters
    ----------
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres (x, y).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_patches, n_patches), float32
        1 between patches that are grid neighbours (sides and corners), symmetric,
        zero diagonal.

    Notes
    -----
    The step along each axis is the smallest gap between distinct centres (the
    stride); a patch's grid cell is its centre divided by the step, rounded.
    Neighbours are found by sorting packed cell keys and one ``searchsorted`` per
    offset: O(n log n) time and O(8 n) memory, so a million patches take about half
    a second. Patches across a gap (background) have no edge.
    """
    col, row = grid_cells(coords)
    n = col.shape[0]
    width = int(col.max(initial=0)) + 3
    key = (row + 1) * width + (col + 1)  # a one-cell margin keeps every neighbour key non-negative and unique
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    src, dst = [], []
    for dr, dc in _OFFSETS:
        target = key + dr * width + dc
        at = np.minimum(np.searchsorted(sorted_keys, target), n - 1)
        hit = sorted_keys[at] == target
        src.append(np.flatnonzero(hit))
        dst.append(order[at[hit]])
    i, j = np.concatenate(src), np.concatenate(dst)
    graph = sparse.csr_matrix((np.ones(i.size, np.float32), (i, j)), shape=(n, n))
    graph.sum_duplicates()
    graph.data[:] = 1.0  # two patches on one cell (duplicate centres) still count once
    return graph


def smooth_on_grid(proba: np.ndarray, graph: sparse.csr_matrix, *, weight: float, n_iter: int = 10) -> np.ndarray:
    """Class probabilities smoothed along the grid, each patch keeping part of its own evidence.

    Iterates ``P <- (1 - weight) * P0 + weight * mean of P over the grid neighbours``
    ``n_iter`` times (label spreading with the patches' own probabilities as the
    prior, Zhou et al. 2004). A patch without neighbours keeps ``P0``.

    Parameters
    ----------
    proba : ndarray of shape (n_patches, n_classes)
        Rows sum to 1.
    graph : sparse matrix of shape (n_patches, n_patches)
        From :func:`grid_graph`.
    weight : float in [0, 1)
        How much the neighbours count; 0 returns ``proba``.
    n_iter : int, default=10
        Iterations; influence reaches about ``n_iter`` patches away, decaying as
        ``weight ** hops``.

    Returns
    -------
    ndarray of shape (n_patches, n_classes), float32, rows summing to 1.
    """
    if weight <= 0:
        return proba
    return smooth_with_walk(proba, grid_walk(graph), weight=weight, n_iter=n_iter)


def grid_walk(graph: sparse.csr_matrix) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The row-normalised grid graph and which patches have no neighbour: what smoothing reuses.

    Seed-independent, so callers that smooth many results on one slide (the app)
    build it once (:func:`grid_graph`, then this) and pass it to :func:`smooth_with_walk`.
    """
    degree = np.asarray(graph.sum(axis=1)).ravel()
    alone = degree == 0
    inv = np.where(alone, 0.0, 1.0 / np.maximum(degree, 1))
    return (sparse.diags(inv.astype(np.float32)) @ graph).tocsr().astype(np.float32), alone


def smooth_with_walk(proba: np.ndarray, walk: tuple[sparse.csr_matrix, np.ndarray], *, weight: float,
                     n_iter: int = 10) -> np.ndarray:
    """:func:`smooth_on_grid` with the walk of :func:`grid_walk` built beforehand.

    ``proba`` may also be one column (1-d, one class of two): it is smoothed as is.
    """
    if weight <= 0:
        return proba
    step, alone = walk
    prior = np.asarray(proba, dtype=np.float32)  # float32: half the memory traffic of each sparse product
    if prior.ndim == 2 and prior.shape[1] == 2:
        # Each step keeps rows summing to 1, so two classes need only one column: half the work.
        first = prior[:, 0] / np.maximum(prior.sum(axis=1), np.float32(1e-30))
        smoothed = smooth_with_walk(first, walk, weight=weight, n_iter=n_iter)
        return np.stack([smoothed, 1 - smoothed], axis=1)
    kept = (1 - weight) * prior
    p = prior
    for _ in range(n_iter):
        p = step @ p
        p *= weight
        p += kept
        p[alone] = prior[alone]
    if p.ndim == 2:
        p /= p.sum(axis=1, keepdims=True)
    return p
