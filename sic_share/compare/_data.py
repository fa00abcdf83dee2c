"""What benchmark and similarity share: datasets as folders or hub refs, patch alignment, seeds, SIC runs."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from sic_share.dataset import SlideMetadata, read_slide, read_slide_metadata
from sic_share.errors import DatasetError, SeedError, SicShareError
from sic_share.sic import create_method

#: Below this many patches a SIC fit runs on one thread (see :func:`fit_sic`).
SINGLE_THREAD_BELOW = 100_000

__all__ = ["Dataset", "open_dataset", "read_keys", "pack", "align", "seed_rng", "draw_seed_rows", "fit_sic"]

SCORES = ("f1", "accuracy")
RULES = ("structure", "paper", "authors")


@dataclass(frozen=True)
class Dataset:
    """A dataset resolved to local slide files.

    Attributes
    ----------
    source : str
        As the user gave it (a folder path or ``publisher/name[@version]``).
    name : str
        How results name it: the folder path, or the hub reference with its version.
    files : dict of str to Path
        Slide id to a local Parquet file (the dataset folder, or the verified cache).
    metadata : SlideMetadata
        The first slide's footer metadata (model, patching, class names).
    note : str or None
        One line for the user: the folder is unsigned and was opened with ``unsigned=True``.
    """

    source: str
    name: str
    files: dict[str, Path]
    metadata: SlideMetadata
    note: str | None = None

    @property
    def model(self) -> str:
        return self.metadata.model.id

    @property
    def dtype(self) -> type:
        """The dtype embeddings are read in: float16 stays float16 (half the memory; SIC casts in chunks)."""
        return np.float16 if self.metadata.embedding_dtype == "float16" else np.float32


def open_dataset(dataset: str | os.PathLike[str] | Dataset, hub: str | None = None, *, unsigned: bool = False,
                 allow_rollback: bool = False) -> Dataset:
    """Resolve a dataset folder or hub reference to verified local slide files.

    A path that exists is a dataset folder, verified by
    :func:`~sic_share.signing.open_folder` (signature by a trusted key, expiry,
    rollback, the listing) and every slide file it holds hashed against its signed
    sha256 (a copy made by ``pull --slides`` gives the slides it holds); anything else
    is a hub reference, whose slides are fetched and verified against the signed
    manifest into the cache (:func:`sic_share.hub.fetch_slides`). A :class:`Dataset`
    is returned as it is, so ``run_benchmark`` and ``similarity`` also take datasets
    opened before (how an unsigned folder is read: ``open_dataset(folder, unsigned=True)``).

    Parameters
    ----------
    unsigned : bool, default=False
        Accept a local folder that is not signed (``export --no-sign``); the result's
        ``note`` then says that its bytes are checked by nobody.
    allow_rollback : bool, default=False
        Accept a version older than one verified before.
    """
    if isinstance(dataset, Dataset):
        return dataset
    local = Path(dataset)
    note = None
    if local.exists():
        from sic_share.signing import open_folder

        folder = open_folder(local, unsigned=unsigned, allow_rollback=allow_rollback)
        folder.verify()
        files, name, note = folder.slides, str(dataset), folder.note
    else:
        from sic_share.hub import fetch_slides, parse_ref

        manifest, fetched = fetch_slides(parse_ref(str(dataset)), None, hub, allow_rollback=allow_rollback)
        files = dict(fetched)  # the manifest lists only slides/<slide_id>.parquet files
        name = manifest.ref
        if not files:
            raise DatasetError(f"{name} lists no slide files: it is empty, publish a dataset with slides")
    files = dict(sorted(files.items()))
    metadata, _ = read_slide_metadata(next(iter(files.values())))
    return Dataset(str(dataset), name, files, metadata, note)


def same_grid_fix(*datasets: Dataset) -> str:
    """How to put datasets on one patch grid: the options of the command that made them."""
    which = "both" if len(datasets) == 2 else "them"
    imported = [d.metadata.model.source.startswith("import:") for d in datasets]
    if all(imported):
        return f"import {which} from coordinates of one patching, with the same --patch-size"
    if any(imported):
        return ("import the features from the patches the export cut (its level-0 centres, "
                "--patch-size of its level-0 patch side)")
    return f"export {which} with the same --target-mpp/--patch-size/--stride"


def refuse_repeat(ds: Dataset, opened: Sequence[Dataset]) -> None:
    """Refuse a dataset named twice (by the same name, or another path to the same files): it compares with itself."""
    same_files = {p.resolve() for p in ds.files.values()}
    for other in opened:
        if ds.name == other.name or (same_files and same_files == {p.resolve() for p in other.files.values()}):
            raise SicShareError(f"{ds.name} is given twice: name each dataset once")


def read_keys(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Packed (x, y) keys and ground-truth labels (-1 = none) of one slide file, reading only those columns."""
    table = pq.read_table(path, columns=["x", "y", "label"])
    x = table.column("x").to_numpy().astype(np.int64)
    y = table.column("y").to_numpy().astype(np.int64)
    labels = table.column("label").fill_null(-1).to_numpy().astype(np.int8)
    return pack(x, y), labels


