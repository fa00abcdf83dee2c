"""Where a method is least sure: the confidence layer's scale, and the regions to seed next.

A method's per-patch confidence (``confidence_``) is the probability of the chosen
class minus that of the next one: 0 is a toss-up, 1 is sure. Its values depend on
the method and the slide (label spreading's margins on the demo slide are mostly
below 0.5, although its labels are right), so a layer drawn on an absolute scale
is dark almost everywhere and says nothing. The confidence layer, the app and the
CLI therefore mark the *least certain* patches of this result: the 5 % with the
lowest confidence, then the next 15 %, and say which confidence values those are.
The largest connected groups of them on the patch grid are where a seed helps
most: :func:`uncertain_regions` names them, the PNG numbers them, the app outlines
the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sic_share.errors import SicShareError

__all__ = ["TIER_COLORS", "TIERS", "ConfidenceScale", "UncertainRegion", "confidence_scale", "grid_cells",
           "uncertain_regions"]

#: Cumulative shares of the patches the layer marks: the least certain 5 %, then up to 20 %.
TIERS = (0.05, 0.20)
#: RGBA of each tier on the layer: opaque yellow, then half-transparent (distinct from every class colour).
TIER_COLORS = ((255, 214, 0, 235), (255, 214, 0, 120))


@dataclass(frozen=True)
class ConfidenceScale:
    """The least certain patches of one result, in tiers.

    Attributes
    ----------
    tier : ndarray of shape (n_patches,), int8
        0 for the least certain share, 1 for the next, ...; -1 for the rest (not marked).
    shares : tuple of float
        The cumulative shares asked for (:data:`TIERS`).
    limits : tuple of float
        Per tier, the highest confidence in it (the tier holds the patches of confidence
        at most this value and above the previous tier's limit; an empty tier repeats
        the previous limit).
    counts : tuple of int
        Patches in each tier (ties can make a tier a little larger than its share).
    n_patches : int
    lowest : float
        The lowest confidence of all.
    """

    tier: np.ndarray
    shares: tuple[float, ...]
    limits: tuple[float, ...]
    counts: tuple[int, ...]
    n_patches: int
    lowest: float = 0.0

    def legend(self) -> list[str]:
        """One line per tier, then one for the rest: what each colour of the layer means, with its numbers
        (the share of the patches each tier holds, its patch count and confidence range)."""
        lines = []
        low = self.lowest
        for k, (limit, count) in enumerate(zip(self.limits, self.counts)):
            what = "least certain" if k == 0 else "next"
            part = count / max(self.n_patches, 1)  # the share it holds (ties can make it more than asked)
            lines.append(f"{what} {part:.0%} ({count} patch{'es' * (count != 1)}): confidence {low:.2f}-{limit:.2f}")
            low = limit
        rest = self.n_patches - sum(self.counts)
        lines.append(f"the other {rest} patches: surer (confidence above {low:.2f})")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"shares": list(self.shares), "lowest": round(self.lowest, 4), "limits": [round(v, 4) for v in self.limits],
                "counts": list(self.counts), "patches": self.n_patches}


def _check(confidence: Any) -> np.ndarray:
    values = np.asarray(confidence)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
        raise SicShareError(f"confidence of shape {values.shape} should be one number per patch")
    values = values.astype(np.float32, copy=False)
    if values.size and not (0 <= values.min() and values.max() <= 1):  # NaN fails both
        raise SicShareError("confidence should hold finite numbers in [0, 1], one per patch")
    return values


def confidence_scale(confidence: Any, shares: Sequence[float] = TIERS) -> ConfidenceScale:
    """Rank the patches by confidence and mark the least certain shares of them.

    Parameters
    ----------
    confidence : array-like of shape (n_patches,)
        Per-patch confidence in [0, 1].
    shares : sequence of float, default=(0.05, 0.20)
        Increasing cumulative shares in (0, 1].

    Returns
    -------
    ConfidenceScale

    Notes
    -----
    Tier ``k`` holds the patches whose confidence is at most the value at rank
    ``ceil(share_k * n)`` (so at least that share, more on ties) and above tier
    ``k - 1``'s limit. A patch as sure as the surest patch of the slide is never
    marked: when every patch is equally sure nothing stands out. O(n) (a partial sort).
    """
    conf = _check(confidence)
    wanted = tuple(float(s) for s in shares)
    if not wanted or any(not 0 < s <= 1 for s in wanted) or list(wanted) != sorted(set(wanted)):
        raise SicShareError(f"shares={shares!r} should be increasing fractions in (0, 1]")
    n = conf.size
    tier = np.full(n, -1, np.int8)
    if n == 0:
        return ConfidenceScale(tier, wanted, tuple(0.0 for _ in wanted), tuple(0 for _ in wanted), 0)
    ranks = sorted({min(n, max(1, int(np.ceil(s * n)))) - 1 for s in wanted})
    values = np.partition(conf, ranks)
    top = float(conf.max())
    limits, counts = [], []
    below = np.zeros(n, bool)
    reached = lowest = float(conf.min())
    for share in wanted:
        cut = float(values[min(n, max(1, int(np.ceil(share * n)))) - 1])
        inside = (conf <= cut) & (conf < top) & ~below
        tier[inside] = len(limits)
        below |= inside
        if inside.any():  # the highest confidence the tier holds (below ``cut`` when the surest are left out)
            reached = float(conf[inside].max())
        limits.append(reached)
        counts.append(int(inside.sum()))
    return ConfidenceScale(tier, wanted, tuple(limits), tuple(counts), n, lowest)


@dataclass(frozen=True)
class UncertainRegion:
    """A connected group of marked (least certain) patches on the patch grid.

    Attributes
    ----------
    patch : int
        Index of the patch to seed: the region's patch nearest its centre.
    x, y : int
        That patch's level-0 centre.
    n_patches : int
        Patches in the region.
    box : (int, int, int, int)
        Level-0 ``(x0, y0, x1, y1)`` of the region's patch centres.
    confidence : float
        The mean confidence in the region.
    """

    patch: int
    x: int
    y: int
    n_patches: int
    box: tuple[int, int, int, int]
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {"patch": self.patch, "x": self.x, "y": self.y, "patches": self.n_patches, "box": list(self.box),
                "confidence": round(self.confidence, 4)}


def grid_cells(coords: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each patch's (column, row) on its grid, as :func:`sic_share.sic._grid.grid_graph` counts them
    (:func:`sic_share.sic._grid.grid_cells`), so two patches are neighbours here exactly when they are there."""
    from sic_share.sic._grid import grid_cells as cells  # not at import: sic_share.viz stays light

    return cells(coords)


