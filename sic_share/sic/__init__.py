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
- :func:`make_slide` and :data:`FAMILIES`: synthetic and real-embedding slides with known
  truth, for tests and benchmarks.
"""

from __future__ import annotations

from sic_share.sic._families import FAMILIES, make_family_slide
from sic_share.sic._kmeans import SeededKMeans
from sic_share.sic._methods import (
    DEFAULT_METHOD,
    NearestPrototype,
    SeedLabelSpreading,
    SeedLogisticRegression,
    create_method,
    list_methods,
    method_info,
)
from sic_share.sic._run import SicResult, load_slide, map_seeds, run_sic
from sic_share.sic._seeds import MissedSeed, Seeds, read_seeds
from sic_share.sic._sic import SeededIterativeClustering
from sic_share.sic._synthetic import SyntheticSlide, draw_seeds, make_slide

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
    "SyntheticSlide",
    "create_method",
    "draw_seeds",
    "list_methods",
    "load_slide",
    "make_family_slide",
    "make_slide",
    "map_seeds",
    "method_info",
    "read_seeds",
    "run_sic",
]