def pack(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One int64 per patch whose order is the (x, y) lexicographic order (both are non-negative int32)."""
    return (np.asarray(x, np.int64) << 32) | np.asarray(y, np.int64)


def align(keys: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The patches every dataset holds, in (x, y) order, and each dataset's rows of them.

    Returns
    -------
    common : ndarray of shape (n_common,), int64
        Sorted packed keys of the shared patches.
    rows : list of ndarray of shape (n_common,)
        For each dataset, the row of each shared patch in that dataset's file.
    """
    common = np.unique(keys[0])
    for k in keys[1:]:
        common = np.intersect1d(common, k, assume_unique=False)
    rows = []
    for k in keys:
        order = np.argsort(k, kind="stable")
        rows.append(order[np.searchsorted(k[order], common)])
    return common, rows


def _slide_number(slide_id: str) -> int:
    return int.from_bytes(hashlib.sha256(slide_id.encode()).digest()[:8], "little")


def seed_rng(seed: int, slide_id: str, clicks: int, fold: int) -> np.random.Generator:
    """The random stream of one (slide, clicks, fold): independent of the model, the dataset and the run order."""
    return np.random.default_rng([int(seed), _slide_number(slide_id), int(clicks), int(fold)])


def sic_random_state(seed: int, slide_id: str, clicks: int, fold: int) -> int:
    """SIC's own ``random_state`` for one (slide, clicks, fold), shared by every model."""
    return int(seed_rng(seed, slide_id, clicks, fold).integers(2**31 - 1))


def draw_seed_rows(truth: np.ndarray, n_classes: int, clicks: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``clicks`` random patches inside each class, drawn among patches in (x, y) order.

    Parameters
    ----------
    truth : ndarray of shape (n_patches,)
        Class per patch in (x, y) order, -1 for none.

    Returns
    -------
    rows : ndarray of shape (clicks * n_classes,)
        Positions in ``truth`` of the seed patches, class by class.
    classes : ndarray of shape (clicks * n_classes,)
    """
    rows, classes = [], []
    for c in range(n_classes):
        idx = np.flatnonzero(truth == c)
        rows.append(rng.choice(idx, size=clicks, replace=False))
        classes.append(np.full(clicks, c, np.int64))
    return np.concatenate(rows), np.concatenate(classes)


def fit_sic(
    X: np.ndarray, rows: np.ndarray, seed_rows: np.ndarray, seed_classes: np.ndarray, n_classes: int, *,
    score: str, rule: str | None, random_state: int, method: str = "sic", coords: np.ndarray | None = None,
) -> tuple[np.ndarray, object, float]:
    """Run ``method`` (SIC by default) on the patches ``X[rows]`` with seeds at positions ``seed_rows`` of ``rows``.

    ``score`` and ``rule`` go to SIC only; ``coords`` (level-0 centres of ``X``'s rows,
    in ``X``'s order) let methods use the patch grid.

    When ``rows`` covers every row of ``X`` (a permutation: the usual case of datasets on
    one grid), SIC runs on ``X`` itself, without a copy, and the labels are read back
    through ``rows``; otherwise it runs on the copy ``X[rows]``.

    Below ``SINGLE_THREAD_BELOW`` patches the fit runs on one OpenMP/BLAS thread:
    KMeans' thread synchronisation then costs more than it saves, badly so on a
    busy machine (measured on 2 cores under load, 5k x 384: 0.80 s with 2 threads,
    0.18 s with 1; 50k: 0.99 s vs 0.51 s). Benchmarks parallelise over slides
    instead (``jobs``).

    Returns
    -------
    labels : ndarray of shape (len(rows),)
        Class of each patch, in the order of ``rows``.
    estimator : estimator
    seconds : float
        Wall time of ``fit`` alone.
    """
    if rows.size == X.shape[0]:
        data, native, where = X, rows, coords
    else:
        data, native, where = X[rows], np.arange(rows.size), None if coords is None else coords[rows]
    seeds = np.full(data.shape[0], -1, np.int64)
    seeds[native[seed_rows]] = seed_classes
    options = {"score": score, "rule": rule} if method == "sic" else {}
    estimator = create_method(method, n_classes=n_classes, random_state=random_state, **options)
    with threadpool_limits(1 if data.shape[0] < SINGLE_THREAD_BELOW else None):
        start = time.perf_counter()
        estimator.fit(data, seeds, where)
        seconds = time.perf_counter() - start
    return np.asarray(estimator.labels_)[native], estimator, seconds


def read_embeddings(dataset: Dataset, slide_id: str) -> np.ndarray:
    """One slide's embeddings, float16 kept as float16."""
    return read_slide(dataset.files[slide_id], dtype=dataset.dtype).embeddings


def check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise SeedError(f"{what}={value!r} is not one of {', '.join(allowed)}: choose one of them")
    return value
