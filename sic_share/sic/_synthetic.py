"""Synthetic slides with known truth, for tests and benchmarks of SIC.

A slide is a square grid of patches. Tissue is a mosaic of regions (Voronoi cells
around random points); each region belongs to a class and to a sub-type of that
class. Embeddings follow a low-rank model with ReLU non-negativity, like the last
layer of a CNN:

    z = mu[sub-type] + within * N(0, I_rank)          (latent, rank dims)
    x = relu(z @ loadings + bias + noise * N(0, I_dim))

Binary slides (``n_classes=2``) hold one compact lesion (class 1, a disc covering
``lesion_fraction`` of the patches) in negative tissue (class 0) made of
``n_subtypes`` sub-types. With ``mimic=True`` one negative sub-type sits close to the
lesion in latent space (think of a benign sub-type that looks like tumour): seeded
2-means then lumps it with the lesion, and only a seed that happens to land in it
tells the paper's SIC to split it off. Multi-class slides (``n_classes>2``) give every
class ``n_subtypes`` sub-types scattered in latent space, so a class is not one blob
and seeded k-means with one centre per class cannot fit it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SyntheticSlide", "draw_seeds", "make_slide"]


@dataclass(frozen=True)
class SyntheticSlide:
    """A synthetic slide.

    Attributes
    ----------
    coords : ndarray of shape (n_patches, 2), int32
        Patch centres in level-0 pixels (stride 128).
    X : ndarray of shape (n_patches, dim)
        Embeddings, float32 or float16.
    y : ndarray of shape (n_patches,), int64
        True class of each patch (binary: 1 = lesion).
    subtype : ndarray of shape (n_patches,), int64
        Global sub-type index of each patch (distinct across classes).
    mimic : int
        Sub-type index of the negative sub-type placed next to the lesion, -1 if none.
    """

    coords: np.ndarray
    X: np.ndarray
    y: np.ndarray
    subtype: np.ndarray
    mimic: int


def make_slide(
    n_patches: int = 4096,
    dim: int = 128,
    *,
    n_classes: int = 2,
    n_subtypes: int = 4,
    lesion_fraction: float = 0.05,
    mimic: bool = True,
    rank: int = 12,
    spread: float = 3.0,
    mimic_gap: float = 4.0,
    within: float = 1.0,
    noise: float = 0.5,
    dtype: type | str = np.float32,
    random_state: int | np.random.Generator | None = None,
) -> SyntheticSlide:
    """Draw one synthetic slide.

    Parameters
    ----------
    n_patches : int, default=4096
        Number of patches, laid out on a square grid.
    dim : int, default=128
        Embedding dimension.
    n_classes : int, default=2
        2 for lesion vs. tissue; more for a mosaic of classes with sub-types.
    n_subtypes : int, default=4
        Sub-types of the negative class (binary) or of every class (multi-class).
    lesion_fraction : float, default=0.05
        Binary only: fraction of patches inside the lesion disc.
    mimic : bool, default=True
        Binary only: place one negative sub-type ``mimic_gap`` away from the lesion.
    rank : int, default=12
        Latent rank of the embeddings.
    spread : float, default=3.0
        Standard deviation of sub-type means in latent space.
    mimic_gap : float, default=4.0
        Latent distance between the lesion and the mimic sub-type.
    within : float, default=1.0
        Latent standard deviation inside a sub-type.
    noise : float, default=0.5
        Standard deviation of the per-feature noise before the ReLU.
    dtype : dtype, default=float32
        dtype of ``X``.
    random_state : int, Generator or None
        Seed of everything.
    """
    rng = np.random.default_rng(random_state)
    side = int(np.ceil(np.sqrt(n_patches)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[:n_patches]
    coords = (grid * 128 + 128).astype(np.int32)

    n_regions = n_subtypes * (1 if n_classes == 2 else n_classes)
    # Voronoi mosaic: several cells per region so sub-types are spatially scattered.
    cells = rng.uniform(0, side, (3 * n_regions, 2))
    cell_region = np.concatenate([np.arange(n_regions), rng.integers(0, n_regions, 2 * n_regions)])
    region = np.empty(grid.shape[0], dtype=np.int64)
    for start in range(0, grid.shape[0], 65536):
        g = grid[start:start + 65536]
        region[start:start + g.shape[0]] = cell_region[np.argmin(((g[:, None, :] - cells) ** 2).sum(-1), axis=1)]

    means = rng.normal(0.0, spread, (n_regions + 1, rank))
    mimic_id = -1
    if n_classes == 2:
        y_region = np.zeros(n_regions + 1, dtype=np.int64)
        y_region[n_regions] = 1  # the lesion is the last sub-type
        radius = np.sqrt(lesion_fraction * n_patches / np.pi)
        centre = rng.uniform(radius, max(radius, side - radius), 2)
        in_lesion = ((grid - centre) ** 2).sum(-1) <= radius**2
        region = np.where(in_lesion, n_regions, region)
        if mimic and n_subtypes > 1:
            mimic_id = int(rng.integers(0, n_subtypes))
            u = rng.normal(size=rank)
            means[mimic_id] = means[n_regions] + mimic_gap * u / np.linalg.norm(u)
    else:
        y_region = np.concatenate([np.repeat(np.arange(n_classes), n_subtypes), [0]])

    loadings = rng.normal(0.0, 1.0, (rank, dim)) / np.sqrt(rank)
    bias = rng.normal(0.5, 0.5, dim)
    n = grid.shape[0]
    X = np.empty((n, dim), dtype=dtype)
    for start in range(0, n, 8192):
        r = region[start:start + 8192]
        z = means[r] + within * rng.standard_normal((r.size, rank))
        f = (z @ loadings + bias).astype(np.float32)
        f += np.float32(noise) * rng.standard_normal((r.size, dim), dtype=np.float32)
        X[start:start + r.size] = np.maximum(f, 0.0)
    return SyntheticSlide(coords=coords, X=X, y=y_region[region], subtype=region, mimic=mimic_id)


def draw_seeds(y: np.ndarray, n_per_class: int, *, random_state: int | np.random.Generator | None = None) -> np.ndarray:
    """Pick ``n_per_class`` random seed patches inside each class, as the paper's protocol does.

    Parameters
    ----------
    y : ndarray of shape (n_patches,)
        True class of each patch.
    n_per_class : int
        Seeds per class (all of a class when it has fewer patches).

    Returns
    -------
    seeds : ndarray of shape (n_patches,), int64
        Class index at the seeded patches, -1 elsewhere.
    """
    rng = np.random.default_rng(random_state)
    seeds = np.full(y.shape[0], -1, dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        pick = rng.choice(idx, size=min(n_per_class, idx.size), replace=False)
        seeds[pick] = c
    return seeds
