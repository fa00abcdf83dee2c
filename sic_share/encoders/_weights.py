"""Local weights files: read, unwrap, align their keys to a model, and check them strictly."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import pathlib
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sic_share.errors import EncoderError

__all__ = [
    "HEAD_MODULES",
    "STRIP_PREFIXES",
    "WRAPPER_KEYS",
    "KeyReport",
    "align_state_dict",
    "efficientnet_pytorch_to_timm",
    "file_sha256",
    "guess_architecture",
    "is_efficientnet_pytorch",
    "read_state_dict",
    "shapes_of",
]

# Keys under which training frameworks nest the model's state dict, tried in this order
# (Lightning: "state_dict"; DeiT/MAE/MoCo: "model"; DINO: "teacher", the one used for features).
WRAPPER_KEYS = ("state_dict", "model", "teacher")
# Prefixes that wrappers put in front of backbone keys: Lightning modules (``model.``), DDP and
# DataParallel (``module.``), torch.compile (``_orig_mod.``), SSL frameworks (``backbone.``,
# ``encoder.``, ``base_encoder.``) and Ciga et al.'s SimCLR (``model.resnet.``).
STRIP_PREFIXES = ("module.", "model.", "_orig_mod.", "backbone.", "encoder.", "base_encoder.", "resnet.")
# Classifier and projection heads a num_classes=0 model lacks: their keys are dropped.
HEAD_MODULES = ("fc", "head", "heads", "classifier", "head_dist", "last_linear", "projection", "projector")
# Harmless classes that Lightning and argparse-based training scripts pickle next to the weights;
# allowed for ``weights_only`` loading so such checkpoints need no conversion.
_SAFE_GLOBALS = [argparse.Namespace, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath]
_SHOWN = 3


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length, then a JSON ``{``."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20)


def _load(path: Path) -> object:
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise EncoderError(f"{path.name} is not a readable safetensors file ({_first_line(exc)})") from exc
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with allow(_SAFE_GLOBALS) if allow else contextlib.nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _first_line(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
            reason = f"it pickles {match.group(1)}" if match else "it pickles Python objects besides tensors"
            raise EncoderError(
                f"{path.name} cannot be loaded safely ({reason}): if you trust it, re-save only its weights with "
                "torch.save(torch.load(FILE, weights_only=False)['state_dict'], 'weights.pt') or as safetensors"
            ) from exc
        raise EncoderError(f"{path.name} is not a PyTorch or safetensors weights file ({reason})") from exc
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle fails in many ways (EOF, IndexError, ...)
        raise EncoderError(
            f"{path.name} is not a PyTorch or safetensors weights file ({_first_line(exc)})"
        ) from exc


def _first_line(exc: BaseException, limit: int = 120) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tensors(mapping: Mapping) -> dict[str, torch.Tensor]:
    return {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file and return its flat state dict.

    Parameters
    ----------
    path : str or Path
        A safetensors file, or a torch file (``torch.save``) holding a state dict,
        possibly nested under ``state_dict`` (Lightning), ``model`` or ``teacher`` (DINO).

    Returns
    -------
    dict of str to Tensor
        Tensors on the CPU, keys as stored (prefixes are handled by
        :func:`align_state_dict`).

    Raises
    ------
    EncoderError
        When the file is missing, unreadable, unsafe to unpickle, or holds no tensors.

    Notes
    -----
    torch files are read with ``weights_only=True``: no code from the file runs.
    ``argparse.Namespace`` and ``pathlib`` paths, which Lightning checkpoints often
    carry in their hyper-parameters, are allowed; anything else is refused with a
    way to convert the file.
    """
    path = Path(path)
    if not path.is_file():
        raise EncoderError(f"weights file {path} does not exist: check --weights")
    obj = _load(path)
    trail: list[str] = []
    for _ in range(len(WRAPPER_KEYS) + 1):
        if not isinstance(obj, Mapping):
            break
        inner = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None or _tensors(obj):
            break
        trail.append(inner)
        obj = obj[inner]
    state = _tensors(obj) if isinstance(obj, Mapping) else {}
    if not state:
        where = "".join(f"[{k!r}]" for k in trail)
        found = sorted(map(str, obj))[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise EncoderError(
            f"{path.name}{where} holds no tensors (found {found}): save the model's state_dict() "
            "with torch.save or safetensors"
        )
    return state


@dataclass
class KeyReport:
    """How a state dict compares with a model's (reference) state dict."""

    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected)

    def describe(self) -> str:
        """``missing a, b, c (12 more); shape mismatch ...; unexpected ...`` for an error message."""
        parts = []
        if self.missing:
            parts.append("missing " + _listed(self.missing))
        if self.mismatched:
            shown = [f"{k} (file {list(got)}, model {list(want)})" for k, got, want in self.mismatched]
            parts.append("shape mismatch " + _listed(shown))
        if self.unexpected:
            parts.append("unexpected " + _listed(self.unexpected))
        return "; ".join(parts)


