"""Seeded Iterative Clustering: a few seed patches grow into a dense annotation of a slide.

- :class:`SeededKMeans` and :class:`SeededIterativeClustering`: scikit-learn
  style estimators (binary SIC as in the paper, and multi-class SIC);
- :func:`read_seeds`: seeds from a CSV, QuPath GeoJSON or patch indices;
  :func:`map_seeds` picks their class names for a slide of a dataset;
- :func:`run_sic`: the ``sic-share sic`` workflow on one slide of a local or hub dataset;
- :func:`make_slide`: synthetic slides with known truth, for tests and benchmarks.
"""

from __future__ import annotations

from sic_share.sic._kmeans import SeededKMeans
from sic_share.sic._run import SicResult, load_slide, map_seeds, run_sic
from sic_share.sic._seeds import MissedSeed, Seeds, read_seeds
from sic_share.sic._sic import SeededIterativeClustering
from sic_share.sic._synthetic import SyntheticSlide, draw_seeds, make_slide

__all__ = [
    "MissedSeed",
    "SeededIterativeClustering",
    "SeededKMeans",
    "Seeds",
    "SicResult",
    "SyntheticSlide",
    "draw_seeds",
    "load_slide",
    "make_slide",
    "map_seeds",
    "read_seeds",
    "run_sic",
]
