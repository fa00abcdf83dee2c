"""The export pipeline: slides -> tissue grid -> patches -> embeddings -> one dataset per model.

Plan first (open each slide, read a thumbnail, build its tissue grid, labels),
then stream: one torch DataLoader over regions of every pending slide, whose
workers each open their own slide handles, feeds every model; rows stream into
one Parquet writer per (slide, model), renamed into place when the slide is
complete. A slide whose files all exist is skipped, so reruns and crashes are
safe, and ``shard=(i, n)`` splits the slide list for cluster array jobs.
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sic_share.dataset import SLIDES_DIR, Patching, SlideMetadata, SlideWriter, check_name
from sic_share.errors import DatasetError, EncoderError, LabelError, SicShareError, SlideError
from sic_share.privacy import SlideMap, holder_secret, pseudonym, source_stem

__all__ = [
    "SignedExport",
    "export_and_sign",
    "ExportOptions",
    "ExportProgress",
    "ExportReport",
    "SlideProblem",
    "export_slides",
    "find_slides",
    "select_shard",
    "parse_shard",
]


@dataclass
class ExportOptions:
    """Everything ``export_slides`` needs besides the slides and the output folder.

    Attributes
    ----------
    models : list of str
        Encoder names (``handcrafted``, timm names, ``hf-hub:`` names), each
        optionally ``NAME=WEIGHTS_FILE`` for local weights.
    weights, layer : optional
        Local weights file and intermediate layer; only with a single model.
    target_mpp : float, default=0.5
        µm/px of the patches the network sees (0.5 = the paper's 20x).
    size_px : int, default=256
        Patch side at the target resolution.
    stride_px : int or None
        Grid step at the target resolution; default ``size_px // 2`` (50 % overlap).
    min_tissue : float, default=0.5
        Minimum tissue fraction of a kept patch.
    mpp : float or None
        Level-0 µm/px for every slide, overriding the files.
    mpp_csv : path or None
        CSV with columns ``slide,mpp`` (slide = file name or stem) for per-slide values.
    masks, annotations : str or None
        Patterns for ground truth with ``{stem}`` for the slide's file stem, e.g.
        ``masks/{stem}.png`` or ``qupath/{stem}.geojson``.
    classes : tuple of str or None
        Class names of the ground truth.
    label_threshold : float, default=0.5
        Fraction of a patch a class must cover to label it (the paper's rule).
    dtype : {"float16", "float32"}
    batch_size : int, default=64
    workers : int or None
        DataLoader workers; default ``min(4, cpu_count - 1)``, 0 reads in the main process.
    device : str, default="auto"
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    shard : tuple of int or None
        ``(i, n)``: export only slides ``i, i+n, i+2n, ...`` of the sorted list (0-based i).
    fail_fast : bool
        Stop at the first bad slide instead of reporting it at the end.
    secret_path : path or None
        Holder secret for pseudonyms.
    force : bool
        Replace a dataset already in the output folder that was made with other
        settings (its slide files and manifest are deleted first). Without it,
        such a folder is refused.
    """

    models: list[str] = field(default_factory=lambda: ["handcrafted"])
    weights: str | None = None
    layer: str | None = None
    target_mpp: float = 0.5
    size_px: int = 256
    stride_px: int | None = None
    min_tissue: float = 0.5
    mpp: float | None = None
    mpp_csv: str | None = None
    masks: str | None = None
    annotations: str | None = None
    classes: tuple[str, ...] | None = None
    label_threshold: float = 0.5
    dtype: str = "float16"
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    shard: tuple[int, int] | None = None
    fail_fast: bool = False
    secret_path: str | None = None
    force: bool = False


@dataclass(frozen=True)
class SlideProblem:
    """A slide that was not exported (or exported with no patches), and why."""

    slide: str
    problem: str


@dataclass
class ExportProgress:
    """Passed to the progress callback after every batch and every slide."""

    slides_total: int
    slides_done: int
    patches_total: int
    patches_done: int
    seconds: float
    loader_wait: float  # seconds spent waiting for the DataLoader

    @property
    def patches_per_second(self) -> float:
        return self.patches_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def loader_wait_fraction(self) -> float:
        return self.loader_wait / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ExportReport:
    """What an export did."""

    datasets: dict[str, Path] = field(default_factory=dict)  # model name -> dataset folder
    exported: int = 0
    skipped: int = 0
    problems: list[SlideProblem] = field(default_factory=list)
    warnings: list[SlideProblem] = field(default_factory=list)
    patches: int = 0
    seconds: float = 0.0  # the whole run: models, planning (thumbnails, grids), streaming
    stream_seconds: float = 0.0  # reading, embedding and writing patches
    loader_wait_fraction: float = 0.0  # of stream_seconds
    device: str = "cpu"
    stems: list[str] = field(default_factory=list)  # source stems of this run's slides, for the audit


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (0 <= I < N), e.g. ``$SLURM_ARRAY_TASK_ID/4``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise SicShareError(f"shard {text!r} should be I/N with 0 <= I < N, e.g. 0/4 for the first of four")
    return int(match[1]), int(match[2])


def find_slides(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders into slide files, sorted by file stem (then path).

    A folder contributes its files with a suffix some registered slide reader handles.
    """
    from sic_share.slides import supported_suffixes

    suffixes = set(supported_suffixes())
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir() and path.suffix.lower() != ".dcm":
            found.extend(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        elif path.exists():
            found.append(path)
        else:
            raise SlideError(f"{path} does not exist: give slide files or folders holding them")
    if not found:
        raise SlideError("no slide files were found in what was given: supported suffixes are " + " ".join(sorted(suffixes)))
    return sorted(set(found), key=lambda p: (source_stem(p.name), str(p)))


def select_shard(slides: Sequence[Path], shard: tuple[int, int] | None) -> list[Path]:
    """Slides ``i, i+n, i+2n, ...`` of the sorted list: deterministic, balanced, disjoint."""
    if shard is None:
        return list(slides)
    i, n = shard
    return list(slides[i::n])


def _read_mpp_csv(path: str) -> dict[str, float]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise SlideError(f"--mpp-csv file {path} does not exist") from None
    if not rows or not {"slide", "mpp"} <= set(rows[0]):
        raise SlideError(f"{path} should be a CSV with columns slide,mpp")
    table: dict[str, float] = {}
    for row in rows:
        try:
            table[source_stem(row["slide"])] = float(row["mpp"])
        except (TypeError, ValueError):
            raise SlideError(f"{path}: mpp {row['mpp']!r} of slide {row['slide']!r} is not a number") from None
    return table


def default_dataset_name(folder: str | os.PathLike[str]) -> str:
    """The name a dataset is signed under when none is given: its folder's name, made a valid name."""
    return _model_slug(Path(folder).resolve().name)


def _model_slug(name: str) -> str:
    name = name.partition("=")[0]
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower().replace("hf-hub:", "")).strip("-._")
    return slug[:64] or "model"


@dataclass
class _Plan:
    """One pending slide: where to read, what to write."""

    path: Path
    stem: str
    slide_id: str
    grid: object  # sic_share.slides.PatchGrid
    labels: np.ndarray | None
    regions: list[np.ndarray]  # indices into grid.coords, one array per region
    slide_size: tuple[int, int] | None = None  # level-0 (width, height), recorded in the footer


def _regions(coords: np.ndarray, stride0: float, block: int) -> list[np.ndarray]:
    """Group patches into blocks of ``block x block`` grid cells, in row-major order."""
    cells = np.floor((coords - coords.min(axis=0)) / stride0 + 0.5).astype(np.int64) // block
    key = cells[:, 1] * (cells[:, 0].max() + 1) + cells[:, 0]
    order = np.argsort(key, kind="stable")
    _, starts = np.unique(key[order], return_index=True)
    return [np.sort(chunk) for chunk in np.split(order, starts[1:])]


class _RegionDataset:
    """Map-style dataset over (slide, region) pairs; each worker opens its own slide handles.

    Item ``k`` is ``(plan_index, patch_indices, patches)`` with ``patches`` a uint8
    tensor (n, 3, S, S), S = the grid's ``level_size``; or
    ``(plan_index, None, message)`` when the slide could not be read.
    """

    def __init__(self, plans: list[_Plan], mpp: dict[int, float | None]) -> None:
        self.plans = plans
        self.mpp = mpp
        self.items = [(p, r) for p, plan in enumerate(plans) for r in range(len(plan.regions))]
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    def reset(self) -> None:
        """Forget handles inherited from the parent process (called in each worker)."""
        self._handles = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.items)

    def _reader(self, p: int):
        from sic_share.slides import open_slide

        if self._pid != os.getpid():
            self.reset()
        if p not in self._handles:
            for old in list(self._handles):  # one open slide per worker at a time
                self._handles.pop(old).close()
            self._handles[p] = open_slide(self.plans[p].path, mpp=self.mpp[p])
        return self._handles[p]

    def __getitem__(self, k: int):
        import torch

        p, r = self.items[k]
        plan = self.plans[p]
        grid = plan.grid
        idx = plan.regions[r]
        try:
            reader = self._reader(p)
            down = reader.level_downsamples[grid.level]
            half0 = grid.level0_size / 2
            tops = np.round(plan.grid.coords[idx] - half0).astype(np.int64)  # level-0 top-left of each patch
            x0, y0 = tops.min(axis=0)
            x1, y1 = tops.max(axis=0)
            width = int(math.ceil((x1 - x0) / down)) + grid.level_size + 1
            height = int(math.ceil((y1 - y0) / down)) + grid.level_size + 1
            region = reader.read_region((int(x0), int(y0)), grid.level, (width, height))
        except SicShareError as exc:
            return p, None, str(exc)
        size = grid.level_size
        offsets = np.round((tops - (x0, y0)) / down).astype(np.int64)
        patches = np.empty((len(idx), size, size, 3), np.uint8)
        for j, (ox, oy) in enumerate(offsets):
            patches[j] = region[oy : oy + size, ox : ox + size]
        return p, idx, torch.from_numpy(patches).permute(0, 3, 1, 2)


def _as_is(item):
    """collate_fn for batch_size=None: keep numpy indices as they are."""
    return item


def _worker_init(_worker_id: int) -> None:
    import torch.utils.data

    torch.utils.data.get_worker_info().dataset.reset()


def _fix_mmap_threshold() -> None:
    """Serve allocations of 1 MiB and more (regions, patch batches) by mmap on glibc.

    glibc raises its mmap threshold each time such a block is freed, after which
    they come from the heap, which fragments: measured here, peak memory grew
    from 950 to 1150 MiB between a 888- and a 3579-patch slide, and stayed at
    887-894 MiB with the threshold fixed. Setting it once turns the dynamic
    adjustment off. Elsewhere (musl, macOS) this does nothing.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError("CUDA was asked for (--device cuda) but torch sees no GPU: use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise EncoderError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    return device


def _check_options(options: ExportOptions) -> None:
    if not options.models:
        raise EncoderError("no model given: pass --model NAME (e.g. handcrafted or resnet50)")
    if len(options.models) != len(set(options.models)):
        raise EncoderError("the same --model was given twice")
    if len(options.models) > 1 and (options.weights or options.layer):
        raise EncoderError("--weights and --layer apply to a single --model; export other models in another run")
    if options.batch_size < 1:
        raise SicShareError(f"batch_size={options.batch_size} should be >= 1")
    if options.masks and options.annotations:
        raise LabelError("give either --masks or --annotations, not both")
    if options.dtype not in ("float16", "float32"):
        raise DatasetError(f"dtype {options.dtype!r} should be float16 or float32")


def _clear_dataset(folder: Path) -> None:
    """Delete a dataset's slide files and manifest (``--force``); nothing else in the folder."""
    for path in [*(folder / SLIDES_DIR).glob("*.parquet"), folder / "manifest.json", folder / "manifest.dsse.json"]:
        path.unlink(missing_ok=True)


def _check_existing(folder: Path, model: object, options: ExportOptions, slide_map: SlideMap) -> None:
    """Refuse to add slides to a dataset made with other settings, or with another holder secret.

    Resuming is only safe when every setting that shapes the rows is the same: the
    model (name, weights digest, layer, preprocessing), the patch grid, the dtype,
    the class list, and the secret that made the pseudonyms (a slide exported with
    another secret would appear twice under two ids). Slide ids this holder's slide
    map does not know were made with another secret, or elsewhere.
    """
    from sic_share.dataset import read_slide_metadata

    existing = sorted((folder / SLIDES_DIR).glob("*.parquet"))
    if not existing:
        return
    meta, _ = read_slide_metadata(existing[0])
    stride = options.stride_px if options.stride_px is not None else options.size_px // 2
    wanted = {
        "model": model,
        "patch size": options.size_px,
        "stride": stride,
        "target µm/px": options.target_mpp,
        "embedding dtype": options.dtype,
    }
    found = {
        "model": meta.model,
        "patch size": meta.patching.size_px,
        "stride": meta.patching.stride_px,
        "target µm/px": meta.patching.target_mpp,
        "embedding dtype": meta.embedding_dtype,
    }
    labelled = bool(options.masks or options.annotations)
    if options.classes is not None or labelled != bool(meta.classes):
        wanted["classes"] = tuple(options.classes or ()) if labelled else ()
        found["classes"] = tuple(meta.classes)
    for setting, value in wanted.items():
        if found[setting] != value:
            old = found[setting].id if setting == "model" and found[setting].id != value.id else found[setting]
            new = value.id if setting == "model" and found[setting].id != value.id else value
            if setting == "model" and old == new:
                old, new = "other weights, layer or preprocessing", "these"
            raise DatasetError(
                f"{folder} holds a dataset made with {setting} {old}, this run asks for {new}: "
                "export into a new --out, or pass --force to replace it"
            )
    known = {entry.slide_id for entry in slide_map.entries()}
    strangers = [path.stem for path in existing if path.stem not in known]
    if strangers:
        raise DatasetError(
            f"{folder} holds slides this holder secret did not make (e.g. {strangers[0]}): pass the --secret used "
            "for them, export into a new --out, or pass --force to replace them"
        )


def export_slides(
    slides: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    progress: Callable[[ExportProgress], None] | None = None,
) -> ExportReport:
    """Export slides to one format-v1 dataset per model (unsigned; see ``export_and_sign``).

    Parameters
    ----------
    slides : iterable of path-like
        Slide files or folders of them.
    out_dir : path-like
        Dataset folder for a single model; with several models, one sub-folder
        per model (``<out_dir>/<model-slug>``), all on the same grid.
    options : ExportOptions

    Returns
    -------
    ExportReport
        Bad slides are listed in ``problems`` (the run goes on unless
        ``fail_fast``); slides with no tissue in ``warnings`` (no file is written
        for them).

    Notes
    -----
    Every patch is read once and embedded by every model. Regions of about
    ``batch_size`` patches are read in one call and cropped, so overlapping
    patches (50 % overlap reads each pixel four times patch by patch) are read
    once. Memory does not grow with slide size: rows stream to Parquet.
    """
    import torch
    from torch.utils.data import DataLoader

    from sic_share.encoders import create_encoder
    from sic_share.annotations import geojson_labels, mask_labels, patch_labels
    from sic_share.slides import make_grid, open_slide

    options = options or ExportOptions()
    _check_options(options)
    _fix_mmap_threshold()  # inherited by the forked loader workers
    start = time.perf_counter()
    report = ExportReport()
    device = _resolve_device(options.device)
    report.device = device
    encoders = []
    for spec in options.models:
        name, _, weights = spec.partition("=")
        encoders.append(create_encoder(name, weights=weights or options.weights, layer=options.layer, device=device))
    out = Path(out_dir)
    if len(encoders) == 1:
        report.datasets = {options.models[0]: out}
    else:
        slugs = [_model_slug(name) for name in options.models]
        if len(set(slugs)) != len(slugs):
            raise EncoderError(f"models {options.models} give clashing folder names {slugs}")
        report.datasets = {name: out / slug for name, slug in zip(options.models, slugs)}

    paths = select_shard(find_slides(slides), options.shard)
    mpp_table = _read_mpp_csv(options.mpp_csv) if options.mpp_csv else {}
    secret = holder_secret(options.secret_path)
    slide_map = SlideMap.beside(options.secret_path)
    for encoder, folder in zip(encoders, report.datasets.values()):
        if options.force:
            _clear_dataset(folder)
        else:
            _check_existing(folder, encoder.info(), options, slide_map)

    def fail(slide: Path, exc: Exception) -> None:
        if options.fail_fast:
            raise exc
        report.problems.append(SlideProblem(slide.name, str(exc)))

    # A model that works below the target resolution (handcrafted sees a 256 px patch at
    # 64 px) lets the reader use a coarser pyramid level: fewer pixels to decode.
    read_mpp = max(options.target_mpp,
                   min(options.target_mpp * options.size_px / encoder.input_size for encoder in encoders))

    # -- plan: grids and labels; skip slides already complete for every model --
    classes = tuple(options.classes) if options.classes else None
    plans: list[_Plan] = []
    mpp_of: dict[int, float | None] = {}
    for path in paths:
        stem = source_stem(path.name)
        report.stems.append(stem)
        slide_id = pseudonym(stem, secret)
        if all((folder / SLIDES_DIR / f"{slide_id}.parquet").exists() for folder in report.datasets.values()):
            report.skipped += 1
            continue
        for folder in report.datasets.values():  # leftovers of a killed run on this slide (never another shard's)
            for stale in (folder / SLIDES_DIR).glob(f".{slide_id}.parquet.*.tmp"):
                stale.unlink(missing_ok=True)
        mpp = options.mpp if options.mpp is not None else mpp_table.get(stem)
        try:
            with open_slide(path, mpp=mpp) as reader:
                grid = make_grid(reader, target_mpp=options.target_mpp, size_px=options.size_px,
                                 stride_px=options.stride_px, min_tissue=options.min_tissue)
                slide_size = (int(reader.dimensions[0]), int(reader.dimensions[1]))
                # Read from the coarsest level that still gives every model its input size.
                level = reader.best_level_for_downsample(read_mpp / grid.level0_mpp)
                if level > grid.level:
                    grid = replace(grid, level=level,
                                   level_size=round(grid.level0_size / reader.level_downsamples[level]))
                labels = None
                if options.masks or options.annotations:
                    pattern = options.masks or options.annotations
                    label_path = Path(pattern.format(stem=stem))
                    if not label_path.exists():
                        raise LabelError(f"{label_path} does not exist: every slide needs its ground truth "
                                         f"({pattern!r} with {{stem}} = {stem!r})")
                    load = mask_labels if options.masks else geojson_labels
                    raster = load(label_path, reader.dimensions, classes=classes)
                    if classes is None:
                        classes = tuple(raster.classes)  # the first slide fixes the class list
                    elif tuple(raster.classes) != classes:
                        raise LabelError(f"{label_path} has classes {raster.classes}, other slides "
                                         f"{classes}: pass --classes to fix the order")
                    labels = patch_labels(raster, grid.coords, grid.level0_size, threshold=options.label_threshold)
        except (SlideError, LabelError) as exc:
            fail(path, exc)
            continue
        if grid.n_candidates == 0:
            report.warnings.append(SlideProblem(
                path.name, f"smaller than one {options.size_px} px patch at {options.target_mpp} µm/px; nothing "
                "written (check --mpp, or lower --patch-size or --target-mpp)"))
            continue
        if len(grid.coords) == 0:
            report.warnings.append(SlideProblem(
                path.name, f"no tissue: none of {grid.n_candidates} grid positions has tissue >= "
                f"{options.min_tissue}; nothing written (lower --min-tissue if that is wrong)"))
            continue
        stride0 = grid.stride_px * grid.target_mpp / grid.level0_mpp
        block = max(1, int(math.sqrt(options.batch_size)))
        mpp_of[len(plans)] = mpp
        plans.append(_Plan(path, stem, slide_id, grid, labels, _regions(grid.coords, stride0, block), slide_size))

    # the holder's private map (never in a dataset): pseudonym -> slide name and file
    SlideMap.beside(options.secret_path).record(
        [(plan.slide_id, plan.stem, str(plan.path)) for plan in plans])

    # -- stream --
    dataset = _RegionDataset(plans, mpp_of)
    cpus = os.cpu_count() or 1
    workers = options.workers if options.workers is not None else max(0, min(4, cpus - 1))
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=device.startswith("cuda"),
        worker_init_fn=_worker_init if workers > 0 else None,
        collate_fn=_as_is,
    )
    classes = classes or ()
    writers: dict[int, list[SlideWriter]] = {}
    failed: set[int] = set()
    done = 0
    patches_total = sum(len(plan.grid.coords) for plan in plans)
    state = ExportProgress(len(plans), 0, patches_total, 0, 0.0, 0.0)

    def open_writers(p: int) -> list[SlideWriter]:
        plan = plans[p]
        g = plan.grid
        patching = Patching(g.size_px, g.level0_size, float(g.level0_mpp), float(g.target_mpp), g.stride_px)
        return [
            SlideWriter(folder / SLIDES_DIR / f"{plan.slide_id}.parquet", slide_id=plan.slide_id,
                        metadata=SlideMetadata(encoder.info(), patching, classes, options.dtype,
                                               slide_size=plan.slide_size))
            for encoder, folder in zip(encoders, report.datasets.values())
        ]

    def finish(p: int) -> None:
        nonlocal done
        for writer in writers.pop(p, []):
            writer.close()
        done += 1
        report.exported += 1

    def abort(p: int, message: str) -> None:
        for writer in writers.pop(p, []):
            writer.abort()
        failed.add(p)
        fail(plans[p].path, SlideError(message))

    def embed(p: int, idx: np.ndarray, patches: torch.Tensor) -> None:
        plan = plans[p]
        batch = patches.to(device, non_blocking=True)
        labels = plan.labels[idx] if plan.labels is not None else None
        for encoder, writer in zip(encoders, writers[p]):
            embedding = encoder(batch).float().cpu().numpy()
            writer.write(plan.grid.coords[idx], embedding, tissue=plan.grid.tissue[idx], labels=labels)
        state.patches_done += len(idx)

    remaining = {p: len(plan.regions) for p, plan in enumerate(plans)}
    pending: list[tuple[np.ndarray, torch.Tensor]] = []  # regions of the current slide not yet embedded
    pending_rows = 0
    stream_start = time.perf_counter()
    iterator = iter(loader) if plans else iter(())
    try:
        while True:
            t0 = time.perf_counter()
            try:
                p, idx, patches = next(iterator)
            except StopIteration:
                break
            state.loader_wait += time.perf_counter() - t0
            remaining[p] -= 1
            if p in failed:
                continue
            if idx is None:
                pending, pending_rows = [], 0
                abort(p, patches)
                continue
            if p not in writers:
                writers[p] = open_writers(p)
            pending.append((idx, patches))
            pending_rows += len(idx)
            last = remaining[p] == 0
            # Forward exactly batch_size patches at a time (the remainder at the slide's end):
            # constant shapes let torch's allocator reuse its blocks instead of fragmenting.
            while pending_rows >= options.batch_size or (last and pending_rows):
                take = min(options.batch_size, pending_rows)
                all_idx = np.concatenate([i for i, _ in pending])
                all_patches = pending[0][1] if len(pending) == 1 else torch.cat([t for _, t in pending])
                embed(p, all_idx[:take], all_patches[:take])
                pending = [(all_idx[take:], all_patches[take:])] if take < pending_rows else []
                pending_rows -= take
            if last:
                finish(p)
                state.slides_done = done
            state.seconds = time.perf_counter() - stream_start
            if progress:
                progress(state)
    finally:
        for p in list(writers):
            for writer in writers.pop(p):
                writer.abort()
        del iterator  # shuts persistent workers down
    report.patches = state.patches_done
    report.seconds = time.perf_counter() - start
    report.stream_seconds = time.perf_counter() - stream_start
    report.loader_wait_fraction = state.loader_wait / report.stream_seconds if report.stream_seconds else 0.0
    return report