def uncertain_regions(coords: Any, scale: ConfidenceScale, confidence: Any, *, top: int = 3,
                      cells: tuple[np.ndarray, np.ndarray] | None = None) -> list[UncertainRegion]:
    """The largest connected groups of marked patches: where the next seeds help most.

    Parameters
    ----------
    coords : array-like of shape (n_patches, 2)
        Level-0 patch centres.
    scale : ConfidenceScale
        From :func:`confidence_scale`; every marked tier counts.
    confidence : array-like of shape (n_patches,)
        The confidence the scale was made from (for each region's mean).
    top : int, default=3
        How many regions to return.
    cells : (col, row), optional
        :func:`grid_cells` of ``coords``, when the caller keeps them (the app).

    Returns
    -------
    list of UncertainRegion
        Largest first (ties: the less certain first); fewer than ``top`` when fewer exist.

    Notes
    -----
    Regions are the 8-connected components of the marked patches' grid cells
    (``scipy.ndimage.label``), O(cells of the marked patches' bounding box). The patch
    to seed is the region's patch nearest the mean of its centres, so it lies in the
    region even when the region is a curved band along a border.
    """
    from scipy import ndimage

    points = np.asarray(coords)
    conf = _check(confidence)
    if len(points) != scale.n_patches or conf.size != scale.n_patches:
        raise SicShareError(f"coords ({len(points)}), confidence ({conf.size}) and the scale ({scale.n_patches}) "
                            "should describe the same patches")
    marked = np.flatnonzero(scale.tier >= 0)
    if not marked.size:
        return []
    col, row = cells if cells is not None else grid_cells(points)
    c, r = col[marked], row[marked]
    c0, r0 = int(c.min()), int(r.min())
    image = np.zeros((int(r.max()) - r0 + 1, int(c.max()) - c0 + 1), bool)
    image[r - r0, c - c0] = True
    labelled, found = ndimage.label(image, structure=np.ones((3, 3), bool))
    region = labelled[r - r0, c - c0] - 1
    sizes = np.bincount(region, minlength=found)
    means = np.bincount(region, weights=conf[marked], minlength=found) / np.maximum(sizes, 1)
    order = np.lexsort((np.arange(found), means, -sizes))[:top]
    out = []
    for k in order.tolist():
        members = marked[region == k]
        xy = points[members].astype(np.float64)
        nearest = members[int(np.argmin(((xy - xy.mean(axis=0)) ** 2).sum(axis=1)))]
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        out.append(UncertainRegion(int(nearest), int(round(float(points[nearest, 0]))),
                                   int(round(float(points[nearest, 1]))),
                                   int(members.size), (int(x0), int(y0), int(x1), int(y1)),
                                   float(conf[members].mean())))
    return out
