"""The methods ``--method`` can name: a registry that imports no estimator until one is built.

The estimators subclass scikit-learn's ``BaseEstimator``, and importing scikit-learn
costs over a second on a small machine. Callers that only list the methods (help
texts, the app's menu on start) read this table; :func:`create_method` imports the
estimator's module when a method is built.
"""

from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from sic_share.errors import SeedError

__all__ = ["DEFAULT_METHOD", "MethodInfo", "create_method", "list_methods", "method_info", "register_method"]


@dataclass(frozen=True)
class MethodInfo:
    """A method ``--method`` can name.

    Attributes
    ----------
    name : str
    summary : str
        One line for help texts and tables.
    make : callable or str
        ``make(**options)`` returns an unfitted estimator; a string ``"module:Class"``
        names one, imported when first built.
    options : tuple of str
        The options it takes besides ``n_classes`` and ``random_state``.
    defaults : dict
        Options set when the user sets none (the settings the evaluation chose).
    """

    name: str
    summary: str
    make: Callable[..., Any] | str
    options: tuple[str, ...]
    defaults: dict[str, Any]

    def factory(self) -> Callable[..., Any]:
        """The callable that builds the estimator (importing its module when named by a string)."""
        if callable(self.make):
            return self.make
        module, _, name = self.make.partition(":")
        return getattr(importlib.import_module(module), name)


_METHODS: dict[str, MethodInfo] = {}

#: The method ``sic``, ``benchmark`` and :func:`~sic_share.sic.run_sic` use unless told otherwise:
#: chosen by the evaluation suite in ``benchmarks/sic.py`` (docs/sic.md has the table).
DEFAULT_METHOD = "spreading"


def register_method(name: str, summary: str, make: Callable[..., Any] | str, options: tuple[str, ...],
                    **defaults: Any) -> None:
    """Add a method to the registry (a name registered twice is replaced)."""
    _METHODS[name] = MethodInfo(name, summary, make, options, dict(defaults))


def list_methods(pattern: str = "*") -> list[str]:
    """Names of the registered methods matching ``pattern`` (fnmatch), the default first."""
    names = sorted(_METHODS, key=lambda m: (m != DEFAULT_METHOD, m))
    return [m for m in names if fnmatch.fnmatch(m, pattern)]


def method_info(name: str) -> MethodInfo:
    """The registry entry of ``name``; an unknown name raises ``SeedError`` listing the known ones."""
    if name not in _METHODS:
        raise SeedError(f"method {name!r} is not known: use one of {', '.join(list_methods())}")
    return _METHODS[name]


def create_method(name: str = DEFAULT_METHOD, *, n_classes: int | None = None, random_state=None,
                  **options: Any) -> Any:
    """An unfitted estimator of method ``name`` with ``options``.

    Options left at None are not set (the method's default applies). An option the
    method does not take raises ``SeedError`` naming the methods that take it.
    """
    info = method_info(name)
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if key not in info.options:
            takers = [m for m, i in _METHODS.items() if key in i.options]
            where = f"method {' or '.join(repr(t) for t in takers)} only" if takers else "no method"
            raise SeedError(f"option {key} applies to {where}, not to {name!r}: drop it or choose that method")
    settings = {**info.defaults, **given}
    return info.factory()(n_classes=n_classes, random_state=random_state, **settings)


_HERE = "sic_share.sic._methods"
register_method("spreading", "label spreading over embedding and grid neighbours (scikit-learn LabelSpreading)",
                f"{_HERE}:SeedLabelSpreading",
                ("n_neighbors", "alpha", "grid_weight", "background", "trim", "regional", "normalize", "n_components",
                 "smooth"))
register_method("sic", "Seeded Iterative Clustering (the paper's method; rules structure, paper, authors)",
                "sic_share.sic._sic:SeededIterativeClustering",
                ("rule", "score", "normalize", "n_components", "max_rounds", "smooth"))
register_method("prototype", "nearest seed-class mean (scikit-learn NearestCentroid)", f"{_HERE}:NearestPrototype",
                ("normalize", "n_components", "smooth"))
register_method("logreg", "logistic regression on the seeds (scikit-learn LogisticRegression)",
                f"{_HERE}:SeedLogisticRegression", ("C", "normalize", "n_components", "smooth"))
