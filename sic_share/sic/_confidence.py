"""What every method ends with: class probabilities per patch, grid smoothing, labels and confidence."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import softmax

from sic_share.errors import SeedError
from sic_share.sic._grid import grid_graph, grid_walk, smooth_with_walk

__all__ = ["centroid_proba", "check_smooth", "finish_labels", "label_margin", "margin"]


def centroid_proba(Z: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Soft class memberships from distances to the class means of a hard labelling.

    ``p_c`` is proportional to ``exp(-d_c^2 / t)``, where ``d_c`` is the distance of a
    patch to the mean of the patches labelled ``c`` and ``t`` the mean squared
    distance of the patches to their own class mean (the typical spread). A class
    without patches gets probability 0. Returned as float32 of shape
    (n_patches, n_classes); O(n_patches x n_classes x dim), in chunks.
    """
    n = Z.shape[0]
    means = np.zeros((n_classes, Z.shape[1]), dtype=np.float64)
    present = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        rows = labels == c
        if rows.any():
            means[c] = Z[rows].mean(axis=0, dtype=np.float64)
            present[c] = True
    d2 = np.empty((n, n_classes), dtype=np.float32)
    m32 = means.astype(np.float32)
    sq = (m32**2).sum(axis=1)
    for start in range(0, n, 65536):
        block = Z[start:start + 65536]
        d = (block**2).sum(axis=1)[:, None] - 2 * block @ m32.T + sq[None, :]
        d2[start:start + block.shape[0]] = np.maximum(d, 0)
    own = d2[np.arange(n), np.clip(labels, 0, n_classes - 1)]
    scale = float(own.mean()) if n and own.mean() > 0 else 1.0
    logits = -d2 / np.float32(scale)
    logits[:, ~present] = -np.inf
    return softmax(logits, axis=1).astype(np.float32)


def margin(proba: np.ndarray) -> np.ndarray:
    """Confidence per patch: the probability of the first class minus that of the second, in [0, 1]."""
    if proba.shape[1] < 2:
        return np.ones(proba.shape[0], dtype=np.float32)
    if proba.shape[1] == 2:
        return np.minimum(np.abs(proba[:, 0] - proba[:, 1]), 1.0).astype(np.float32)
    top = np.partition(proba, proba.shape[1] - 2, axis=1)[:, -2:]
    return np.clip(top[:, 1] - top[:, 0], 0.0, 1.0).astype(np.float32)


def label_margin(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Confidence of given labels: the probability of a patch's class minus the best other one, clipped to [0, 1]."""
    n, k = proba.shape
    if k < 2:
        return np.ones(n, dtype=np.float32)
    rows = np.arange(n)
    own = proba[rows, labels]
    other = proba.copy()
    other[rows, labels] = -np.inf
    return np.clip(own - other.max(axis=1), 0.0, 1.0).astype(np.float32)


def check_smooth(smooth: object) -> float:
    """``smooth`` as a float in [0, 1), or one sentence saying what it should be."""
    try:
        value = float(smooth)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value < 1.0:
        raise SeedError(f"smooth={smooth!r} should be in [0, 1): how much a patch's grid neighbours count (0: off)")
    return value


def finish_labels(
    proba: np.ndarray, seeds: np.ndarray, coords: np.ndarray | None, smooth: float, *, clamp: bool,
    walk: tuple[Any, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth ``proba`` on the patch grid (when ``coords`` and ``smooth`` are given), then labels and confidence.

    Returns ``(proba, labels, confidence)``: float32 (n, k), int64 (n,) and float32
    (n,) in [0, 1]. With ``clamp``, a seeded patch keeps its seed's class with
    confidence 1: a click is an instruction. ``walk`` is the grid's
    :func:`~sic_share.sic._grid.grid_walk`, when the caller keeps one for the slide.
    """
    if coords is not None and smooth > 0:
        if len(coords) != proba.shape[0]:
            raise SeedError(f"coords have {len(coords)} rows but the embeddings {proba.shape[0]}: give one centre per patch")
        proba = smooth_with_walk(proba, walk if walk is not None else grid_walk(grid_graph(coords)), weight=smooth)
    proba = np.asarray(proba, dtype=np.float32)
    if clamp:
        seeded = np.flatnonzero(seeds >= 0)
        proba = proba.copy() if not proba.flags.writeable else proba
        proba[seeded] = 0.0
        proba[seeded, seeds[seeded]] = 1.0
    labels = np.argmax(proba, axis=1).astype(np.int64)
    return proba, labels, margin(proba)