@dataclass
class SignedExport:
    """An export followed by the audit and signing of each dataset it touched."""

    report: ExportReport
    signed: dict[str, str] = field(default_factory=dict)  # model -> publisher/name@version
    unsigned_reason: str | None = None


def export_and_sign(
    slides: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    *,
    name: str | None = None,
    key_path: str | os.PathLike[str] | None = None,
    sign: bool = True,
    progress: Callable[[ExportProgress], None] | None = None,
) -> SignedExport:
    """The whole holder workflow before ``publish``: export, audit, sign.

    Signing happens when ``sign`` is true, a key exists (``key_path`` or the only
    key in the keys folder) and the run is not one shard of several (sign once
    after all shards with ``sic-share sign``). A dataset that fails the privacy
    audit is never signed. Re-running on a complete dataset exports nothing and
    does not sign a new version. Signing is :func:`~sic_share.signing.sign_dataset`,
    under the folder's sign lock: an export and a ``sign`` of one folder at once
    sign one version each, one after the other, never one version twice.

    Parameters
    ----------
    name : str, optional
        Dataset name; defaults to the output folder's name (plus ``-<model>``
        with several models).
    """
    from sic_share.privacy import audit_dataset
    from sic_share.signing import default_private_key, sign_dataset

    options = options or ExportOptions()
    report = export_slides(slides, out_dir, options, progress=progress)
    result = SignedExport(report)
    base = name or default_dataset_name(out_dir)
    for folder in report.datasets.values():
        if not (folder / SLIDES_DIR).is_dir():
            continue
        findings = audit_dataset(folder, forbidden=report.stems + SlideMap.beside(options.secret_path).names())
        if findings:
            first = findings[0]
            raise SicShareError(
                f"privacy audit of {folder} failed: {first.file}: {first.problem} "
                f"({len(findings)} finding(s); see 'sic-share audit {folder}'); nothing was signed"
            )
    if not sign:
        result.unsigned_reason = "--no-sign"
        return result
    if options.shard is not None and options.shard[1] > 1:
        result.unsigned_reason = "one shard of several: run 'sic-share sign' once all shards are done"
        return result
    try:
        key = Path(key_path) if key_path is not None else default_private_key()
    except SicShareError:
        result.unsigned_reason = "no signing key: run 'sic-share keys generate --publisher NAME', then 'sic-share sign'"
        return result
    for model, folder in report.datasets.items():
        if not (folder / SLIDES_DIR).is_dir():
            continue
        if report.exported == 0 and (folder / "manifest.dsse.json").exists():
            continue  # nothing new: keep the signed version as it is
        dataset_name = base if len(report.datasets) == 1 else f"{base}-{_model_slug(model)}"[:64]
        manifest = sign_dataset(folder, name=check_name(dataset_name, "dataset name"), key_path=key)
        result.signed[model] = manifest.ref
    return result
