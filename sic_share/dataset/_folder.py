"""A dataset folder: ``slides/<slide_id>.parquet`` plus, once signed, the manifest."""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sic_share.dataset._io import check_rows, read_slide, read_slide_metadata
from sic_share.dataset._schema import SlideMetadata, check_name
from sic_share.errors import DatasetError

__all__ = ["SLIDES_DIR", "DatasetSummary", "near_slides", "slide_files", "summarize"]

SLIDES_DIR = "slides"


@dataclass(frozen=True)
class DatasetSummary:
    """What every slide file of a dataset agrees on, and how much there is.

    ``metadata`` is the first slide's; ``patching`` is the dataset-level view of
    the grid, where level-0 fields that differ between slides are None.
    """

    metadata: SlideMetadata
    patching: dict[str, Any]
    n_slides: int
    n_patches: int
    files: tuple[Path, ...]
    rows: tuple[int, ...] = ()  # patches per file, in the order of ``files``


def near_slides(slide_id: str, known: list[str] | dict[str, Any]) -> str | None:
    """``"did you mean a, b?"`` for an unknown slide id, naming up to 3 close ids; None when none is close."""
    near = difflib.get_close_matches(slide_id, list(known), n=3, cutoff=0.5)
    return f"did you mean {', '.join(near)}?" if near else None


def slide_files(dataset_dir: str | os.PathLike[str]) -> list[Path]:
    """Sorted slide files of a local dataset folder."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: give the dataset folder that holds slides/")
    files = sorted((root / SLIDES_DIR).glob("*.parquet"))
    if not files:
        raise DatasetError(f"{root} has no slides/*.parquet files: export or import a dataset into it first")
    return files


def summarize(dataset_dir: str | os.PathLike[str], *, full: bool = False) -> DatasetSummary:
    """Check that a dataset's slide files agree and count them.

    Parameters
    ----------
    dataset_dir : path-like
        Local dataset folder.
    full : bool, default=False
        Also read every row (catches truncation inside a row group, NaN
        embeddings and mixed slide ids) and check what later commands rely on
        (:func:`check_rows`: no negative coordinates, no position twice, labels
        that index the class list). ``sign`` uses it; it costs one full read of
        the dataset.
    """
    files = slide_files(dataset_dir)
    first: SlideMetadata | None = None
    patching: dict[str, Any] = {}
    total = 0
    counts: list[int] = []
    for path in files:
        check_name(path.stem, "slide file name")
        meta, rows = read_slide_metadata(path)
        if full:
            slide = read_slide(path, dtype=meta.embedding_dtype)
            if slide.slide_id != path.stem:
                raise DatasetError(f"{path.name} holds slide {slide.slide_id!r}: the file name must be its slide id")
            check_rows(slide, str(path))
            del slide  # one slide in memory at a time
        if first is None:
            first, patching = meta, asdict(meta.patching)
        elif meta.dataset_key() != first.dataset_key():
            raise DatasetError(
                f"{path.name} was made with another model, grid or class list than {files[0].name}: "
                "a dataset is one model on one grid, split it"
            )
        for key, value in asdict(meta.patching).items():
            if patching[key] != value:
                patching[key] = None
        total += rows
        counts.append(rows)
    assert first is not None  # slide_files never returns an empty list
    return DatasetSummary(first, patching, len(files), total, tuple(files), tuple(counts))
