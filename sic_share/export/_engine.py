"""Running the export at cohort scale: one process per device, Ray actors, slides staged from URLs.

The driver (:func:`~sic_share.export.export_slides`) finds the slides, makes
their pseudonyms, skips the ones already done and hands the rest out as jobs,
largest first; whoever runs a job plans, reads, embeds and writes that one
slide with :class:`~sic_share.export._pipeline._SlideExporter`, the same code
as the single-process export. What a job carries is all a worker sees: the
slide's path or URL, its pseudonym, the export settings and the output folder
(or, with ``via``, the URL prefix it uploads its slide to, and the driver's
``AWS_*`` variables to reach it); never the holder secret, the slide map or the
signing key.

No scheduler of our own: ``--devices`` is a queue in one machine; on Ray the
driver hands each free actor the next slide (as Ray's own ``ActorPool`` does)
and Ray does the rest (placement, restarting a dead worker, retrying its slide).
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fsspec.callbacks import Callback

from sic_share._cores import usable_cores
from sic_share._fsutil import resolve
from sic_share.errors import EncoderError, SicShareError, SlideError
from sic_share.export._pipeline import (
    ExportOptions,
    ExportProgress,
    WorkerStats,
    _is_url,
    _drop_partial,
    _Job,
    _SlideExporter,
    _SlideResult,
)

__all__ = ["EngineRun", "RaySession", "Stager", "check_ray", "check_via", "parse_devices", "resolve_devices"]

_PROGRESS_EVERY_S = 0.25
_COLLECTED = "--via (earlier run)"  # the worker named for slides collected from the --via prefix
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# --- devices --------------------------------------------------------------------------------------


def parse_devices(text: str) -> list[str]:
    """``all``, GPU indices (``0,1,3`` or ``cuda:0,cuda:1``) or ``cpu`` entries (``cpu,cpu``).

    Returns the entries as torch device names (``cuda:0``, ``cpu``), or ``["all"]``.
    Only the syntax is checked here; :func:`resolve_devices` checks the GPUs exist.
    """
    items = [item.strip().lower() for item in str(text).split(",")]
    bad = f"--devices {text!r} should be all, GPU indices such as 0,1,3, or cpu entries such as cpu,cpu"
    if items == ["all"]:
        return ["all"]
    devices = []
    for item in items:
        if item == "cpu":
            devices.append("cpu")
        elif re.fullmatch(r"(cuda:)?\d{1,3}", item):
            devices.append(f"cuda:{int(item.rpartition(':')[2])}")
        else:
            raise SicShareError(bad)
    gpus = [d for d in devices if d != "cpu"]
    if len(gpus) != len(set(gpus)):
        raise SicShareError(f"--devices {text!r} names a GPU twice: give each index once")
    if gpus and len(gpus) < len(devices):
        raise SicShareError(f"--devices {text} mixes GPUs and CPU: a GPU may embed in bf16 and a CPU in float32, so "
                            "their rows would differ slightly within one dataset; give GPUs or cpu entries")
    return devices


def resolve_devices(text: str, device: str = "auto") -> list[str]:
    """The torch devices of ``--devices``, checked against the GPUs torch sees (and ``--device``)."""
    import torch

    devices = parse_devices(text)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices == ["all"]:
        if device == "cpu":
            raise SicShareError("--device cpu and --devices all disagree: give --devices cpu,cpu for CPU workers")
        if count == 0:
            raise EncoderError("--devices all found no GPU (torch sees none): give --devices cpu,cpu for CPU "
                               "workers, or leave --devices out")
        return [f"cuda:{i}" for i in range(count)]
    for entry in devices:
        if entry.startswith("cuda:") and int(entry[5:]) >= count:
            seen = f"{count} GPU(s), 0-{count - 1}" if count else "no GPU"
            raise EncoderError(f"--devices {text}: GPU {entry[5:]} does not exist (torch sees {seen})")
    if device == "cpu" and any(d != "cpu" for d in devices) or device.startswith("cuda") and "cpu" in devices:
        raise SicShareError(f"--device {device} and --devices {text} disagree: give one of them")
    from sic_share.encoders._timm import native_bf16

    if len({native_bf16(d) for d in devices if d.startswith("cuda")}) > 1:
        raise SicShareError(f"--devices {text} mixes GPUs that compute in bf16 (Ampere or later) with older ones that "
                            "compute in float32: their rows would differ slightly within one dataset; give GPUs of one "
                            "kind")
    return devices


def _device_worker(wid: int, device: str, threads: int, options: ExportOptions, folders: list[Path],
                   classes: tuple[str, ...] | None, inbox, outbox) -> None:
    """One ``--devices`` process: load the models on its device, then export the slides it is handed."""
    import torch

    from sic_share._failures import describe_failure
    from sic_share.export._pipeline import _fix_mmap_threshold

    _fix_mmap_threshold()
    torch.set_num_threads(threads)
    try:
        import pyarrow

        pyarrow.set_cpu_count(threads)
    except (ImportError, ValueError):
        pass
    try:
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        exporter = _SlideExporter(options, folders, classes, device)
    except SicShareError as exc:
        outbox.put(("error", wid, str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - told as one line by the driver
        outbox.put(("error", wid, describe_failure(exc)))
        return
    outbox.put(("ready", wid, None))
    while (item := inbox.get()) is not None:
        job, path = item
        pending, last = [0], [time.perf_counter()]

        def progress(n: int) -> None:
            pending[0] += n
            if time.perf_counter() - last[0] >= _PROGRESS_EVERY_S:
                outbox.put(("progress", wid, pending[0]))
                pending[0], last[0] = 0, time.perf_counter()

        outbox.put(("done", wid, exporter.run(job, Path(path), progress)))


# --- staging slides from URLs ---------------------------------------------------------------------


#: The most bytes staged for a slide whose listing gave no size (the largest whole-slide images are tens of GB).
_UNSIZED_LIMIT = 64 << 30
#: Slides downloaded at once by a Stager: one GET each, so several connections share the bandwidth.
_STAGE_STREAMS = 3


class _Bound(Callback):
    """An fsspec callback that stops a download once it has brought more than ``limit`` bytes.

    The filesystem calls ``set_size`` with the size the server announces and
    ``relative_update`` after writing each chunk (64 KiB from S3, 5 MiB over
    HTTP), so at most one chunk past the limit reaches the disk before the copy
    is stopped (and then deleted).
    """

    def __init__(self, source: str, limit: int, what: str = "its listing gave") -> None:
        super().__init__()
        self.source, self.limit, self.what = source, limit, what

    def _refuse(self) -> None:
        raise SlideError(f"{self.source} sent more than the {self.limit} bytes {self.what}: the object changed "
                         "while it was read, or the server is broken; try again")

    def set_size(self, size: int | None) -> None:
        if size is not None and size > self.limit:
            self._refuse()

    def relative_update(self, inc: int = 1) -> None:
        self.value += inc
        if self.value > self.limit:
            self._refuse()


def _get_bounded(fs, path: str, local: Path, bound: _Bound) -> None:
    """Download ``path`` to ``local`` as one GET streamed in order, stopped by ``bound`` (one stream for S3 too:
    s3fs's concurrent ranged parts would let a whole 50 MiB part past the bound)."""
    one_stream = {"max_concurrency": 1} if "s3" in fs.protocol else {}
    fs.get_file(path, str(local), callback=bound, **one_stream)


def _download(job: _Job, root: Path) -> Path:
    """Copy a slide from its URL into ``root/<slide_id>/<file name>`` (the name keeps its suffix).

    One GET, streamed to disk in order (``get_file``; for S3 one stream rather than
    s3fs's ranged parts, since the :class:`Stager` runs several slides at once). The
    copy is bounded: no more bytes than the listing said the object holds (or
    ``_UNSIZED_LIMIT`` where it said nothing), give or take one network chunk, so a
    server that sends more, or sends forever, cannot fill the disk.
    """
    from sic_share.export._pipeline import _remote_failure

    folder = root / job.slide_id
    folder.mkdir(parents=True, exist_ok=True)
    name = job.name if job.name not in ("", ".", "..") else "slide"
    target = folder / name
    part = folder / f".{name}.part"
    limit = job.size if job.size > 0 else _UNSIZED_LIMIT
    try:
        fs, path = resolve(job.source)
        _get_bounded(fs, path, part, _Bound(job.source, limit))
        if not part.is_file():
            raise FileNotFoundError(job.source)
        os.replace(part, target)
    except SlideError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except FileNotFoundError:
        shutil.rmtree(folder, ignore_errors=True)
        raise SlideError(f"{job.source} does not exist (any more): check the URL") from None
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, network, disk: one sentence
        shutil.rmtree(folder, ignore_errors=True)
        raise SlideError(f"{job.source} could not be staged: {_remote_failure(exc)}") from None
    return target


class Stager:
    """Copies slides from URLs into a local folder ahead of their use, within a byte budget.

    ``streams`` background threads download the URL jobs in the order given (the
    order in which they will be used), each taking the next slide once the
    staged-but-unreleased bytes leave room for it within ``max_bytes`` (a slide
    larger than the budget is staged alone); each file is deleted on
    :meth:`release`. So staging overlaps embedding, several downloads share the
    bandwidth, and the disk holds at most the budget (plus one oversized slide).

    Parameters
    ----------
    jobs : list of _Job
        Jobs in the order they will be asked for; local ones are ignored.
    folder : str or None
        Where to stage; a temporary folder (removed on :meth:`close`) inside it,
        or inside the system's temporary folder.
    max_bytes : int
    streams : int, default=_STAGE_STREAMS
    """

    def __init__(self, jobs: list[_Job], folder: str | None, max_bytes: int, streams: int = _STAGE_STREAMS) -> None:
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="sic-share-stage-", dir=folder))
        self.max_bytes = max_bytes
        self.used = 0
        self.peak = 0  # most bytes staged at once
        self._order = deque(job for job in jobs if _is_url(job.source))
        self._cond = threading.Condition()
        self._ready: dict[str, Path | SlideError] = {}
        self._closed = False
        self._threads = [threading.Thread(target=self._run, name=f"sic-share-stager-{i}", daemon=True)
                         for i in range(max(1, min(streams, len(self._order))))]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                # the next slide in order, once it fits (slides are taken in order: the first needed come first)
                while not self._closed and self._order and self.used > 0 and \
                        self.used + self._order[0].size > self.max_bytes:
                    self._cond.wait()
                if self._closed or not self._order:
                    return
                job = self._order.popleft()
                self.used += job.size
                self.peak = max(self.peak, self.used)
            try:
                outcome: Path | SlideError = _download(job, self.root)
            except SlideError as exc:
                outcome = exc
            with self._cond:
                if isinstance(outcome, SlideError):
                    self.used -= job.size
                self._ready[job.slide_id] = outcome
                self._cond.notify_all()

    def poll(self, job: _Job) -> Path | SlideError | None:
        """The staged file, the reason it could not be staged, or None while it is on its way."""
        if not _is_url(job.source):
            return Path(job.source)
        with self._cond:
            return self._ready.get(job.slide_id)

    def wait(self, job: _Job, timeout: float | None = None) -> Path | None:
        """Block until ``job``'s slide is staged (None after ``timeout`` s); raises SlideError when it cannot be."""
        if not _is_url(job.source):
            return Path(job.source)
        with self._cond:
            if not self._cond.wait_for(lambda: job.slide_id in self._ready, timeout):
                return None
            outcome = self._ready[job.slide_id]
        if isinstance(outcome, SlideError):
            raise outcome
        return outcome

    def release(self, job: _Job) -> None:
        """Delete ``job``'s staged file and free its bytes for the next slides."""
        if not _is_url(job.source):
            return
        with self._cond:
            outcome = self._ready.pop(job.slide_id, None)
            if isinstance(outcome, Path):
                shutil.rmtree(outcome.parent, ignore_errors=True)
                self.used -= job.size
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)


