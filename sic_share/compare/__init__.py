"""Comparing models' embeddings: the paper's SIC benchmark, and representation similarity.

- :func:`run_benchmark`: the Figure 2 protocol of Chelebian et al. — random seed
  patches per class, SIC, every labelled patch scored; best fold and mean over
  folds per model x clicks; text, CSV, JSON and a box plot;
- :func:`similarity`: two datasets on one grid, joined on (slide_id, x, y) with
  DuckDB — linear CKA, mutual k-nearest-neighbour overlap, SIC agreement;
- :func:`linear_cka`, :func:`mutual_knn`: the measures on plain arrays;
- :func:`open_dataset`: a dataset folder (verified) or hub reference as local slide files.
"""

from __future__ import annotations

from sic_share.compare._benchmark import BenchmarkResult, FoldRow, Skipped, SlideScore, SummaryRow, run_benchmark
from sic_share.compare._data import Dataset, open_dataset
from sic_share.compare._similarity import SimilarityResult, SlideSimilarity, linear_cka, mutual_knn, similarity

__all__ = [
    "BenchmarkResult",
    "Dataset",
    "FoldRow",
    "SimilarityResult",
    "Skipped",
    "SlideScore",
    "SlideSimilarity",
    "SummaryRow",
    "linear_cka",
    "mutual_knn",
    "open_dataset",
    "run_benchmark",
    "similarity",
]
