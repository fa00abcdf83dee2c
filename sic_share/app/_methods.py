"""The clustering methods the app offers: one table, built from what :mod:`sic_share.sic` exposes.

When :mod:`sic_share.sic` gains a method, :func:`available_methods` is the one
place to add it; the server, the method menu and the tests read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["Fit", "Method", "available_methods", "fit_method", "prepare_method"]


@dataclass(frozen=True)
class Method:
    """A choice in the method menu.

    Attributes
    ----------
    name : str
        Its key (``spreading``, ``sic``, ...).
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
    """The methods of :mod:`sic_share.sic` the app offers, default first: its method registry.

    Notes
    -----
    The menu is :func:`sic_share.sic.list_methods` (``spreading``, the default, then
    ``sic``, ``prototype``, ``logreg``, ...), each built by
    :func:`sic_share.sic.create_method` exactly as ``sic-share sic --method`` builds it,
    so a click gives the labels the command gives for the same seeds. Methods that
    take a ``rule`` (``sic``) offer the rules ``sic --rule`` takes.
    """
    from sic_share.sic._registry import create_method, list_methods, method_info

    def maker(name: str, takes_rule: bool) -> Callable[..., Any]:
        def make(*, n_classes: int, rule: str | None, random_state: int) -> Any:
            return create_method(name, n_classes=n_classes, random_state=random_state,
                                 **({"rule": rule} if takes_rule else {}))
        return make

    methods = {}
    for name in list_methods():
        info = method_info(name)
        takes_rule = "rule" in info.options
        rules = ("structure", "paper", "authors") if takes_rule else ()
        methods[name] = Method(name, info.summary, rules, maker(name, takes_rule))
    return methods


def fit_method(method: Method, rule: str | None, X: np.ndarray, seeds: np.ndarray, n_classes: int, *,
               random_state: int = 0, coords: np.ndarray | None = None,
               prepared: dict[Any, Any] | None = None) -> Fit:
    """Fit ``method`` on ``X`` with ``seeds`` (class index per patch, -1 none) over ``n_classes`` classes.

    ``coords`` (level-0 patch centres) let the methods that use the patch grid use it.
    ``prepared`` is a dict the caller keeps for this slide: a method with a
    seed-independent part (``prepare(X, coords)``, label spreading on a large slide)
    stores it there on the first fit and reuses it on every later one, so a click
    costs the per-seeds work only. What a later fit adds to it stays too: label
    spreading's regional step (issue 23) keeps its projection and graph in the
    prepared graph on the first click that takes the step.
    """
    estimator = _make(method, rule, n_classes, random_state)
    kept = _prepared(estimator, method, X, coords, prepared)
    if kept is not None:
        estimator.fit(X, seeds, coords, prepared=kept)
    else:
        estimator.fit(X, seeds, coords)
    confidence = getattr(estimator, "confidence_", None)
    if confidence is not None:
        confidence = np.clip(np.asarray(confidence, np.float32), 0.0, 1.0)
    return Fit(np.asarray(estimator.labels_, np.int8), confidence, getattr(estimator, "n_rounds_", None))


def prepare_method(method: Method, rule: str | None, X: np.ndarray, *, random_state: int = 0,
                   coords: np.ndarray | None = None, prepared: dict[Any, Any]) -> None:
    """Build ``method``'s seed-independent part into ``prepared`` ahead of the first fit (see :func:`fit_method`).

    The app calls it in the background once it listens, so that the first click
    costs what every later one costs. A method without such a part does nothing.
    """
    _prepared(_make(method, rule, 2, random_state), method, X, coords, prepared)


def _make(method: Method, rule: str | None, n_classes: int, random_state: int) -> Any:
    """An unfitted estimator of ``method`` (its first rule when ``rule`` is None)."""
    return method.make(n_classes=n_classes, rule=rule or (method.rules[0] if method.rules else None),
                       random_state=random_state)


def _prepared(estimator: Any, method: Method, X: np.ndarray, coords: np.ndarray | None,
              prepared: dict[Any, Any] | None) -> Any:
    """The estimator's kept seed-independent part, built into ``prepared`` when missing; None without one."""
    prepare = getattr(estimator, "prepare", None)
    if prepare is None or prepared is None:
        return None
    params = estimator.get_params()
    params.pop("n_classes", None)
    key = (method.name, tuple(sorted((k, repr(v)) for k, v in params.items())))
    if key not in prepared:
        prepared[key] = prepare(X, coords)
    return prepared[key]