# --- Ray ------------------------------------------------------------------------------------------


def _ray_address(address: str) -> tuple[str, int] | None:
    """(host, port) to check before connecting, or None for ``auto``/``local``/the default."""
    if address in ("auto", "local"):
        return None
    match = re.fullmatch(r"(?:ray://)?\[?([A-Za-z0-9_.:-]+?)\]?:(\d{1,5})", address)
    if not match:
        raise SicShareError(f"Ray address {address!r} should be auto, HEAD:6379 or ray://HEAD:10001")
    return match[1], int(match[2])


def check_ray(options: ExportOptions) -> None:
    """Ray is installed and the cluster's address answers; one line otherwise."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SicShareError("--ray needs Ray, which is not installed: pip install 'sic-share[ray]'") from None
    address = options.ray or "local"
    where = _ray_address(address)
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401
        except ImportError:
            raise SicShareError("--ray ray://... needs Ray Client: pip install 'ray[client]', or run the export on "
                                "the head node with --ray auto") from None
    if where is not None:
        try:
            socket.create_connection(where, timeout=5).close()
        except OSError as exc:
            raise SicShareError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): check the "
                                "address and that 'ray start --head' runs there") from None


# What a Ray actor needs to reach S3 as the driver does (slides from s3:// URLs, the --via prefix): the
# variables set on the driver are handed to the actors; files named by AWS_CONFIG_FILE or a profile are not.
_AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
             "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_MAX_ATTEMPTS")
_WRITE_CHECK = ".sic-share-write-check"


def _via_fs(via: str):
    """(filesystem, root path without a trailing slash) of a ``--via`` prefix."""
    fs, root = resolve(via)
    return fs, root.rstrip("/")


def check_via(via: str) -> None:
    """The ``--via`` prefix can be written with this machine's credentials; one line otherwise.

    Writes (and tries to delete) a small ``.sic-share-write-check`` object under
    the prefix: a listing alone would not tell a read-only credential.
    """
    from sic_share.export._pipeline import _remote_failure

    try:
        fs, root = _via_fs(via)
        fs.pipe_file(f"{root}/{_WRITE_CHECK}", b"sic-share export --via: this prefix can be written\n")
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, permissions, a bad URL: one sentence
        raise SicShareError(f"--via {via} cannot be written: {_remote_failure(exc)}") from None
    try:
        fs.rm_file(f"{root}/{_WRITE_CHECK}")
    except Exception:  # noqa: BLE001 - a credential that may write but not delete: the object stays, harmless
        pass


def _via_roots(root: str, folders: list[Path]) -> list[str]:
    """Where each model's slides go under the prefix: ``root`` for one model, ``root/<model-slug>`` for several."""
    return [root] if len(folders) == 1 else [f"{root}/{folder.name}" for folder in folders]


