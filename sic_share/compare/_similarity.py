"""How alike two models' representations are, on the patches they share: CKA, mutual kNN, SIC agreement."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

from sic_share.compare._data import (
    RULES,
    Dataset,
    check_choice,
    draw_seed_rows,
    fit_sic,
    open_dataset,
    read_embeddings,
    same_grid_fix,
    seed_rng,
    sic_random_state,
)
from sic_share.dataset import read_slide_metadata
from sic_share.errors import DatasetError, SicShareError
from sic_share.viz._common import atomic_write, check_target

__all__ = ["SimilarityResult", "SlideSimilarity", "linear_cka", "mutual_knn", "similarity"]

#: Rows cast to float64 at a time when accumulating Gram matrices.
CHUNK_ROWS = 4096
#: Patches per slide on which nearest neighbours are compared.
KNN_SAMPLE = 5000


# ---------------------------------------------------------------- CKA
@dataclass
class _Grams:
    """Centred feature Gram matrices of paired rows, and what pooling them needs."""

    n: int
    mean_x: np.ndarray  # (dx,)
    mean_y: np.ndarray  # (dy,)
    xx: np.ndarray  # (dx, dx)  sum of centred x x^T
    yy: np.ndarray  # (dy, dy)
    yx: np.ndarray  # (dy, dx)

    @property
    def cka(self) -> float:
        den = np.linalg.norm(self.xx) * np.linalg.norm(self.yy)
        return float(np.sum(self.yx * self.yx) / den) if den > 0 else float("nan")


def _chunks(n: int, size: int = CHUNK_ROWS) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _grams(X: np.ndarray, Y: np.ndarray, rows_x: np.ndarray | None = None, rows_y: np.ndarray | None = None) -> _Grams:
    """Two passes over paired rows ``X[rows_x]``, ``Y[rows_y]``: means, then centred Grams, chunk by chunk."""
    rows_x = np.arange(X.shape[0]) if rows_x is None else rows_x
    rows_y = np.arange(Y.shape[0]) if rows_y is None else rows_y
    n = rows_x.size
    sx = np.zeros(X.shape[1])
    sy = np.zeros(Y.shape[1])
    for s in _chunks(n):
        sx += X[rows_x[s]].sum(axis=0, dtype=np.float64)
        sy += Y[rows_y[s]].sum(axis=0, dtype=np.float64)
    mx, my = sx / max(n, 1), sy / max(n, 1)
    xx = np.zeros((X.shape[1], X.shape[1]))
    yy = np.zeros((Y.shape[1], Y.shape[1]))
    yx = np.zeros((Y.shape[1], X.shape[1]))
    for s in _chunks(n):
        xc = X[rows_x[s]].astype(np.float64) - mx
        yc = Y[rows_y[s]].astype(np.float64) - my
        xx += xc.T @ xc
        yy += yc.T @ yc
        yx += yc.T @ xc
    return _Grams(n, mx, my, xx, yy, yx)


def _pool(parts: list[_Grams]) -> _Grams:
    """Centred Grams of the union of several row sets (Chan et al.'s pairwise update, exact)."""
    n = sum(p.n for p in parts)
    mx = sum(p.n * p.mean_x for p in parts) / n
    my = sum(p.n * p.mean_y for p in parts) / n
    xx, yy, yx = (sum(getattr(p, name) for p in parts) for name in ("xx", "yy", "yx"))
    for p in parts:
        dx, dy = p.mean_x - mx, p.mean_y - my
        xx = xx + p.n * np.outer(dx, dx)
        yy = yy + p.n * np.outer(dy, dy)
        yx = yx + p.n * np.outer(dy, dx)
    return _Grams(n, mx, my, xx, yy, yx)


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear centred kernel alignment of two representations of the same samples.

    Parameters
    ----------
    X : ndarray of shape (n_samples, dx)
    Y : ndarray of shape (n_samples, dy)

    Returns
    -------
    float
        ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc, Yc;
        1 for representations equal up to an orthogonal transform and isotropic
        scaling, near 0 for independent ones. NaN when one is constant.

    Notes
    -----
    Kornblith et al. (2019), in the feature-space form: only dx x dx, dy x dy and
    dy x dx matrices are built (never the n x n kernels), accumulated in float64 from
    chunks of 4096 rows, after a first pass for the means. Memory is O(d²) beyond
    the inputs (24 MiB for d = 1024), so a million patches fit; the cost is
    O(n d²). float16 input is cast chunk by chunk.
    """
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise SicShareError(f"CKA needs two matrices with the same rows, got shapes {X.shape} and {Y.shape}")
    return _grams(X, Y).cka


def mutual_knn(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each sample's k nearest neighbours that both representations share.

    Parameters
    ----------
    X : ndarray of shape (n_samples, dx)
    Y : ndarray of shape (n_samples, dy)
    k : int, default=10
        Neighbours per sample (at most ``n_samples - 1``), the sample itself excluded.

    Returns
    -------
    float
        1 when the neighbourhoods agree everywhere; about ``k / n_samples`` by chance.

    Notes
    -----
    Euclidean distances, exact (brute force) search with scikit-learn; the cost is
    O(n² d), so callers subsample (:func:`similarity` uses at most 5000 patches per slide).
    """
    n = X.shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        return float("nan")
    na = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(np.asarray(X, np.float32))
    nb = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(np.asarray(Y, np.float32))
    ia = na.kneighbors(return_distance=False)
    ib = nb.kneighbors(return_distance=False)
    shared = (ia[:, :, None] == ib[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / k)


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class SlideSimilarity:
    """Similarity of two datasets on one slide.

    Attributes
    ----------
    slide_id : str
    n_patches : int
        Patches both datasets hold on this slide.
    cka : float
        Linear CKA over those patches.
    mutual_knn : float
        Mean shared fraction of k nearest neighbours, on ``n_knn`` patches.
    n_knn : int
        Patches the neighbour comparison ran on (a random subsample).
    agreement : float or None
        Fraction of patches SIC gives the same class in both, under the same seeds;
        None when SIC was not run (see ``note``).
    ari : float or None
        Adjusted Rand index of the two SIC labellings.
    note : str
        Why SIC agreement is missing, or "".
    """

    slide_id: str
    n_patches: int
    cka: float
    mutual_knn: float
    n_knn: int
    agreement: float | None = None
    ari: float | None = None
    note: str = ""


@dataclass(frozen=True)
class SimilarityResult:
    """What :func:`similarity` found.

    Attributes
    ----------
    dataset_a, dataset_b : str
        Dataset names (folder or hub reference with version).
    model_a, model_b : str
    n_a, n_b : int
        Patches of each dataset.
    n_matched : int
        Patches joined on (slide_id, x, y).
    cka : float
        Pooled linear CKA over every matched patch (centred on the pooled mean).
    mutual_knn : float
        Mean over every sampled patch of every slide.
    agreement, ari : float or None
        Pooled SIC agreement and adjusted Rand index over the slides where SIC ran.
    k, clicks, seed : int
        Settings.
    slides : tuple of SlideSimilarity
    notes : tuple of str
        Anything left out, in one line each.
    """

    dataset_a: str
    dataset_b: str
    model_a: str
    model_b: str
    n_a: int
    n_b: int
    n_matched: int
    cka: float
    mutual_knn: float
    agreement: float | None
    ari: float | None
    k: int
    clicks: int
    seed: int
    slides: tuple[SlideSimilarity, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready values; NaN (a constant representation, a one-patch slide) becomes null."""
        body = asdict(self)
        body["slides"] = [{k: _finite(v) for k, v in asdict(s).items()} for s in self.slides]
        body["notes"] = list(self.notes)
        return {k: _finite(v) for k, v in body.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically."""
        return atomic_write(path, self.to_json().encode())

    def to_text(self) -> str:
        """A summary, then one row per slide."""
        def fmt(v: float | None) -> str:
            return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"

        lines = [
            f"{self.dataset_a} ({self.model_a}) vs {self.dataset_b} ({self.model_b}): {self.n_matched} patches "
            f"matched on (slide_id, x, y) of {self.n_a} and {self.n_b}",
            f"linear CKA (pooled)        {fmt(self.cka)}",
            f"mutual {self.k}-NN overlap       {fmt(self.mutual_knn)}",
            f"SIC agreement ({self.clicks} clicks)   {fmt(self.agreement)}  (adjusted Rand {fmt(self.ari)})",
        ]
        table = [("slide", "patches", "CKA", f"mutual {self.k}-NN", "SIC agreement", "ARI")]
        for s in self.slides:
            table.append((s.slide_id, str(s.n_patches), fmt(s.cka), fmt(s.mutual_knn), fmt(s.agreement), fmt(s.ari)))
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _finite(value):
    return None if isinstance(value, float) and not np.isfinite(value) else value


# ---------------------------------------------------------------- the join
def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _join(a: Dataset, b: Dataset) -> tuple[dict[str, np.ndarray], int, int]:
    """Join two datasets on (slide_id, x, y) in DuckDB, reading only key and label columns.

    Returns the matched rows ordered by (slide_id, x, y) as numpy columns ``slide_id``,
    ``row_a``, ``row_b`` (row numbers in each slide file), ``label_a``, ``label_b``,
    and the patch counts of both datasets.
    """
    con = duckdb.connect()
    try:
        src = "read_parquet({files}, file_row_number = true)"
        con.execute(f"CREATE TEMP VIEW a AS SELECT slide_id, x, y, label, file_row_number AS r "
                    f"FROM {src.format(files=_sql_list(list(a.files.values())))}")
        con.execute(f"CREATE TEMP VIEW b AS SELECT slide_id, x, y, label, file_row_number AS r "
                    f"FROM {src.format(files=_sql_list(list(b.files.values())))}")
        (n_a,) = con.execute("SELECT count(*) FROM a").fetchone()
        (n_b,) = con.execute("SELECT count(*) FROM b").fetchone()
        cols = con.execute(
            "SELECT a.slide_id, a.r AS row_a, b.r AS row_b, coalesce(a.label, -1) AS label_a, "
            "coalesce(b.label, -1) AS label_b FROM a JOIN b USING (slide_id, x, y) ORDER BY a.slide_id, a.x, a.y"
        ).fetchnumpy()
    finally:
        con.close()
    out = {name: np.asarray(col) for name, col in cols.items()}
    return out, int(n_a), int(n_b)


def _grid(metadata) -> tuple[int, int | None, float | None]:
    """(patch side, stride, µm/px) at the resolution the network saw; None where the dataset does not say.

    Imports leave the stride and the target µm/px empty when their source does not
    record them (``.npy`` pairs, CLAM files); their patch side is then in level-0 pixels.
    """
    p = metadata.patching
    return p.size_px, p.stride_px, None if p.target_mpp is None else round(float(p.target_mpp), 6)


def _grid_text(grid: tuple[int, int | None, float | None]) -> str:
    stride = "unknown" if grid[1] is None else grid[1]
    mpp = "an unrecorded" if grid[2] is None else grid[2]
    return f"{grid[0]} px patches, stride {stride} at {mpp} µm/px"


def _grids_differ(grid_a: tuple, grid_b: tuple) -> bool:
    """Whether two known target grids differ; every field compared only where both datasets record it."""
    if grid_a[2] is None or grid_b[2] is None:  # a patch side without its µm/px is not comparable
        return False
    return any(x is not None and y is not None and x != y for x, y in zip(grid_a, grid_b, strict=True))


def _check_level0_sizes(a: Dataset, b: Dataset, slide_ids: list[str]) -> None:
    """Refuse slides that the two datasets cut into patches of different level-0 sizes (footers only)."""
    for sid in slide_ids:
        size_a = read_slide_metadata(a.files[sid])[0].patching.level0_size_px
        size_b = read_slide_metadata(b.files[sid])[0].patching.level0_size_px
        if size_a != size_b:
            raise DatasetError(
                f"{a.name} and {b.name} were cut on different grids (slide {sid}: {size_a} vs {size_b} level-0 px "
                f"patches): patches at the same (x, y) are not the same tissue; {same_grid_fix(a, b)}"
            )


def similarity(
    dataset_a: str | os.PathLike[str],
    dataset_b: str | os.PathLike[str],
    *,
    hub: str | None = None,
    k: int = 10,
    seed: int = 0,
    clicks: int = 3,
    sample: int = KNN_SAMPLE,
    rule: str = "structure",
    min_overlap: float = 0.5,
    json_path: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> SimilarityResult:
    """Compare two models' embeddings of the same patches.

    Parameters
    ----------
    dataset_a, dataset_b : path-like or str
        Dataset folders or hub references, on the same patch grid.
    hub : str, optional
        Hub for dataset references.
    k : int, default=10
        Neighbours compared per patch.
    seed : int, default=0
        Seeds the neighbour subsample and the SIC seed draw.
    clicks : int, default=3
        Seed patches per class for the SIC agreement.
    sample : int, default=5000
        Most patches per slide for the neighbour comparison.
    rule : {"structure", "paper"}, default="structure"
        SIC's acceptance rule.
    min_overlap : float, default=0.5
        Least fraction of the smaller dataset's patches that must match; below it the
        grids are taken to differ.
    json_path : path-like, optional
        Write the result as JSON there (its folder is checked first).
    progress : callable, optional
        Called as ``progress(slide_id, done, total)`` after each slide.

    Returns
    -------
    SimilarityResult

    Raises
    ------
    DatasetError
        When the datasets were cut on different grids, or share fewer than
        ``min_overlap`` of their patches (the line says how many of how many matched).

    Notes
    -----
    **Grid.** Patch side, stride and µm/px at the network's resolution must agree
    where both datasets record them. Imports may record neither the stride nor the
    µm/px (``.npy`` pairs, CLAM files): then every shared slide's level-0 patch side
    must agree instead, and the overlap on (slide_id, x, y) decides the rest (a note
    says so).

    **Join.** DuckDB joins the two datasets' slide files on (slide_id, x, y),
    reading only those columns plus the label and each file's row number; the
    embeddings are then read slide by slide with pyarrow and gathered by row number
    chunk by chunk, so no joined copy of both embedding matrices is ever made.

    **CKA** per slide and pooled (see :func:`linear_cka`): per-slide centred Grams are
    pooled exactly with their means, so the pooled figure is the CKA of all matched
    patches centred on the global mean, and memory stays O(d²) however many
    patches there are.

    **Mutual kNN** per slide, within the slide, on a random subsample of at most
    ``sample`` patches (the same patches in both spaces); exact search costs O(n² d),
    and 5000 patches keep it under a second per slide. The pooled value is the
    mean over every sampled patch.

    **SIC agreement.** On slides with ground-truth labels (the first dataset's, else
    the second's), ``clicks`` seed patches per class are drawn as the benchmark
    draws them (same stream for the same seed, slide and clicks, fold 0) and SIC
    runs on both datasets with those seeds. Agreement is the fraction of patches
    with the same class; the adjusted Rand index is also given (chance-corrected).
    Without labels, or where a class has no or too few patches, there is nothing
    to draw seeds from and the slide's agreement is left out with a note (SIC
    without seeds would be plain k-means, another question).
    """
    check_choice(rule, RULES, "rule")
    if not isinstance(k, int) or k < 1:
        raise SicShareError(f"k={k!r} should be a positive number of neighbours")
    if not isinstance(clicks, int) or clicks < 1:
        raise SicShareError(f"clicks={clicks!r} should be a positive number of seed patches per class")
    if json_path is not None:
        check_target(json_path)
    a, b = open_dataset(dataset_a, hub), open_dataset(dataset_b, hub)
    grid_a, grid_b = (_grid(d.metadata) for d in (a, b))
    if _grids_differ(grid_a, grid_b):
        raise DatasetError(
            f"{a.name} and {b.name} were cut on different grids ({_grid_text(grid_a)} vs {_grid_text(grid_b)}): "
            f"patches at the same (x, y) are not the same tissue; {same_grid_fix(a, b)}"
        )
    unrecorded = [d.name for d in (a, b) if d.metadata.patching.target_mpp is None]
    if unrecorded:
        # imports may not know the µm/px their patches were cut at: compare what every slide does record
        _check_level0_sizes(a, b, sorted(set(a.files) & set(b.files)))
    joined, n_a, n_b = _join(a, b)
    n_matched = int(joined["slide_id"].size)
    if n_matched == 0 or n_matched < min_overlap * min(n_a, n_b):
        raise DatasetError(
            f"{a.name} and {b.name} share {n_matched} of {min(n_a, n_b)} patches on (slide_id, x, y): they were not "
            f"cut on the same grid (or their slide pseudonyms differ) — {same_grid_fix(a, b)}"
        )
    classes = a.metadata.classes or b.metadata.classes
    same_classes = not (a.metadata.classes and b.metadata.classes) or (
        [c.casefold() for c in a.metadata.classes] == [c.casefold() for c in b.metadata.classes])
    notes: list[str] = []
    if unrecorded:
        notes.append(f"{' and '.join(unrecorded)} record no µm/px for their patches (imported): the grids were "
                     "compared by level-0 patch size and shared (x, y) only")
    if n_matched < max(n_a, n_b):
        notes.append(f"{max(n_a, n_b) - n_matched} patches are in only one dataset and left out")
    if not classes:
        notes.append("no ground-truth labels in either dataset: SIC agreement needs labels to draw seeds from")
    elif not same_classes:
        notes.append(f"class names differ ({list(a.metadata.classes)} vs {list(b.metadata.classes)}): "
                     "SIC agreement left out")
    n_classes = len(classes)

    slide_ids = joined["slide_id"]
    bounds = np.flatnonzero(np.r_[True, slide_ids[1:] != slide_ids[:-1], True])
    slides, grams = [], []
    pooled_knn, knn_weight = 0.0, 0
    sic_a, sic_b = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        sid = str(slide_ids[lo])
        ra, rb = joined["row_a"][lo:hi].astype(np.int64), joined["row_b"][lo:hi].astype(np.int64)
        Xa, Xb = read_embeddings(a, sid), read_embeddings(b, sid)
        g = _grams(Xa, Xb, ra, rb)
        grams.append(g)
        rng = seed_rng(seed, sid, 0, 0)  # clicks=0: a stream no seed draw uses
        pick = np.sort(rng.choice(ra.size, size=min(sample, ra.size), replace=False))
        knn = mutual_knn(Xa[ra[pick]], Xb[rb[pick]], k) if pick.size > 1 else float("nan")
        if np.isfinite(knn):
            pooled_knn += knn * pick.size
            knn_weight += pick.size
        agreement = ari = None
        note = ""
        if classes and same_classes:
            truth = joined["label_a"][lo:hi].astype(np.int64)
            truth = np.where(truth >= 0, truth, joined["label_b"][lo:hi])
            found = np.bincount(truth[truth >= 0], minlength=n_classes)
            if not found.sum():
                note = "no ground-truth labels on this slide"
            elif (found < clicks).any():
                c = int(found.argmin())
                note = f"{int(found[c])} {classes[c]!r} patches, fewer than {clicks} clicks"
            else:
                seed_rows, seed_classes = draw_seed_rows(truth, n_classes, clicks, seed_rng(seed, sid, clicks, 0))
                state = sic_random_state(seed, sid, clicks, 0)
                la, _, _ = fit_sic(Xa, ra, seed_rows, seed_classes, n_classes, score="f1", rule=rule, random_state=state)
                lb, _, _ = fit_sic(Xb, rb, seed_rows, seed_classes, n_classes, score="f1", rule=rule, random_state=state)
                agreement, ari = float(np.mean(la == lb)), float(adjusted_rand_score(la, lb))
                sic_a.append(la)
                sic_b.append(lb)
            if note:
                notes.append(f"slide {sid}: SIC agreement left out ({note})")
        slides.append(SlideSimilarity(sid, int(ra.size), g.cka, knn, int(pick.size), agreement, ari, note))
        del Xa, Xb
        if progress:
            progress(sid, len(slides), len(bounds) - 1)
    pooled = _pool(grams)
    agreement = ari = None
    if sic_a:
        la, lb = np.concatenate(sic_a), np.concatenate(sic_b)
        agreement, ari = float(np.mean(la == lb)), float(adjusted_rand_score(la, lb))
    result = SimilarityResult(
        a.name, b.name, a.model, b.model, n_a, n_b, n_matched, pooled.cka,
        pooled_knn / knn_weight if knn_weight else float("nan"), agreement, ari, k, clicks, seed, tuple(slides),
        tuple(notes),
    )
    if json_path is not None:
        result.write_json(json_path)
    return result
