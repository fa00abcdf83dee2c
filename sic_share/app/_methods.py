"""The clustering methods the app offers: one table, built from what :mod:`sic_share.sic` exposes.

When :mod:`sic_share.sic` gains a method, :func:`available_methods` is the one
place to add it; the server, the method menu and the tests read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["Fit", "Method", "available_methods", "fit_method"]


@dataclass(frozen=True)
class Method:
    """A choice in the method menu.

    Attributes
    ----------
    name : str
        Its key (``sic``, ``seeded-kmeans``).
    label : str
        What the menu shows.
    rules : tuple of str
        The rules it takes (its ``rule`` parameter), first is the default; empty when it has none.
    make : callable
        ``make(n_classes=k, rule=rule, random_state=seed)`` returns an unfitted estimator whose
        ``fit(X, seeds)`` sets ``labels_`` (and, where the method provides one, ``confidence_``).
    """

    name: str
    label: str
    rules: tuple[str, ...]
    make: Callable[..., Any]


@dataclass(frozen=True)
class Fit:
    """What one fit gave: a class per patch (-1 none) and, where provided, a confidence in [0, 1] per patch."""

    labels: np.ndarray
    confidence: np.ndarray | None
    rounds: int | None


def available_methods() -> dict[str, Method]:
    """The methods of :mod:`sic_share.sic` the app offers, default first.

    Notes
    -----
    ``sic``: :class:`~sic_share.sic.SeededIterativeClustering` with the rules
    ``sic-share sic --rule`` takes. ``seeded-kmeans``: one
    :class:`~sic_share.sic.SeededKMeans` (the nearest seed centroid, refined by
    Lloyd's iterations), SIC's first step alone.
    """
    from sic_share.sic import SeededIterativeClustering, SeededKMeans

    def sic(*, n_classes: int, rule: str, random_state: int) -> Any:
        return SeededIterativeClustering(n_classes=n_classes, rule=rule, random_state=random_state)

    def kmeans(*, n_classes: int, rule: str, random_state: int) -> Any:
        return SeededKMeans(n_classes, random_state=random_state)

    return {
        "sic": Method("sic", "SIC (seeded iterative clustering)", ("structure", "paper"), sic),
        "seeded-kmeans": Method("seeded-kmeans", "Seeded k-means (SIC's first step)", (), kmeans),
    }


def fit_method(method: Method, rule: str | None, X: np.ndarray, seeds: np.ndarray, n_classes: int, *,
               random_state: int = 0) -> Fit:
    """Fit ``method`` on ``X`` with ``seeds`` (class index per patch, -1 none) over ``n_classes`` classes."""
    estimator = method.make(n_classes=n_classes, rule=rule or (method.rules[0] if method.rules else None),
                            random_state=random_state)
    estimator.fit(X, seeds)
    confidence = getattr(estimator, "confidence_", None)
    if confidence is not None:
        confidence = np.clip(np.asarray(confidence, np.float32), 0.0, 1.0)
    return Fit(np.asarray(estimator.labels_, np.int8), confidence, getattr(estimator, "n_rounds_", None))