def _upload(job: _Job, local: list[Path], via: str) -> tuple[list[int], str | None]:
    """Put a worker's finished slide files under the prefix: (their sizes, the reason it could not or None).

    Each object appears whole or not at all (a single PUT, or a multipart upload
    completed at its end), so a slide under the prefix is finished. The sizes go
    back to the driver, which downloads no more than that.
    """
    from sic_share.dataset import SLIDES_DIR
    from sic_share.export._pipeline import _remote_failure

    sizes = []
    try:
        fs, root = _via_fs(via)
        for folder, target in zip(local, _via_roots(root, local)):
            path = folder / SLIDES_DIR / f"{job.slide_id}.parquet"
            sizes.append(path.stat().st_size)
            fs.put_file(str(path), f"{target}/slides/{job.slide_id}.parquet")
    except Exception as exc:  # noqa: BLE001 - told as the slide's failure
        return sizes, f"{job.source}: its slide could not be uploaded to {via}: {_remote_failure(exc)}"
    return sizes, None


class _ExportWorker:
    """One Ray actor: loads the models once, on its own GPU when it has one, and exports the slides it is handed.

    An actor rather than a task per slide: Ray gives a GPU task's worker its GPU
    through ``CUDA_VISIBLE_DEVICES``, which CUDA reads only once per process, so
    a worker kept between tasks to keep its models loaded could go on using the
    GPU of its first task while Ray hands that GPU to another (two slides on one
    GPU, another idle). An actor holds its GPU and its models for its lifetime;
    Ray restarts one that dies and retries the slide it was on.
    """

    def __init__(self, options: ExportOptions, classes: tuple[str, ...] | None, device: str) -> None:
        from sic_share._failures import describe_failure

        self.options = options
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.problem = ""  # why the models did not load (the driver then hands this actor no slide)
        self.exporter: _SlideExporter | None = None
        try:
            self.exporter = _SlideExporter(options, [], classes, device)
        except SicShareError as exc:
            self.problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - told as each slide's failure
            self.problem = describe_failure(exc)

    def ready(self) -> str:
        """Returns once the actor runs (placed, models loaded): why its models did not load, or ""."""
        return self.problem

    def slide(self, job: _Job, folders: list[Path], stage_dir: str | None) -> _SlideResult:
        """Stage the slide if it is a URL, export it, delete the staged copy.

        With ``options.via`` the slide is written into a temporary folder on the
        worker's node and uploaded under the prefix; ``folders`` then only give
        the number of models.
        """
        options, exporter = self.options, self.exporter  # loaded: the driver hands slides only once ready() is ""
        stager = out = None
        try:
            if options.via is not None:
                out = Path(tempfile.mkdtemp(prefix="sic-share-out-", dir=stage_dir))
                exporter.folders = [out / str(i) for i in range(len(folders))]
            else:
                exporter.folders = folders
            if _is_url(job.source):
                stager = Path(tempfile.mkdtemp(prefix="sic-share-stage-", dir=stage_dir))
                try:
                    path = _download(job, stager)
                except SlideError as exc:
                    return _SlideResult(job.slide_id, job.name, "failed", str(exc), device=self.where)
            else:
                path = Path(job.source)
            result = exporter.run(job, path)
            if out is not None and result.status == "exported":
                result.uploaded, problem = _upload(job, exporter.folders, options.via)
                if problem:
                    result.status, result.message = "failed", problem
        finally:
            for folder in (stager, out):
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
        result.device = self.where
        return result


