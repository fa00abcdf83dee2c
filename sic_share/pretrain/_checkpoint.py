"""The pretraining checkpoint: one torch file that export loads as a weights file, and training resumes from.

Layout (every value a tensor or a plain Python type, so ``torch.load(weights_only=True)`` reads it)::

    state_dict           the backbone, under timm's own keys (what export's --weights reads)
    projection_head      SimCLR's projection head
    optimizer            torch optimizer state
    scheduler            learning-rate schedule state
    epoch                epochs finished
    sic_share_pretrain   the recipe: JSON-able dict (model, init, hyper-parameters,
                         augmentations, patching, counts, seed, versions, per-epoch loss)

No slide file name or path is stored: counts only, since the file may be shared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sic_share.errors import PretrainError

__all__ = [
    "RECIPE_KEY",
    "RESUME_FIELDS",
    "check_resumable",
    "read_checkpoint",
    "remove_stale",
    "write_checkpoint",
]

RECIPE_KEY = "sic_share_pretrain"
# Recipe fields a resumed run must share with the checkpoint (epochs may grow).
RESUME_FIELDS = ("model", "batch_size", "lr", "weight_decay", "temperature", "projection", "augmentations",
                 "patching", "data", "seed")


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_stale(path: Path) -> None:
    """Remove temporary files that a killed run left next to ``path``."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_checkpoint(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically: a temporary name, fsync, then ``os.replace``.

    An interruption at any point leaves the previous file (or none) in place.
    """
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as handle:
            torch.save(dict(checkpoint), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`write_checkpoint` (``weights_only``: no code runs).

    Raises
    ------
    PretrainError
        When the file is not a sic-share pretraining checkpoint.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file fails in many ways
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise PretrainError(f"{path} cannot be read as a checkpoint ({first}): choose another --out "
                            "or delete it to start over") from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(RECIPE_KEY), dict):
        raise PretrainError(f"{path} is not a sic-share pretrain checkpoint: choose another --out to keep it")
    return checkpoint


def check_resumable(path: Path, stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    """Refuse to resume when the run's recipe differs from the checkpoint's, naming the first field."""
    for key in RESUME_FIELDS:
        if stored.get(key) != wanted.get(key):
            if key == "model":
                raise PretrainError(f"{path} was trained from {stored.get(key)}, not {wanted.get(key)}: resume it "
                                    f"with --model {stored.get(key)} or choose another --out")
            raise PretrainError(f"{path} was trained with {key}={stored.get(key)}, this run has "
                                f"{key}={wanted.get(key)}: resume with the same settings or choose another --out")
