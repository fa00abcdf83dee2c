"""Build a format-v1 dataset from embeddings made elsewhere: .npy pairs, CLAM and TRIDENT .h5.

Coordinates: CLAM and TRIDENT store level-0 *top-left corners*; format v1 stores
level-0 *centres*, so their coords are shifted by half the level-0 patch size.
The ``.npy`` input is taken to hold centres already. Slide names become keyed
pseudonyms; nothing else from the source files (their attributes may carry slide
names and absolute paths) is copied.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sic_share._jsonstore import staged_folder
from sic_share.dataset import SLIDES_DIR, ModelInfo, Patching, SlideMetadata, SlideWriter
from sic_share.errors import DatasetError, ImportDataError
from sic_share.privacy import SlideMap, holder_secret, pseudonym, source_stem

__all__ = ["FORMATS", "ImportReport", "import_embeddings"]

FORMATS = ("npy", "clam", "trident")
_NPY_PARTS = ("coords", "features", "labels")
# The only .h5 attributes read; the others (slide names, paths) are never touched.
_H5_ATTRS = ("patch_size", "patch_size_level0", "patch_level", "downsample", "level0_magnification",
             "target_magnification", "overlap")


@dataclass
class ImportReport:
    """What an import wrote and what it had to assume."""

    out_dir: Path
    slides: int = 0
    patches: int = 0
    assumptions: list[str] = field(default_factory=list)


@dataclass
class _Source:
    stem: str
    coords: np.ndarray  # level-0 centres
    features: np.ndarray
    labels: np.ndarray | None
    patching: Patching


def _numeric(array: Any, what: str, where: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise ImportDataError(f"{where}: {what} has dtype {array.dtype}, it should be numeric")
    return array


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ImportDataError(f"{path.name} is not a plain numeric .npy array ({exc}): save it with numpy.save") from None
    except OSError as exc:
        raise ImportDataError(f"{path.name} cannot be read as .npy ({exc})") from None


def _check_pair(stem: str, coords: np.ndarray, features: np.ndarray, labels: np.ndarray | None) -> None:
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ImportDataError(f"{stem}: coords have shape {coords.shape}, expected (n_patches, 2)")
    if features.ndim != 2:
        raise ImportDataError(f"{stem}: features have shape {features.shape}, expected (n_patches, dim)")
    if coords.shape[0] != features.shape[0]:
        raise ImportDataError(
            f"{stem}: {coords.shape[0]} coords but {features.shape[0]} feature rows: they must describe the same patches"
        )
    if labels is not None and labels.shape != (coords.shape[0],):
        raise ImportDataError(f"{stem}: labels have shape {labels.shape}, expected ({coords.shape[0]},)")


def _npy_sources(files: list[Path], patching: Patching | None, report: ImportReport) -> list[_Source]:
    groups: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in files:
        parts = path.name.split(".")
        if len(parts) < 3 or parts[-1] != "npy" or parts[-2] not in _NPY_PARTS:
            raise ImportDataError(
                f"{path.name} is not named <slide>.coords.npy, <slide>.features.npy or <slide>.labels.npy"
            )
        groups[".".join(parts[:-2])][parts[-2]] = path
    if patching is None:
        raise ImportDataError("npy import needs the level-0 patch size: pass --patch-size N (and --mpp X if known)")
    report.assumptions.append(".npy coords are taken as level-0 patch centres, as sic-share stores them")
    sources = []
    for stem, parts in sorted(groups.items()):
        missing = [p for p in ("coords", "features") if p not in parts]
        if missing:
            raise ImportDataError(f"{stem}: {stem}.{missing[0]}.npy is missing: give coords and features together")
        coords = _numeric(_load_npy(parts["coords"]), "coords", parts["coords"].name)
        features = _numeric(_load_npy(parts["features"]), "features", parts["features"].name)
        labels = _numeric(_load_npy(parts["labels"]), "labels", parts["labels"].name) if "labels" in parts else None
        _check_pair(stem, coords, features, labels)
        if coords.dtype.kind == "f":
            if not np.allclose(coords, np.round(coords)):
                raise ImportDataError(f"{stem}: coords are not whole pixels: give level-0 pixel centres")
            coords = np.round(coords).astype(np.int64)
        sources.append(_Source(stem, coords, features, labels, patching))
    return sources


def _h5_attr(attrs: Any, key: str) -> float | None:
    if key not in attrs:
        return None
    value = np.asarray(attrs[key]).ravel()
    return float(value[0]) if value.size and value.dtype.kind in "iuf" else None


def _h5_sources(
    files: list[Path], fmt: str, patch_size: int | None, mpp: float | None, report: ImportReport
) -> list[_Source]:
    try:
        import h5py
    except ImportError:
        raise ImportDataError("reading .h5 files needs h5py: pip install 'sic-share[interop]'") from None
    sources = []
    for path in files:
        try:
            handle = h5py.File(path, "r")
        except OSError as exc:
            raise ImportDataError(f"{path.name} is not a readable HDF5 file ({exc})") from None
        with handle:
            for key in ("coords", "features"):
                if key not in handle:
                    raise ImportDataError(f"{path.name} has no '{key}' dataset: is it a {fmt.upper()} features file?")
            attrs = {key: handle["coords"].attrs[key] for key in _H5_ATTRS if key in handle["coords"].attrs}
            coords = _numeric(handle["coords"][()], "coords", path.name)
            features = _numeric(handle["features"][()], "features", path.name)
        if features.ndim == 3 and features.shape[0] == 1:
            features = features[0]
        if coords.ndim == 3 and coords.shape[0] == 1:
            coords = coords[0]
        _check_pair(path.name, coords, features, None)
        size = _h5_attr(attrs, "patch_size")
        level0 = _h5_attr(attrs, "patch_size_level0")
        level = _h5_attr(attrs, "patch_level")
        downsample = _h5_attr(attrs, "downsample")
        if patch_size is not None:
            level0 = float(patch_size)
        elif level0 is None and size is not None and (level or 0) == 0:
            level0 = size
        elif level0 is None and size is not None and downsample is not None:
            level0 = size * downsample
        if level0 is None or level0 <= 0:
            raise ImportDataError(
                f"{path.name} does not say its level-0 patch size (patch_size_level0, or patch_size at "
                "patch_level 0): pass --patch-size N in level-0 pixels"
            )
        level0_px = int(round(level0))
        size_px = int(round(size)) if size and size > 0 else level0_px
        level0_mpp, target_mpp = mpp, None
        mag0 = _h5_attr(attrs, "level0_magnification")
        target_mag = _h5_attr(attrs, "target_magnification")
        if level0_mpp is None and mag0 and mag0 > 0:
            level0_mpp = 10.0 / mag0
            report.assumptions.append(
                f"level-0 µm/px taken as 10 / level0_magnification = {level0_mpp:g} (pass --mpp to set it)"
            )
        if target_mag and target_mag > 0:
            target_mpp = 10.0 / target_mag
        overlap = _h5_attr(attrs, "overlap")
        stride = size_px - int(overlap) if overlap is not None and 0 <= overlap < size_px else None
        half = level0_px // 2
        centres = np.round(coords).astype(np.int64) + half
        sources.append(
            _Source(
                source_stem(path.name),
                centres,
                features,
                None,
                _patching(size_px, level0_px, level0_mpp, target_mpp, stride),
            )
        )
    report.assumptions.append(
        f"{fmt.upper()} coords are level-0 top-left corners; stored as centres = corner + level-0 patch size / 2"
    )
    return sources


def _patching(size_px: int, level0_px: int, level0_mpp: float | None, target_mpp: float | None, stride: int | None) -> Patching:
    try:
        return Patching(size_px, level0_px, level0_mpp, target_mpp, stride)
    except DatasetError as exc:
        raise ImportDataError(str(exc)) from None


def _detect_format(files: list[Path]) -> str:
    kinds = {"npy" if p.suffix == ".npy" else "h5" if p.suffix in (".h5", ".hdf5") else p.suffix for p in files}
    if kinds == {"npy"}:
        return "npy"
    if kinds == {"h5"}:
        return "trident"
    raise ImportDataError(f"cannot tell the input format from suffixes {sorted(kinds)}: pass --format npy|clam|trident")


def import_embeddings(
    files: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    mpp: float | None = None,
    patch_size: int | None = None,
    model_id: str | None = None,
    classes: tuple[str, ...] = (),
    dtype: str = "float16",
    secret_path: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ImportReport:
    """Convert embeddings made by another tool into an (unsigned) format-v1 dataset.

    Parameters
    ----------
    files : list of path-like
        ``.npy`` files (``<slide>.coords.npy``, ``<slide>.features.npy``, optional
        ``<slide>.labels.npy``) or CLAM / TRIDENT ``.h5`` files, one per slide.
        A folder stands for every such file inside it.
    out_dir : path-like
        New dataset folder; it must not exist yet (nothing half-made is left
        there on failure).
    fmt : {"npy", "clam", "trident"}, optional
        Guessed from suffixes when not given (``.h5`` reads as TRIDENT, which
        also reads CLAM files).
    mpp : float, optional
        Level-0 µm/px of the source slides.
    patch_size : int, optional
        Level-0 patch side in pixels; required for ``.npy``, read from the
        attributes of ``.h5`` files when they carry it.
    model_id : str, optional
        Name of the model that made the features (default ``"unknown"``).
    classes : tuple of str
        Names of label indices 0..k-1 in ``.labels.npy``.
    dtype : {"float16", "float32"}
        Embedding storage dtype.
    secret_path : path-like, optional
        Holder secret for pseudonyms; defaults to the one beside the keys.
    """
    paths: list[Path] = []
    for item in files:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix in (".npy", ".h5", ".hdf5")))
        elif path.exists():
            paths.append(path)
        else:
            raise ImportDataError(f"{path} does not exist")
    if not paths:
        raise ImportDataError("no .npy or .h5 files to import were given")
    fmt = fmt or _detect_format(paths)
    if fmt not in FORMATS:
        raise ImportDataError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    if out.exists():
        raise ImportDataError(f"{out} already exists: import into a new folder")
    report = ImportReport(out)
    if model_id is None:
        model_id = "unknown"
        report.assumptions.append("model id 'unknown': pass --model-id so consumers know what made the features")
    if fmt == "npy":
        patching = _patching(patch_size, patch_size, mpp, None, None) if patch_size else None
        sources = _npy_sources(paths, patching, report)
    else:
        sources = _h5_sources(paths, fmt, patch_size, mpp, report)
    dims = {s.features.shape[1] for s in sources}
    if len(dims) != 1:
        raise ImportDataError(f"slides have different feature dims {sorted(dims)}: one dataset is one model")
    grids = {(s.patching.size_px, s.patching.stride_px, s.patching.target_mpp) for s in sources}
    if len(grids) != 1:
        raise ImportDataError("slides were patched differently (patch size or magnification): import them as separate datasets")
    if any(s.labels is not None for s in sources) and not classes:
        raise ImportDataError("labels were given without class names: pass --classes NAME,NAME,...")
    secret = holder_secret(secret_path)
    model = ModelInfo(id=model_id, dim=dims.pop(), source=f"import:{fmt}")
    ids = [pseudonym(s.stem, secret) for s in sources]
    if len(set(ids)) != len(ids):
        raise ImportDataError("two inputs name the same slide: import each slide once")
    with staged_folder(out) as tmp:
        for i, (source, slide_id) in enumerate(zip(sources, ids)):
            try:
                # level-0 µm/px and patch size may differ per slide (scanners); the target grid may not
                metadata = SlideMetadata(model, source.patching, tuple(classes), dtype)
                with SlideWriter(tmp / SLIDES_DIR / f"{slide_id}.parquet", slide_id=slide_id, metadata=metadata) as writer:
                    writer.write(source.coords, source.features, labels=source.labels)
            except DatasetError as exc:
                raise ImportDataError(f"{source.stem}: {exc}") from None
            report.slides += 1
            report.patches += len(source.coords)
            if progress:
                progress(slide_id, i + 1, len(sources))
    # the holder's private map (never in the dataset): pseudonym -> the name it was made from
    SlideMap.beside(secret_path).record([(slide_id, source.stem, source.stem) for source, slide_id in zip(sources, ids)])
    return report