def ray_is_running(options: ExportOptions) -> bool:
    """Whether ``--ray`` joins a Ray that runs already (this process's, ``$RAY_ADDRESS``, a cluster's address).

    Then the driver connects before its own checks and models, so the workers
    start meanwhile. A Ray started here for the run starts only once those
    checks passed: it prints a notice on start, which must not come before a
    one-line refusal.
    """
    import ray

    return ray.is_initialized() or options.ray not in ("", "local") or bool(os.environ.get("RAY_ADDRESS"))


class RaySession:
    """This export's connection to Ray and its workers: one :class:`_ExportWorker` actor per slot.

    Connects to ``options.ray`` (or ``$RAY_ADDRESS``, or starts a local Ray)
    unless this process is connected already; :meth:`close` removes the actors
    and disconnects only from what it connected to. An actor asks for one GPU
    when the cluster has GPUs (and the device is ``auto`` or ``cuda``) plus CPUs
    for its loader workers, else for CPUs: one to embed plus its loader workers.
    There are as many actors as the cluster's nodes can hold at once when the
    export starts (at most ``slides``); each starts loading the models at once,
    so their start-up overlaps the driver's own work. Actors get the driver's
    ``AWS_*`` variables when ``remote`` (they must reach S3). Ray restarts an
    actor that dies (``options.retries`` times) and retries the slide it was on.
    """

    def __init__(self, options: ExportOptions, classes: tuple[str, ...] | None, *, remote: bool,
                 slides: int) -> None:
        import logging

        import ray

        self.connected = False
        self.actors: list = []
        self.opened = time.time()  # when the workers were asked for (they start loading the models now)
        if not ray.is_initialized():
            try:
                ray.init(address=None if options.ray in ("", "local") else options.ray, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.ERROR, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SicShareError(f"cannot connect to Ray ({options.ray}): "
                                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            self.connected = True
        try:
            gpus = ray.cluster_resources().get("GPU", 0)
            if options.device.startswith("cuda") and not gpus:
                raise EncoderError("--device cuda was asked for, but the Ray cluster has no GPU: use --device cpu "
                                   "or auto")
            use_gpu = gpus >= 1 and options.device != "cpu"
            workers = options.workers if options.workers is not None else (4 if use_gpu else 0)
            cpus = 1 + workers if not use_gpu else max(1, workers)
            # what the nodes can hold at once: an actor needs its CPUs (and GPU) on one node, so a cluster whose
            # nodes are all too small would leave every actor pending, and the export waiting, for ever
            nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
            slots = sum(min(int(node.get("GPU", 0)), int(node.get("CPU", 0) // cpus)) if use_gpu
                        else int(node.get("CPU", 0) // cpus) for node in nodes)
            if slots < 1:
                what = f"a GPU and {cpus} CPU(s) for its loader workers" if use_gpu else \
                    f"{cpus} CPU(s) (one to embed, {workers} for loader workers)"
                raise SicShareError(f"no node of the Ray cluster has {what}: lower --workers (an autoscaling "
                                    "cluster needs one such node up before the export starts)")
            env = {var: os.environ[var] for var in _AWS_VARS if os.environ.get(var)}
            # restarted as often as it dies (Ray's budget is per actor, not per slide: a few slides that crash
            # their worker must not use it up for the rest of the run); each slide is retried `retries` times
            placement = dict(num_cpus=cpus, num_gpus=1 if use_gpu else 0, max_restarts=-1,
                             max_task_retries=options.retries)
            if env and remote:
                placement["runtime_env"] = {"env_vars": env}
            self.device = "cuda" if use_gpu else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES: the actor's GPU is cuda
            self._actor = ray.remote(_ExportWorker).options(**placement)
            self._args = (replace(options, workers=workers), classes, self.device)
            for _ in range(max(1, min(slides, slots))):
                self.actors.append(self._actor.remote(*self._args))
        except BaseException:
            self.close()
            raise

    def replace(self, actor):
        """A new actor in place of ``actor`` (killed), with the same resources, options and environment."""
        fresh = self._actor.remote(*self._args)
        self.actors[self.actors.index(actor)] = fresh
        return fresh

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            for actor in self.actors:  # in a Ray that stays up (a cluster, the caller's), nothing of ours lingers
                ray.kill(actor, no_restart=True)
        self.actors = []
        if self.connected:
            ray.shutdown()
            self.connected = False


def _kill_and_wait(actors: list, timeout: float = 10) -> None:
    """Kill Ray actors for good and wait (up to ``timeout`` s) until Ray has them dead: a call on each resolves
    (as an error) only then, so what they were writing can be removed after this without a race."""
    import ray

    for actor in actors:
        ray.kill(actor, no_restart=True)
    ray.wait([actor.ready.remote() for actor in actors], num_returns=len(actors), timeout=timeout)


# --- one run --------------------------------------------------------------------------------------


class EngineRun:
    """Hands jobs out (to device processes, or to Ray) and gathers their results.

    After a run: ``wall_seconds`` (the first slide any worker began to the last
    result in), ``worker_stats`` (per worker: slides, patches, busy seconds, and
    its start-up: from the workers' launch, processes spawned or Ray asked for
    them, to its first slide) and the mean ``loader_wait_fraction``.

    The two engines are timed alike: a ``--devices`` process asks for its first
    slide once its model is loaded, while Ray's actors are asked for before
    they exist, so timing from the hand-out would count a Ray worker's start-up
    as idle and a device process's not. Start-up is told apart for both.
    """

    def __init__(self, jobs: list[_Job], options: ExportOptions, folders: list[Path],
                 classes: tuple[str, ...] | None, progress: Callable[[ExportProgress], None] | None,
                 *, infos: list | None = None) -> None:
        self.jobs = jobs
        self.options = options
        self.folders = folders
        self.classes = classes
        self.infos = infos  # each model's ModelInfo: what a slide found under --via must have been made with
        self.progress = progress
        self.state = ExportProgress(len(jobs), 0, 0, 0, 0.0, 0.0)
        self.results: list[_SlideResult] = []
        self.stager: Stager | None = None  # the run's stager, while it runs (--devices)
        self.leftovers = ""  # --via: why the run's objects could not be removed from the prefix
        self.session: RaySession | None = None  # --ray: the session the driver opened early (it closes it)
        self.worker_stats: dict[str, WorkerStats] = {}
        self.wall_seconds = 0.0
        self.loader_wait_fraction = 0.0
        self._start = self._last = time.perf_counter()
        self._epoch = time.time()  # the same instant as _start, on the clock workers on other machines share
        self._first: dict[str, float] = {}
        self._launch: float | None = None  # time.time() when the workers were launched (spawned, or Ray asked)
        self._stream = 0.0
        self._wait = 0.0

    def _stop(self) -> bool:
        return self.options.fail_fast and any(r.status == "failed" for r in self.results)

    def _tell(self) -> None:
        self.state.seconds = time.perf_counter() - self._start
        if self.progress:
            self.progress(self.state)

    def _record(self, result: _SlideResult, device: str | None = None) -> None:
        device = device or result.device or "?"
        self.results.append(result)
        stats = self.worker_stats.setdefault(device, WorkerStats())
        if result.started:
            self._first[device] = min(self._first.get(device, result.started), result.started)
        if result.status == "exported":
            stats.slides += 1
        stats.patches += result.patches
        stats.busy_seconds += result.seconds
        self._stream += result.stream_seconds
        self._wait += result.loader_wait
        self.state.slides_done += 1
        self.state.patches_done += result.patches if device not in self.state.devices else 0
        self._last = time.perf_counter()
        self._tell()

    def _finish(self) -> list[_SlideResult]:
        # from the first slide any worker began (the first handed out, when none reported its start) to the last in
        begun = min(self._first.values(), default=self._epoch)
        self.wall_seconds = max(0.0, self._last - self._start - max(0.0, begun - self._epoch))
        launch = self._epoch if self._launch is None else self._launch
        for device, stats in self.worker_stats.items():
            stats.wall_seconds = self.wall_seconds
            if device in self._first:
                stats.startup_seconds = max(0.0, self._first[device] - launch)
        self.loader_wait_fraction = self._wait / self._stream if self._stream else 0.0
        return self.results

    def devices(self, devices: list[str]) -> list[_SlideResult]:
        """One process per device (spawned: CUDA needs it), fed from one queue, largest slide first.

        A process that dies takes only its current slide with it (reported as
        failed; a rerun redoes it); the others go on with the queue.
        """
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        cpus = usable_cores()
        n_cpu = sum(d == "cpu" for d in devices)
        names = [d if d != "cpu" or n_cpu == 1 else f"cpu#{i}" for i, d in enumerate(devices)]
        # CPU workers share the cores; a GPU worker keeps a few threads for its own work
        threads = [max(1, cpus // max(1, n_cpu)) if d == "cpu" else max(1, min(4, cpus // len(devices)))
                   for d in devices]
        outbox = ctx.Queue()
        inboxes = [ctx.Queue() for _ in devices]
        procs = [ctx.Process(target=_device_worker, name=f"sic-share-export-{name}",
                             args=(wid, device, threads[wid], self.options, self.folders, self.classes,
                                   inboxes[wid], outbox))
                 for wid, (device, name) in enumerate(zip(devices, names))]
        stager = Stager(self.jobs, self.options.stage_dir, self.options.stage_bytes)
        self.stager = stager
        todo = deque(self.jobs)
        idle: list[int] = []
        busy: dict[int, _Job] = {}
        alive = set(range(len(devices)))
        inflight = dict.fromkeys(range(len(devices)), 0)
        started = False
        for wid, name in enumerate(names):
            self.state.devices[name] = 0
            self.worker_stats[name] = WorkerStats()
        try:
            self._launch = time.time()
            for proc, n in zip(procs, threads):
                # Every thread pool of a child (OpenMP, BLAS, torch) sized before it imports numpy or torch:
                # CPU workers that each used every core would fight over them (measured: 0.65 x one process).
                saved = {var: os.environ.get(var) for var in _THREAD_VARS}
                os.environ.update(dict.fromkeys(_THREAD_VARS, str(n)))
                try:
                    proc.start()
                finally:
                    for var, value in saved.items():
                        if value is None:
                            os.environ.pop(var, None)
                        else:
                            os.environ[var] = value
            while (todo or busy) and alive and not self._stop():
                try:
                    kind, wid, payload = outbox.get(timeout=0.2)
                except queue.Empty:
                    kind = None
                if kind == "error":
                    raise SicShareError(f"{names[wid]}: {payload}")
                if kind == "ready":
                    idle.append(wid)
                elif kind == "progress":
                    inflight[wid] += payload
                    self.state.devices[names[wid]] += payload
                    self.state.patches_done += payload
                    self._tell()
                elif kind == "done":
                    job = busy.pop(wid)
                    stager.release(job)
                    self.state.devices[names[wid]] += payload.patches - inflight[wid]
                    self.state.patches_done += payload.patches - inflight[wid]
                    inflight[wid] = 0
                    self._record(payload, names[wid])
                    idle.append(wid)
                for wid in list(alive):  # a process that died (killed, out of memory) loses its slide only
                    if not procs[wid].is_alive() and procs[wid].exitcode is not None:
                        alive.discard(wid)
                        if wid in idle:
                            idle.remove(wid)
                        if wid in busy:
                            job = busy.pop(wid)
                            stager.release(job)
                            _drop_partial(self.folders, job)
                            self._record(_SlideResult(
                                job.slide_id, job.name, "failed",
                                f"{job.source}: the export process on {names[wid]} died (exit code "
                                f"{procs[wid].exitcode}) while exporting it; run the export again to redo it"),
                                names[wid])
                while idle and todo:
                    staged = stager.poll(todo[0])
                    if staged is None:
                        break  # still downloading: hand it out when it arrives
                    job = todo.popleft()
                    if isinstance(staged, SlideError):
                        self._record(_SlideResult(job.slide_id, job.name, "failed", str(staged)), "staging")
                        continue
                    if not started:
                        self._start, self._epoch, started = time.perf_counter(), time.time(), True
                    wid = idle.pop(0)
                    busy[wid] = job
                    inboxes[wid].put((job, str(staged)))
            if todo and not alive and not self._stop():
                raise SicShareError(f"every export process died (exit codes {[p.exitcode for p in procs]}); {len(todo)} slide(s) were not exported: "
                                    "run the export again to redo them")
        finally:
            for wid in alive:
                try:
                    inboxes[wid].put(None)
                except (OSError, ValueError):
                    pass
            deadline = time.monotonic() + (2 if self._stop() else 30)
            for proc in procs:
                if proc.pid is None:
                    continue  # never started
                proc.join(timeout=max(0.1, deadline - time.monotonic()))
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=5)
            stager.close()
        return self._finish()

    def _via_listing(self, fs, roots: list[str]) -> dict[str, list[int]]:
        """Slide ids with a non-empty file under every model's prefix (finished by an earlier run): their sizes."""
        from sic_share.export._pipeline import _remote_failure

        have: dict[str, list[int]] | None = None
        for root in roots:
            try:
                fs.invalidate_cache(f"{root}/slides")
                entries = fs.ls(f"{root}/slides", detail=True)
            except FileNotFoundError:
                entries = []
            except Exception as exc:  # noqa: BLE001 - credentials, endpoint: one sentence
                raise SicShareError(f"--via {self.options.via} cannot be listed: {_remote_failure(exc)}") from None
            sizes = {entry["name"].rsplit("/", 1)[-1][: -len(".parquet")]: int(entry.get("size") or 0)
                     for entry in entries if entry["name"].endswith(".parquet")}
            have = {sid: [*have[sid], size] for sid, size in sizes.items() if size > 0 and sid in have} \
                if have is not None else {sid: [size] for sid, size in sizes.items() if size > 0}
        return have or {}

    def _fetch(self, fs, roots: list[str], job: _Job, sizes: list[int], *, check: bool) -> _SlideResult | None:
        """Download a slide's files from the ``--via`` prefix into the output folders.

        Each file is downloaded under a hidden temporary name, no more than its
        size in ``sizes`` (what the worker uploaded, or what the listing gave) and
        no less, and renamed into place once every model's file is in, so a slide
        is in the dataset whole or not at all. With ``check`` (a slide an earlier
        run left there), its footer must read and its settings match this run's:
        None means unreadable, redo it; other settings raise one line.
        """
        from sic_share.dataset import SLIDES_DIR, read_slide_metadata
        from sic_share.errors import DatasetError
        from sic_share.export._pipeline import _remote_failure, _settings_differ

        options, rows, moves, made = self.options, 0, [], []
        placed = False
        try:
            for i, (folder, root) in enumerate(zip(self.folders, roots)):
                target = folder / SLIDES_DIR / f"{job.slide_id}.parquet"
                made += [p for p in (folder, target.parent) if not p.exists()]
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
                moves.append((tmp, target))
                source = f"{root}/slides/{job.slide_id}.parquet"
                _get_bounded(fs, source, tmp, _Bound(source, sizes[i], "the worker uploaded"))
                if tmp.stat().st_size != sizes[i]:
                    raise SlideError(f"{source} holds {tmp.stat().st_size} bytes, not the {sizes[i]} expected: "
                                     "something else wrote it; run the export again")
                if not check:
                    continue
                try:
                    meta, rows = read_slide_metadata(tmp)
                except (SicShareError, OSError, ValueError):
                    return None  # not a slide file this code wrote whole: export the slide again
                differs = _settings_differ(meta, self.infos[i], options) if self.infos else None
                if differs:
                    setting, old, new = differs
                    raise DatasetError(
                        f"--via {options.via} holds slide {job.slide_id} made with {setting} {old}, this run asks "
                        f"for {new}: give a new --via prefix, or pass --force to export every slide again")
            for tmp, target in moves:
                os.replace(tmp, target)
            placed = True
        except SlideError as exc:
            if check:
                return None  # changed since it was listed: export the slide again
            return _SlideResult(job.slide_id, job.name, "failed", f"{job.source}: its slide could not be "
                                f"fetched from {options.via}: {exc}", device=_COLLECTED)
        except SicShareError:
            raise
        except Exception as exc:  # noqa: BLE001 - credentials, endpoint, disk: the slide's failure
            return _SlideResult(job.slide_id, job.name, "failed", f"{job.source}: its slide could not be "
                                f"fetched from {options.via}: {_remote_failure(exc)}", device=_COLLECTED)
        finally:
            for tmp, _ in moves:
                tmp.unlink(missing_ok=True)
            if not placed:
                for folder in reversed(made):  # what this call created, where it stayed empty
                    try:
                        folder.rmdir()
                    except OSError:
                        pass
        return _SlideResult(job.slide_id, job.name, "exported", patches=rows, device=_COLLECTED)

    def ray(self) -> list[_SlideResult]:
        """Ray actors, each handed the next slide (largest first) when it is free; Ray restarts one that dies and
        retries its slide.

        Runs in ``self.session`` when the driver opened one early (its workers
        already loading the models), else in a :class:`RaySession` of its own.

        With ``options.via``, slides an earlier run left under the prefix are
        collected first (Ray is not even started when that was all), and each
        actor's slide is downloaded from the prefix as its result comes in.
        """
        import ray

        from sic_share._failures import describe_failure

        options = self.options
        jobs = list(self.jobs)
        via = None
        collected: list[str] = []  # slides now in --out from the prefix: their objects are removed at the end
        if options.via is not None:
            fs, root = _via_fs(options.via)
            via = (fs, _via_roots(root, self.folders))
            self._start, self._epoch = time.perf_counter(), time.time()
            done = {} if options.force else self._via_listing(*via)
            for job in [job for job in jobs if job.slide_id in done]:
                result = self._fetch(*via, job, done[job.slide_id], check=True)
                if result is not None:
                    jobs.remove(job)
                    self._record(result)
                    if result.status == "exported":
                        collected.append(job.slide_id)
            if not jobs:
                self._clean_via(*via, collected)
                return self._finish()
        session = self.session or RaySession(options, self.classes, remote=via is not None or any(
            _is_url(job.source) for job in jobs), slides=len(jobs))
        try:
            if via is None:
                self._start, self._epoch = time.perf_counter(), time.time()
            self._launch = session.opened  # the actors began loading then
            todo = deque(jobs)  # largest first
            idle: list = []  # actors that run and wait for a slide
            starting = {actor.ready.remote(): actor for actor in session.actors}  # handed slides once placed
            running: dict = {}  # ref -> (job, actor)
            problem = ""  # why the last actor dropped for good could not work
            while (todo or running) and (starting or running or idle) and not self._stop():
                while todo and idle:  # each free actor takes the next slide: Ray keeps an actor's calls in order
                    actor, job = idle.pop(), todo.popleft()
                    running[actor.slide.remote(job, self.folders, options.stage_dir)] = (job, actor)
                done, _ = ray.wait([*running, *starting], num_returns=1, timeout=0.5)
                for ref in done:
                    if ref in starting:
                        actor = starting.pop(ref)
                        try:
                            reason = ray.get(ref)
                        except ray.exceptions.RayError as exc:
                            reason = f"a Ray worker could not start ({type(exc).__name__})"
                        if reason:  # its models did not load there (that node's GPU, say): the others go on
                            problem = reason
                            ray.kill(actor, no_restart=True)
                        else:
                            idle.append(actor)
                        continue
                    job, actor = running.pop(ref)
                    try:
                        result = ray.get(ref)
                        idle.append(actor)
                    except ray.exceptions.RayTaskError as exc:  # raised inside the actor: a bug, told in one line
                        cause = getattr(exc, "cause", None) or exc
                        result = _SlideResult(job.slide_id, job.name, "failed",
                                              f"{job.source}: {describe_failure(cause)}", device="ray")
                        idle.append(actor)
                    except ray.exceptions.RayError as exc:  # its worker died on it more often than it is retried
                        _kill_and_wait([actor])  # whatever state it is in
                        _drop_partial(self.folders, job)
                        if todo:  # a fresh one takes its place
                            replacement = session.replace(actor)
                            starting[replacement.ready.remote()] = replacement
                        result = _SlideResult(job.slide_id, job.name, "failed",
                                              f"{job.source}: its Ray worker was lost {options.retries + 1} time(s) "
                                              f"({type(exc).__name__}); run the export again to redo it",
                                              device="ray")
                    if via is not None and result.status == "exported":
                        fetched = self._fetch(*via, job, result.uploaded, check=False)
                        if fetched.status == "failed":
                            result.status, result.message = "failed", fetched.message
                        else:
                            collected.append(job.slide_id)
                    self._record(result)
                self._tell()
            if running:  # stopped early (--fail-fast): the slides under way are abandoned, whole
                _kill_and_wait([actor for _, actor in running.values()])
                for job, _ in running.values():
                    _drop_partial(self.folders, job)
            if not self._stop():
                for job in todo:  # left when no actor could work
                    self._record(_SlideResult(job.slide_id, job.name, "failed", f"{job.source}: no Ray worker could "
                                              f"export it ({problem or 'none started'}); run the export again to "
                                              "redo it", device="ray"))
            if via is not None:
                self._clean_via(*via, collected)
        finally:
            if session is not self.session:
                session.close()
        return self._finish()

    def _clean_via(self, fs, roots: list[str], slide_ids: list[str]) -> None:
        """Remove the objects of slides now in ``--out`` from the prefix (best effort).

        Only once the run got through: a driver that stops early (an error, a
        signal) leaves them, and its rerun collects them. A slide that could not be
        fetched leaves its objects too. Where the credentials may not delete, the
        objects stay and the report says so.
        """
        paths = [f"{root}/slides/{slide_id}.parquet" for slide_id in slide_ids for root in roots]
        for n, path in enumerate(paths):
            try:
                fs.rm_file(path)  # one DELETE each: a bulk delete does not tell refused keys
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001 - a credential that may write but not delete: say so, go on
                from sic_share.export._pipeline import _remote_failure

                self.leftovers = (f"{len(paths) - n} object(s) stay under --via {self.options.via}: they could not "
                                  f"be removed ({_remote_failure(exc)}); remove the prefix once the dataset is signed")
                return
