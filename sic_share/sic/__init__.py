"""Seeded Iterative Clustering: a few seed patches grow into a dense annotation of a slide.

- :class:`SeededKMeans` and :class:`SeededIterativeClustering`: scikit-learn
  style estimators (binary SIC as in the paper, and multi-class SIC);
- :func:`read_seeds`: seeds from a CSV, QuPath GeoJSON or patch indices;
  :func:`map_seeds` picks their class names for a slide of a dataset;
- :class:`SeedLabelSpreading` (the default method), :class:`NearestPrototype`,
  :class:`SeedLogisticRegression`: semi-supervised methods beside SIC, each with a
  per-patch ``confidence_``; :func:`create_method` and :func:`list_methods` name them
  (``--method``);
- :func:`run_sic`: the ``sic-share sic`` workflow on one slide of a local or hub dataset;
  :func:`locate_slide` finds and verifies that slide;
- :func:`make_slide` and :data:`FAMILIES`: synthetic and real-embedding slides with known
  truth, for tests and benchmarks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for readers and type checkers; at run time they load on first use
    from sic_share.sic._families import FAMILIES, make_family_slide
    from sic_share.sic._kmeans import SeededKMeans
    from sic_share.sic._methods import NearestPrototype, SeedLabelSpreading, SeedLogisticRegression
    from sic_share.sic._registry import DEFAULT_METHOD, create_method, list_methods, method_info
    from sic_share.sic._run import SicResult, SlideFile, load_slide, locate_slide, map_seeds, run_sic
    from sic_share.sic._seeds import MissedSeed, Seeds, read_seeds
    from sic_share.sic._sic import SeededIterativeClustering
    from sic_share.sic._synthetic import SyntheticSlide, draw_seeds, make_slide

#: Where each public name lives. Importing this package loads none of them (scikit-learn
#: alone takes over a second to import): the app lists methods and finds slides without it.
_WHERE = {
    "FAMILIES": "_families", "make_family_slide": "_families",
    "SeededKMeans": "_kmeans",
    "NearestPrototype": "_methods", "SeedLabelSpreading": "_methods", "SeedLogisticRegression": "_methods",
    "DEFAULT_METHOD": "_registry", "create_method": "_registry", "list_methods": "_registry",
    "method_info": "_registry",
    "SicResult": "_run", "SlideFile": "_run", "load_slide": "_run", "locate_slide": "_run", "map_seeds": "_run",
    "run_sic": "_run",
    "MissedSeed": "_seeds", "Seeds": "_seeds", "read_seeds": "_seeds",
    "SeededIterativeClustering": "_sic",
    "SyntheticSlide": "_synthetic", "draw_seeds": "_synthetic", "make_slide": "_synthetic",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "DEFAULT_METHOD",
    "FAMILIES",
    "MissedSeed",
    "NearestPrototype",
    "SeedLabelSpreading",
    "SeedLogisticRegression",
    "SeededIterativeClustering",
    "SeededKMeans",
    "Seeds",
    "SicResult",
    "SlideFile",
    "SyntheticSlide",
    "create_method",
    "draw_seeds",
    "list_methods",
    "load_slide",
    "locate_slide",
    "make_family_slide",
    "make_slide",
    "map_seeds",
    "method_info",
    "read_seeds",
    "run_sic",
]