def _listed(items: list[str]) -> str:
    text = ", ".join(items[:_SHOWN])
    return text + (f" ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def _strip_to_match(key: str, reference: Mapping[str, object]) -> tuple[str, int]:
    """Strip known prefixes from ``key`` until it names a reference key; else strip them all."""
    stripped = 0
    while key not in reference:
        prefix = next((p for p in STRIP_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            break
        key = key[len(prefix):]
        stripped += 1
    return key, stripped


def align_state_dict(
    state: Mapping[str, torch.Tensor],
    reference: Mapping[str, tuple[int, ...]],
    top_level: set[str],
) -> tuple[dict[str, torch.Tensor], KeyReport]:
    """Rename a checkpoint's keys to a model's and report what does not fit.

    Parameters
    ----------
    state : mapping of str to Tensor
        Keys as stored in the file.
    reference : mapping of str to tuple of int
        The model's state-dict keys and shapes.
    top_level : set of str
        Names of the model's top-level modules (keys under them that the model
        lacks are reported as unexpected: they point to another architecture).

    Returns
    -------
    aligned : dict of str to Tensor
        The reference keys found in the file, with their tensors.
    report : KeyReport
        Missing reference keys, keys whose shapes differ, and unexpected keys.

    Notes
    -----
    Each key loses known wrapper prefixes (``STRIP_PREFIXES``, repeatedly, e.g.
    ``model.resnet.conv1.weight`` -> ``conv1.weight``) only as far as needed to
    name a model key; when two file keys land on the same model key, the one that
    needed fewer strips wins. Keys that still name nothing are dropped when they
    belong to a classifier or projection head (``HEAD_MODULES``) or to a module the
    model does not have (other parts of a training wrapper), and reported as
    unexpected when they sit under one of the model's own modules: a
    ``layer1.2.conv1.weight`` given to a ResNet-18 means a deeper network.
    """
    aligned: dict[str, torch.Tensor] = {}
    strips: dict[str, int] = {}
    report = KeyReport()
    for key in sorted(state):
        name, stripped = _strip_to_match(key, reference)
        if name in reference:
            if name not in aligned or stripped < strips[name]:
                aligned[name] = state[key]
                strips[name] = stripped
            continue
        module = name.split(".", 1)[0]
        if module in top_level and module not in HEAD_MODULES:
            report.unexpected.append(name)
    for name, shape in reference.items():
        if name not in aligned:
            report.missing.append(name)
        elif tuple(aligned[name].shape) != tuple(shape):
            report.mismatched.append((name, tuple(aligned[name].shape), tuple(shape)))
    return aligned, report


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a state dict (works on meta tensors)."""
    return {k: tuple(v.shape) for k, v in state.items()}


def guess_architecture(
    state: Mapping[str, torch.Tensor], candidates: list[str], reference_of: Callable[[str], tuple[dict, set]]
) -> str | None:
    """The first candidate architecture whose keys and shapes the file matches exactly, if any."""
    for name in candidates:
        try:
            reference, top_level = reference_of(name)
        except Exception:  # noqa: BLE001 - a candidate that cannot be built is simply not the answer
            continue
        _, report = align_state_dict(state, reference, top_level)
        if report.ok:
            return name
    return None


# EfficientNet-PyTorch (lukemelas/EfficientNet-PyTorch and its Lite ports) names its modules with a
# leading underscore: ``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``, ``_conv_head``, ``_fc``.
_EFFNET_PT_STEM = "_conv_stem.weight"
_EFFNET_PT_HEAD = "_fc."


def is_efficientnet_pytorch(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict uses EfficientNet-PyTorch's key layout (``_conv_stem``, ``_blocks.N``...)."""
    return _EFFNET_PT_STEM in state and any(key.startswith("_blocks.") for key in state)


def _counted(keys: list[str]) -> list[str]:
    return [k for k in keys if not k.endswith("num_batches_tracked")]


def efficientnet_pytorch_to_timm(
    state: Mapping[str, torch.Tensor], reference: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Rename an EfficientNet-PyTorch state dict to a timm EfficientNet's keys.

    Parameters
    ----------
    state : mapping of str to Tensor
        Keys in EfficientNet-PyTorch's layout, in the order the file stores them
        (``torch.save`` keeps the module order).
    reference : mapping of str to tuple of int
        The timm model's keys and shapes, in module order. With ``num_classes=0``
        the file's classifier (``_fc``) is dropped; with a classifier it maps onto it.

    Returns
    -------
    renamed : dict of str to Tensor
        The file's tensors under the reference's keys (empty when they do not fit).
    problem : str or None
        Why the file does not fit the reference, or None when every tensor does.

    Notes
    -----
    Both libraries build the same modules in the same order, so the i-th tensor of
    the file is the i-th of the model (BatchNorm's ``num_batches_tracked`` aside,
    which some files lack). That is checked, not assumed: the counts must agree,
    and at every position the last name component (``weight``, ``bias``,
    ``running_mean``, ``running_var``) and the shape must be the same. A file of
    another size (Lite1 for Lite0: other widths and more blocks) fails at the first
    tensor that differs, which the message names.
    """
    keys = _counted(list(state))
    targets = _counted(list(reference))
    if len(keys) != len(targets):
        keys = [k for k in keys if not k.startswith(_EFFNET_PT_HEAD)]
    for position, (key, target) in enumerate(zip(keys, targets)):
        got, want = tuple(state[key].shape), tuple(reference[target])
        if key.rsplit(".", 1)[-1] != target.rsplit(".", 1)[-1] or got != want:
            return {}, (
                f"tensor {position} of {len(keys)}, {key} {list(got)}, does not fit the model's {target} {list(want)}"
            )
    if len(keys) != len(targets):
        return {}, f"it holds {len(keys)} tensors, the model {len(targets)}"
    return {target: state[key] for key, target in zip(keys, targets)}, None
