"""The export pipeline: slides -> tissue grid -> patches -> embeddings -> one dataset per model.

Plan each slide (open it, read a thumbnail, build its tissue grid, labels) a
little ahead of the stream, in a thread: one torch DataLoader over regions of
every pending slide, whose workers each open their own slide handles, feeds
every model while the next slides are planned; rows stream into
one Parquet writer per (slide, model), renamed into place when the slide is
complete. A slide whose files all exist is skipped, so reruns and crashes are
safe, and ``shard=(i, n)`` splits the slide list for cluster array jobs.
"""

from __future__ import annotations

import csv
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sic_share._cores import usable_cores
from sic_share._fsutil import has_scheme, resolve
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
    "WorkerStats",
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
        DataLoader workers; default ``min(4, cores - 1)`` of the cores this process may use, 0 reads in the main process.
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
    devices : str or None
        ``all`` (every GPU), GPU indices ``0,1,3``, or ``cpu`` entries (``cpu,cpu``: two
        CPU workers): one process and encoder per entry, fed from one queue of
        slides, largest first. None: this process, on ``device``. The processes
        are spawned (CUDA needs it), so a script that calls this must guard its
        top level with ``if __name__ == "__main__":``.
    ray : str or None
        Run on Ray actors, one per worker slot, each fed the next slide: ``local`` connects to ``$RAY_ADDRESS`` or starts
        a Ray on this machine for the run; otherwise a cluster address (``auto``,
        ``HEAD:6379``, ``ray://HEAD:10001``). None: no Ray.
    stage_dir : str or None
        Folder where slides given as URLs are staged; default a temporary folder.
    stage_bytes : int, default=20 GiB
        Most bytes of staged slides on disk at once (one slide larger than this is
        staged alone).
    retries : int, default=3
        Ray: times an actor that dies is restarted and its slide retried.
    via : str or None
        Ray, for workers that cannot write this machine's disk: an fsspec URL
        prefix (``s3://scratch/crc-r50``) where each actor uploads its finished
        slide (``<via>/slides/<slide_id>.parquet``, ``<via>/<model-slug>/slides/...``
        with several models); the driver downloads each into the output folder
        as it is reported, and on a rerun collects the slides already there
        instead of redoing them. None: actors write the output folder directly
        (a folder every node mounts).
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
    devices: str | None = None
    ray: str | None = None
    stage_dir: str | None = None
    stage_bytes: int = 20 << 30
    retries: int = 3
    via: str | None = None


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
    devices: dict[str, int] = field(default_factory=dict)  # --devices / --ray: patches done per device

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
    # one process: from the stream's start to its end (reading, embedding, writing; with the later slides'
    # planning, done beside it, wherever the stream had to wait for a plan); --devices/--ray: from the first
    # slide any worker began to the last done
    stream_seconds: float = 0.0
    loader_wait_fraction: float = 0.0  # of stream_seconds (waiting for a plan counts as waiting for the loader)
    device: str = "cpu"
    stems: list[str] = field(default_factory=list)  # source stems of this run's slides, for the audit
    workers: dict[str, WorkerStats] = field(default_factory=dict)  # --devices / --ray: per worker


@dataclass
class WorkerStats:
    """What one device process or Ray node did during a run."""

    slides: int = 0
    patches: int = 0
    busy_seconds: float = 0.0  # planning, reading, embedding, writing its slides
    wall_seconds: float = 0.0  # from the first slide any worker began to the last one done
    startup_seconds: float = 0.0  # from the workers' launch (spawned, or asked of Ray) to this one's first slide

    @property
    def busy_fraction(self) -> float:
        return self.busy_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (0 <= I < N), e.g. ``$SLURM_ARRAY_TASK_ID/4``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise SicShareError(f"shard {text!r} should be I/N with 0 <= I < N, e.g. 0/4 for the first of four")
    return int(match[1]), int(match[2])


def _is_url(text: str) -> bool:
    """An fsspec URL other than ``file://`` (which is a local path)."""
    return has_scheme(text) and not text.startswith("file://")


@dataclass(frozen=True)
class _Source:
    """A slide file found by :func:`find_slides`: local path or URL, file name, size in bytes."""

    location: Path | str
    name: str
    size: int


def _remote_failure(exc: BaseException) -> str:
    """One sentence for a failed read of a slide URL (S3 error codes first: s3fs turns 403s into PermissionError)."""
    from sic_share._failures import _s3_code, describe_failure, exception_chain

    chain = exception_chain(exc)
    for link in chain:
        code = _s3_code(link)
        if code and not code.isdigit():
            return describe_failure(link)
    if any(isinstance(link, PermissionError) for link in chain):
        return ("the server denied access (403): check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) "
                "and that they may read it")
    return describe_failure(exc)


def _check_reachable(url: str) -> None:
    """fsspec's HTTP filesystem reports a server that does not answer as a missing file: tell them apart."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=5).close()
    except OSError as exc:
        raise SlideError(f"cannot reach {parts.scheme}://{parts.netloc} for {url} ({exc.strerror or exc}): check "
                         "the URL and that the server runs") from None


def _find_remote(url: str, suffixes: set[str]) -> list[_Source]:
    try:
        fs, path = resolve(url)
        info = fs.info(path)
        if info.get("type") == "directory":
            entries = [e for e in fs.ls(path, detail=True) if e.get("type") == "file"]
        else:
            entries = [info]
    except FileNotFoundError:
        _check_reachable(url)
        raise SlideError(f"{url} does not exist: give slide files or folders holding them") from None
    except SicShareError:
        raise
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, network: told as one sentence
        raise SlideError(f"{url} cannot be read: {_remote_failure(exc)}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found = []
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if len(entries) > 1 or info.get("type") == "directory":
            if Path(name).suffix.lower() not in suffixes:
                continue
            location = fs.unstrip_protocol(entry["name"]) if protocol not in ("http", "https") else entry["name"]
        else:
            location = url
        found.append(_Source(location, name, int(entry.get("size") or 0)))
    return found


def _find_sources(items: Iterable[str | os.PathLike[str]]) -> list[_Source]:
    from sic_share.slides import supported_suffixes

    suffixes = set(supported_suffixes())
    found: list[_Source] = []
    for item in items:
        text = os.fspath(item)
        if _is_url(text):
            found.extend(_find_remote(text, suffixes))
            continue
        path = Path(text[len("file://"):] if text.startswith("file://") else text)
        if path.is_dir() and path.suffix.lower() != ".dcm":
            found.extend(_Source(p, p.name, p.stat().st_size) for p in path.iterdir()
                         if p.is_file() and p.suffix.lower() in suffixes)
        elif path.exists():
            found.append(_Source(path, path.name, path.stat().st_size if path.is_file() else 0))
        else:
            raise SlideError(f"{path} does not exist: give slide files or folders holding them")
    if not found:
        raise SlideError("no slide files were found in what was given: supported suffixes are " + " ".join(sorted(suffixes)))
    unique = {str(s.location): s for s in found}
    return sorted(unique.values(), key=lambda s: (source_stem(s.name), str(s.location)))


def find_slides(items: Iterable[str | os.PathLike[str]]) -> list[Path | str]:
    """Expand files, folders and URLs into slide files, sorted by file stem (then path).

    A folder (or an fsspec URL of one, e.g. ``s3://bucket/cohort/``) contributes
    its files with a suffix some registered slide reader handles. Local slides
    come back as paths, remote ones as URLs.
    """
    return [s.location for s in _find_sources(items)]


def select_shard(slides: Sequence, shard: tuple[int, int] | None) -> list:
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
    mpp: float | None = None  # level-0 µm/px given for it (--mpp, --mpp-csv), else the file's


def _regions(coords: np.ndarray, stride0: float, block: int) -> list[np.ndarray]:
    """Group patches into blocks of ``block x block`` grid cells, in row-major order."""
    cells = np.floor((coords - coords.min(axis=0)) / stride0 + 0.5).astype(np.int64) // block
    key = cells[:, 1] * (cells[:, 0].max() + 1) + cells[:, 0]
    order = np.argsort(key, kind="stable")
    _, starts = np.unique(key[order], return_index=True)
    return [np.sort(chunk) for chunk in np.split(order, starts[1:])]


class _Region(NamedTuple):
    """One region to read, self-contained: a DataLoader worker needs nothing else to read it."""

    p: int  # the plan it belongs to
    path: str
    mpp: float | None
    level: int
    level_size: int
    level0_size: float
    idx: np.ndarray  # indices into the plan's grid.coords
    coords: np.ndarray  # grid.coords[idx]


class _RegionDataset:
    """Map-style dataset whose keys are :class:`_Region` s; each worker opens its own slide handles.

    Item ``key`` is ``(plan_index, patch_indices, patches)`` with ``patches`` a
    uint8 tensor (n, 3, S, S), S = the grid's ``level_size``; or ``(plan_index,
    None, message)`` when the slide could not be read; or None for the key None
    (nothing to read yet: the sampler waits for a slide being staged). The keys
    come from the sampler, so slides can join the stream while it runs.
    """

    def __init__(self) -> None:
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    def reset(self) -> None:
        """Forget handles inherited from the parent process (called in each worker)."""
        self._handles = {}
        self._pid = os.getpid()

    def _reader(self, key: _Region):
        from sic_share.slides import open_slide

        if self._pid != os.getpid():
            self.reset()
        if key.p not in self._handles:
            for old in list(self._handles):  # one open slide per worker at a time
                self._handles.pop(old).close()
            self._handles[key.p] = open_slide(Path(key.path), mpp=key.mpp)
        return self._handles[key.p]

    def __getitem__(self, key: _Region | None):
        import torch

        if key is None:
            return None
        try:
            reader = self._reader(key)
            down = reader.level_downsamples[key.level]
            half0 = key.level0_size / 2
            tops = np.round(key.coords - half0).astype(np.int64)  # level-0 top-left of each patch
            x0, y0 = tops.min(axis=0)
            x1, y1 = tops.max(axis=0)
            width = int(math.ceil((x1 - x0) / down)) + key.level_size + 1
            height = int(math.ceil((y1 - y0) / down)) + key.level_size + 1
            region = reader.read_region((int(x0), int(y0)), key.level, (width, height))
        except SicShareError as exc:
            return key.p, None, str(exc)
        size = key.level_size
        offsets = np.round((tops - (x0, y0)) / down).astype(np.int64)
        patches = np.empty((len(key.idx), size, size, 3), np.uint8)
        for j, (ox, oy) in enumerate(offsets):
            patches[j] = region[oy : oy + size, ox : ox + size]
        return key.p, key.idx, torch.from_numpy(patches).permute(0, 3, 1, 2)


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
    if device not in ("cpu",) and not re.fullmatch(r"cuda(:\d{1,3})?", device):
        raise EncoderError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if device.startswith("cuda:"):
        index, count = int(device[5:]), torch.cuda.device_count()
        if index >= count:
            raise EncoderError(f"--device {device}: GPU {index} does not exist (torch sees {count}, 0-{count - 1})")
        torch.cuda.set_device(index)  # the current device is the model's (pinned copies, autocast checks)
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
    if options.devices is not None and options.ray is not None:
        raise SicShareError("give --devices or --ray, not both: on Ray, each worker gets a device from Ray")
    if options.stage_bytes < 1:
        raise SicShareError(f"stage_bytes={options.stage_bytes} should be >= 1")
    if options.retries < 0:
        raise SicShareError(f"retries={options.retries} should be >= 0")
    if options.via is not None:
        if options.ray is None:
            raise SicShareError(f"--via {options.via} is where Ray workers put finished slides: give it with --ray "
                                "(one process and --devices write --out directly)")
        if not _is_url(options.via):
            raise SicShareError(f"--via {options.via} should be a URL prefix every worker can write, e.g. "
                                "s3://scratch/crc-r50; a folder every node mounts needs no --via: give it as --out")


def _clear_dataset(folder: Path) -> None:
    """Delete a dataset's slide files and manifest (``--force``); nothing else in the folder."""
    for path in [*(folder / SLIDES_DIR).glob("*.parquet"), folder / "manifest.json", folder / "manifest.dsse.json"]:
        path.unlink(missing_ok=True)


def _settings_differ(meta: SlideMetadata, model: object, options: ExportOptions) -> tuple[str, object, object] | None:
    """The first setting that shapes the rows where a slide file's ``meta`` and this run differ:
    ``(setting, the file's, this run's)``, or None when the file could be one of this run's."""
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
            return setting, old, new
    return None


def _check_existing(folder: Path, model: object, options: ExportOptions, slide_map: SlideMap,
                    ours: set[str] = frozenset()) -> None:
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
    differs = _settings_differ(meta, model, options)
    if differs:
        setting, old, new = differs
        raise DatasetError(
            f"{folder} holds a dataset made with {setting} {old}, this run asks for {new}: "
            "export into a new --out, or pass --force to replace it"
        )
    # this run's own slides (every shard's) count as known even where the map lacks them: a map written
    # before records were locked (or on a file system without locks) may have lost a concurrent shard's
    known = {entry.slide_id for entry in slide_map.entries()} | set(ours)
    strangers = [path.stem for path in existing if path.stem not in known]
    if strangers:
        raise DatasetError(
            f"{folder} holds slides this holder secret did not make (e.g. {strangers[0]}): pass the --secret used "
            "for them, export into a new --out, or pass --force to replace them"
        )


@dataclass(frozen=True)
class _Job:
    """One slide to export, as the driver hands it to whoever embeds it.

    The pseudonym is made by the driver: whoever embeds the slide (a device
    process, a Ray actor on another machine) never needs the holder secret.
    """

    source: str  # local path or fsspec URL
    name: str  # the file name, for messages (they stay with the holder)
    stem: str
    slide_id: str
    mpp: float | None
    size: int  # bytes of the file: the largest slides go first


@dataclass
class _SlideResult:
    """What became of one job (sent back from device processes and Ray actors)."""

    slide_id: str
    name: str
    status: str  # "exported", "empty" (no tissue, nothing written) or "failed"
    message: str = ""
    patches: int = 0
    seconds: float = 0.0  # busy time: planning, reading, embedding, writing
    stream_seconds: float = 0.0
    loader_wait: float = 0.0
    device: str = ""
    started: float = 0.0  # time.time() when the worker began the slide (after its start-up)
    uploaded: list[int] = field(default_factory=list)  # --via: bytes of each model's file put under the prefix


def _drop_partial(folders: list[Path], job: _Job) -> None:
    """Remove the hidden temporary files a worker that died on ``job`` was writing (its slide's only)."""
    for folder in folders:
        for partial in (folder / SLIDES_DIR).glob(f".{job.slide_id}.parquet.*.tmp"):
            partial.unlink(missing_ok=True)


class _SlideExporter:
    """Plan, read, embed and write slides on one device.

    The work of the single-process export, of one ``--devices`` process and of
    one Ray actor alike, so every path writes the same bytes for a slide.
    """

    def __init__(self, options: ExportOptions, folders: list[Path], classes: tuple[str, ...] | None,
                 device: str, encoders: list | None = None) -> None:
        from sic_share.encoders import create_encoder

        self.options = options
        self.folders = folders
        self.classes = classes
        self.device = device
        if encoders is None:
            encoders = []
            for spec in options.models:
                name, _, weights = spec.partition("=")
                encoders.append(create_encoder(name, weights=weights or options.weights, layer=options.layer,
                                               device=device))
        self.encoders = encoders
        # A model that works below the target resolution (handcrafted sees a 256 px patch at 64 px)
        # lets the reader use a coarser pyramid level: fewer pixels to decode.
        self.read_mpp = max(options.target_mpp,
                            min(options.target_mpp * options.size_px / encoder.input_size for encoder in encoders))

    def plan(self, job: _Job, path: Path) -> _Plan | SlideProblem:
        """The slide's grid and labels; a SlideProblem (a warning) when it has no patch to write.

        Raises SlideError or LabelError for a slide that cannot be exported.
        """
        from sic_share.annotations import geojson_labels, mask_labels, patch_labels
        from sic_share.slides import make_grid, open_slide

        options = self.options
        _drop_partial(self.folders, job)  # leftovers of a killed run on this slide (never another shard's)
        with open_slide(path, mpp=job.mpp) as reader:
            grid = make_grid(reader, target_mpp=options.target_mpp, size_px=options.size_px,
                             stride_px=options.stride_px, min_tissue=options.min_tissue)
            slide_size = (int(reader.dimensions[0]), int(reader.dimensions[1]))
            # Read from the coarsest level that still gives every model its input size.
            level = reader.best_level_for_downsample(self.read_mpp / grid.level0_mpp)
            if level > grid.level:
                grid = replace(grid, level=level, level_size=round(grid.level0_size / reader.level_downsamples[level]))
            labels = None
            if options.masks or options.annotations:
                pattern = options.masks or options.annotations
                label_path = Path(pattern.format(stem=job.stem))
                if not label_path.exists():
                    raise LabelError(f"{label_path} does not exist: every slide needs its ground truth "
                                     f"({pattern!r} with {{stem}} = {job.stem!r})")
                load = mask_labels if options.masks else geojson_labels
                raster = load(label_path, reader.dimensions, classes=self.classes)
                if self.classes is None:
                    self.classes = tuple(raster.classes)  # the first slide fixes the class list
                elif tuple(raster.classes) != self.classes:
                    raise LabelError(f"{label_path} has classes {raster.classes}, other slides "
                                     f"{self.classes}: pass --classes to fix the order")
                labels = patch_labels(raster, grid.coords, grid.level0_size, threshold=options.label_threshold)
        if grid.n_candidates == 0:
            return SlideProblem(job.name, f"smaller than one {options.size_px} px patch at {options.target_mpp} "
                                "µm/px; nothing written (check --mpp, or lower --patch-size or --target-mpp)")
        if len(grid.coords) == 0:
            return SlideProblem(job.name, f"no tissue: none of {grid.n_candidates} grid positions has tissue >= "
                                f"{options.min_tissue}; nothing written (lower --min-tissue if that is wrong)")
        stride0 = grid.stride_px * grid.target_mpp / grid.level0_mpp
        block = max(1, int(math.sqrt(options.batch_size)))
        return _Plan(path, job.stem, job.slide_id, grid, labels, _regions(grid.coords, stride0, block), slide_size,
                     mpp=job.mpp)

    def run(self, job: _Job, path: Path, progress: Callable[[int], None] | None = None) -> _SlideResult:
        """Plan and stream one slide; failures come back as a result, never raised."""
        start = time.perf_counter()
        result = _SlideResult(job.slide_id, job.name, "exported", device=self.device, started=time.time())
        try:
            plan = self.plan(job, path)
        except (SlideError, LabelError) as exc:
            result.status, result.message = "failed", str(exc)
            result.seconds = time.perf_counter() - start
            return result
        if isinstance(plan, SlideProblem):
            result.status, result.message = "empty", plan.problem
            result.seconds = time.perf_counter() - start
            return result
        state = ExportProgress(1, 0, len(plan.grid.coords), 0, 0.0, 0.0)
        problems: list[str] = []
        last = [0]

        def tick(s: ExportProgress) -> None:
            if progress and s.patches_done > last[0]:
                progress(s.patches_done - last[0])
                last[0] = s.patches_done

        try:
            self.stream([plan], state, tick, lambda p: None, lambda p, message: problems.append(message))
        except SicShareError as exc:
            problems.append(str(exc))
        if problems:
            result.status, result.message = "failed", problems[0]
        result.patches = state.patches_done
        result.stream_seconds = state.seconds
        result.loader_wait = state.loader_wait
        result.seconds = time.perf_counter() - start
        return result

    def stream(
        self,
        plans: Iterable[_Plan | None],
        state: ExportProgress,
        progress: Callable[[ExportProgress], None] | None,
        finished: Callable[[int], None],
        failed: Callable[[int, str], None],
    ) -> None:
        """Read every plan's regions through one DataLoader, embed them with every model, write the rows.

        ``plans`` may be a generator: it is drawn as the loader needs more regions,
        so a slide still being staged joins the stream when it is ready; it yields
        None for "not yet, ask again" (it must not block while a slide it gave is
        unfinished: that slide's last regions may be what frees the staging budget).
        Plan ``p`` is the ``p``-th plan drawn. ``finished(p)`` is called when its
        files are in place, ``failed(p, message)`` when it could not be read (its
        files are discarded). ``state`` is updated after every region.
        """
        import torch
        from torch.utils.data import DataLoader

        options, device, encoders = self.options, self.device, self.encoders
        drawn: list[_Plan | None] = []  # plan p, until its slide is finished (then None: its grid is freed)
        remaining: dict[int, int] = {}  # regions of plan p not yet received

        def keys() -> Iterable[_Region | None]:
            for plan in plans:
                if plan is None:
                    yield None
                    continue
                p = len(drawn)
                drawn.append(plan)
                remaining[p] = len(plan.regions)
                g = plan.grid
                for idx in plan.regions:
                    yield _Region(p, str(plan.path), plan.mpp, g.level, g.level_size, g.level0_size, idx, g.coords[idx])

        cpus = usable_cores()
        workers = options.workers if options.workers is not None else max(0, min(4, cpus - 1))
        loader = DataLoader(
            _RegionDataset(),
            batch_size=None,
            sampler=keys(),
            shuffle=False,
            num_workers=workers,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            pin_memory=device.startswith("cuda"),
            worker_init_fn=_worker_init if workers > 0 else None,
            collate_fn=_as_is,
        )
        writers: dict[int, list[SlideWriter]] = {}
        aborted: set[int] = set()

        def open_writers(p: int) -> list[SlideWriter]:
            plan = drawn[p]
            g = plan.grid
            patching = Patching(g.size_px, g.level0_size, float(g.level0_mpp), float(g.target_mpp), g.stride_px)
            classes = self.classes or ()  # read now: the first slide's plan fixes them, and plans come as the stream runs
            return [
                SlideWriter(folder / SLIDES_DIR / f"{plan.slide_id}.parquet", slide_id=plan.slide_id,
                            metadata=SlideMetadata(encoder.info(), patching, classes, options.dtype,
                                                   slide_size=plan.slide_size))
                for encoder, folder in zip(encoders, self.folders)
            ]

        def finish(p: int) -> None:
            for writer in writers.pop(p, []):
                writer.close()
            drawn[p] = None
            state.slides_done += 1
            finished(p)

        def abort(p: int, message: str) -> None:
            for writer in writers.pop(p, []):
                writer.abort()
            aborted.add(p)
            drawn[p] = None
            failed(p, message)

        def embed(p: int, idx: np.ndarray, patches: torch.Tensor) -> None:
            plan = drawn[p]
            batch = patches.to(device, non_blocking=True)
            labels = plan.labels[idx] if plan.labels is not None else None
            for encoder, writer in zip(encoders, writers[p]):
                embedding = encoder(batch).float().cpu().numpy()
                writer.write(plan.grid.coords[idx], embedding, tissue=plan.grid.tissue[idx], labels=labels)
            state.patches_done += len(idx)

        pending: list[tuple[np.ndarray, torch.Tensor]] = []  # regions of the current slide not yet embedded
        pending_rows = 0
        stream_start = time.perf_counter() - state.seconds
        iterator = iter(loader) if not isinstance(plans, Sequence) or plans else iter(())
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                state.loader_wait += time.perf_counter() - t0
                if item is None:
                    continue  # the sampler had nothing to read yet
                p, idx, patches = item
                remaining[p] -= 1
                if p in aborted:
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
                state.seconds = time.perf_counter() - stream_start
                if progress:
                    progress(state)
        finally:
            for p in list(writers):
                for writer in writers.pop(p):
                    writer.abort()
            del iterator  # shuts persistent workers down
        state.seconds = time.perf_counter() - stream_start


#: Slides planned ahead of the stream: enough that the next is ready when one ends, few enough to hold little.
_PLAN_AHEAD = 2
_END = object()


class _PlanAhead:
    """Plans the one-process export's slides in a thread, in order, a few ahead of the stream.

    So the stream starts after the first slide's planning rather than every
    slide's (a cohort of thousands used to wait about a second per slide before
    its first patch, with nothing on the progress bar), and the encoder works
    while the next slides are planned (thumbnail, tissue mask: about a second a
    slide, mostly outside the GIL). A slide from a URL is planned once the
    stager has it.

    The thread starts on the first :meth:`get`, which the stream's sampler makes
    once the DataLoader has forked its workers: no loader worker is forked while
    this thread may hold a lock inside OpenSlide.

    :meth:`get` gives, per job, ``(job, path, plan)`` where ``plan`` is a ``_Plan``, a
    ``SlideProblem`` (nothing to write) or the exception planning raised
    (SlideError and LabelError for the slide's own failures; anything else is
    re-raised by the caller).
    """

    def __init__(self, exporter: _SlideExporter, jobs: list[_Job], stager=None, ahead: int = _PLAN_AHEAD) -> None:
        self.exporter, self.jobs, self.stager = exporter, jobs, stager
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        for job in self.jobs:
            path = None  # until the slide is here (a URL's staging may fail)
            try:
                if self.stager is None:
                    path = Path(job.source)
                else:
                    while (path := self.stager.wait(job, timeout=0.2)) is None:
                        if self._stop.is_set():
                            return
                outcome = self.exporter.plan(job, path)
            except BaseException as exc:  # noqa: BLE001 - handed to the stream's thread, which decides
                outcome = exc
            if not self._put((job, path, outcome)):
                return
        self._put(_END)

    def get(self, block: bool):
        """The next ``(job, path, plan)``, ``_END`` after the last, or None when ``block`` is false and it is not ready."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sic-share-planner", daemon=True)
            self._thread.start()
        try:
            return self._queue.get(block=block)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a plan under way ends on its own (it only reads; the thread is a daemon)


def _anything_to_do(sources: list[_Source], folders: dict[str, Path], options: ExportOptions) -> bool:
    """Whether some slide still needs exporting (read-only: no secret is created here)."""
    try:
        secret = holder_secret(options.secret_path, create=False)
    except SicShareError:
        return True  # no secret yet: nothing was exported with it (a broken one is told below)
    return options.force or any(
        not all((folder / SLIDES_DIR / f"{pseudonym(source_stem(source.name), secret)}.parquet").exists()
                for folder in folders.values()) for source in sources)


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
    slides : iterable of path-like or str
        Slide files or folders of them; fsspec URLs (``s3://bucket/prefix/``,
        ``https://host/slide.svs``) are staged into a bounded local folder first.
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

    Three ways to run, one result: in this process (every slide streamed
    through one DataLoader, each planned in a thread a little ahead of it;
    slides from URLs smallest first, each planned once staged); ``devices`` (one process and encoder
    per device, fed largest slide first from one queue); ``ray`` (Ray actors
    fed the next slide as each is free, restarted with their slide when one dies). Each slide is planned, batched
    and written by the same code (:class:`_SlideExporter`) in all three, so a
    slide's Parquet file has the same bytes whichever path wrote it. Slide
    pseudonyms are always made here, in the driver.
    """
    from sic_share.export import _engine, _parts

    options = options or ExportOptions()
    _check_options(options)
    if _is_url(os.fspath(out_dir)):
        raise SicShareError(f"--out {os.fspath(out_dir)} is a URL: export writes and signs a dataset in a local "
                            "folder (then 'sic-share publish' uploads it); give --out DIR, and with --ray "
                            "--via s3://BUCKET/PREFIX where workers cannot write this machine's disk")
    _fix_mmap_threshold()  # inherited by the forked loader workers
    start = time.perf_counter()
    report = ExportReport()
    engine = options.devices is not None or options.ray is not None
    if options.devices is not None:
        devices = _engine.resolve_devices(options.devices, options.device)
        report.device = ",".join(devices)
        device = "cpu"  # the driver only reads the models' descriptions
    elif options.ray is not None:
        _engine.check_ray(options)
        if options.via is not None:
            _engine.check_via(options.via)
        devices, device = [], "cpu"
        report.device = "ray"
    else:
        devices, device = [], _resolve_device(options.device)
        report.device = device
    every = _find_sources(slides)  # a wrong path fails before models load
    sources = select_shard(every, options.shard)
    if (options.masks or options.annotations) and not options.classes and (
            engine or any(isinstance(source.location, str) for source in sources)):
        raise LabelError("--masks or --annotations with --devices, --ray or slide URLs need --classes: "
                         "slides are labelled apart and must share one class list")
    out = Path(out_dir)
    if len(options.models) == 1:
        report.datasets = {options.models[0]: out}
    else:
        slugs = [_model_slug(name) for name in options.models]
        if len(set(slugs)) != len(slugs):
            raise EncoderError(f"models {options.models} give clashing folder names {slugs}")
        report.datasets = {name: out / slug for name, slug in zip(options.models, slugs)}
    session = None
    if options.ray is not None and options.via is None and _engine.ray_is_running(options) and \
            _anything_to_do(sources, report.datasets, options):
        # Ray's workers start (imports, models) while this process loads its own models and lists what is done
        session = _engine.RaySession(options, tuple(options.classes) if options.classes else None, slides=len(sources),
                                     remote=any(isinstance(source.location, str) for source in sources))
    try:
        exporter = _SlideExporter(options, [], tuple(options.classes) if options.classes else None, device)
        exporter.folders = list(report.datasets.values())

        mpp_table = _read_mpp_csv(options.mpp_csv) if options.mpp_csv else {}
        secret = holder_secret(options.secret_path)
        slide_map = SlideMap.beside(options.secret_path)
        ours = {pseudonym(source_stem(source.name), secret) for source in every}
        for encoder, folder in zip(exporter.encoders, report.datasets.values()):
            if options.force:
                _clear_dataset(folder)
            else:
                _check_existing(folder, encoder.info(), options, slide_map, ours)
            if options.shard is None or options.shard[1] == 1:
                _parts.clear_parts(folder)  # a whole run supersedes the parts of an earlier sharded one

        jobs: list[_Job] = []
        shard_ids: list[str] = []  # every slide of this run's list (this shard's share), done or not
        empty_ids: set[str] = set()  # slides with no patch to write
        for source in sources:
            stem = source_stem(source.name)
            report.stems.append(stem)
            slide_id = pseudonym(stem, secret)
            shard_ids.append(slide_id)
            if all((folder / SLIDES_DIR / f"{slide_id}.parquet").exists() for folder in report.datasets.values()):
                report.skipped += 1
                continue
            mpp = options.mpp if options.mpp is not None else mpp_table.get(stem)
            jobs.append(_Job(str(source.location), source.name, stem, slide_id, mpp, source.size))

        def fail(name: str, exc: Exception) -> None:
            if options.fail_fast:
                raise exc
            report.problems.append(SlideProblem(name, str(exc)))

        remote = any(_is_url(job.source) for job in jobs)
        # the holder's private map (never in a dataset): pseudonym -> slide name and file, for every slide
        # handed out (a failed one too: sign names a missing slide by its pseudonym)
        slide_map.record([(job.slide_id, job.stem, job.source) for job in jobs])
        if not engine:
            # -- one process: every slide streamed through one DataLoader, each planned a little ahead of it
            #    (in a thread) once it is here (slides from URLs: staged, smallest first) --
            opened: list[_Job] = []  # the job of plan p
            open_slides = [0]  # plans drawn and not yet finished
            order = sorted(jobs, key=lambda job: job.size) if remote else jobs  # the staging order is the stream's
            stager = _engine.Stager(order, options.stage_dir, options.stage_bytes) if remote else None
            planner = _PlanAhead(exporter, order, stager)
            state = ExportProgress(len(jobs), 0, 0, 0, 0.0, 0.0)

            def plans() -> Iterable[_Plan | None]:
                """Each slide's plan as it is ready; None for "not yet" while a slide is open (its end may be
                what frees the staging budget), waiting only when none is."""
                total = 0
                while (item := planner.get(block=open_slides[0] == 0)) is not _END:
                    if item is None:
                        yield None
                        continue
                    job, path, plan = item
                    if isinstance(plan, _Plan):
                        opened.append(job)
                        open_slides[0] += 1
                        total += len(plan.grid.coords)
                        yield plan
                        continue
                    state.slides_total -= 1  # nothing of it will stream
                    if stager:
                        stager.release(job)
                    if isinstance(plan, SlideProblem):
                        report.warnings.append(plan)
                        empty_ids.add(job.slide_id)
                    elif isinstance(plan, (SlideError, LabelError)):
                        if isinstance(plan, SlideError) and path is not None and str(path) != job.source:
                            plan = SlideError(str(plan).replace(str(path), job.source))  # the URL, not the copy
                        fail(job.name, plan)
                    else:
                        raise plan
                if state.slides_done == 0:  # every plan known before a slide ended: the bar can count patches
                    state.patches_total = total

            stream_start = time.perf_counter()

            def done(p: int) -> None:
                open_slides[0] -= 1
                if stager:
                    stager.release(opened[p])

            def finished(p: int) -> None:
                done(p)
                report.exported += 1

            def failed(p: int, message: str) -> None:
                done(p)
                fail(opened[p].name, SlideError(message))

            try:
                exporter.stream(plans() if jobs else [], state, progress, finished, failed)
            finally:
                planner.close()
                if stager:
                    stager.close()
            report.patches = state.patches_done
            report.stream_seconds = time.perf_counter() - stream_start
            report.loader_wait_fraction = state.loader_wait / report.stream_seconds if report.stream_seconds else 0.0
        else:
            # -- per slide: one process per device, or Ray actors --
            jobs.sort(key=lambda job: -job.size)  # largest first: the last slides do not leave devices idle
            run = _engine.EngineRun(jobs, options, exporter.folders, exporter.classes, progress,
                                    infos=[encoder.info() for encoder in exporter.encoders])
            run.session = session
            if not jobs:
                results = []  # every slide done: no process, no Ray
            elif options.ray is not None:
                results = run.ray()
            else:
                results = run.devices(devices)
            for result in results:
                if result.status == "exported":
                    report.exported += 1
                elif result.status == "empty":
                    report.warnings.append(SlideProblem(result.name, result.message))
                    empty_ids.add(result.slide_id)
                else:
                    fail(result.name, SlideError(result.message))
                report.patches += result.patches
            report.stream_seconds = run.wall_seconds
            report.loader_wait_fraction = run.loader_wait_fraction
            report.workers = run.worker_stats
            if run.leftovers:
                report.warnings.append(SlideProblem("--via", run.leftovers))
        if options.shard is not None and options.shard[1] > 1:
            for encoder, folder in zip(exporter.encoders, report.datasets.values()):
                _parts.write_part(folder, options.shard, encoder.info(), options, exporter.classes, shard_ids, empty_ids)
        report.seconds = time.perf_counter() - start
        return report
    finally:
        if session is not None:
            session.close()


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
