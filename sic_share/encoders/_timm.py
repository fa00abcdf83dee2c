"""Encoders built by timm: registry names, ``hf-hub:`` names, local weights files, layer cuts."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sic_share.dataset import ModelInfo
from sic_share.encoders._base import Encoder, resize_square, resolve_device
from sic_share.encoders._weights import (
    KeyReport,
    align_state_dict,
    efficientnet_pytorch_to_timm,
    file_sha256,
    guess_architecture,
    is_efficientnet_pytorch,
    read_state_dict,
    shapes_of,
)
from sic_share._failures import exception_chain as _chain
from sic_share.errors import EncoderError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TimmEncoder", "create_timm_encoder", "is_timm_name", "source_of"]

_HUB_PREFIXES = ("hf-hub:", "hf_hub:")
_LOCAL_PREFIXES = ("local-dir:",)
_INTERPOLATIONS = ("bilinear", "bicubic")
# Exception class names (anywhere in the cause chain or MRO) that mean "the network is not there".
_NETWORK_ERRORS = {
    "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
    "TransportError",
    "ConnectError",
    "ConnectTimeout",
    "NetworkError",
    "TimeoutException",
    "ProxyError",
    "MaxRetryError",
    "NewConnectionError",
}


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise EncoderError(
            "timm models need the export extra: pip install 'sic-share[export]' (or use --model handcrafted)"
        ) from None
    return timm


def source_of(name: str) -> str:
    """``hf-hub`` for ``hf-hub:org/name``, ``local`` for ``local-dir:PATH``, else ``timm``."""
    if name.startswith(_HUB_PREFIXES):
        return "hf-hub"
    if name.startswith(_LOCAL_PREFIXES):
        return "local"
    return "timm"


def is_timm_name(name: str) -> bool:
    """Whether timm can build ``name``: a registry architecture (tag allowed) or a Hub/local source."""
    if name.startswith(_HUB_PREFIXES + _LOCAL_PREFIXES):
        return len(name.partition(":")[2]) > 0
    timm = _import_timm()
    try:
        return bool(timm.is_model(name))
    except (ValueError, TypeError):
        return False


def _is_network_error(exc: BaseException) -> bool:
    for err in _chain(exc):
        if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror, urllib.error.URLError)):
            return True
        if {cls.__name__ for cls in type(err).__mro__} & _NETWORK_ERRORS:
            return True
    return False


def _short(exc: BaseException, limit: int = 100) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _network_reason(exc: BaseException, unreachable: str | None = None) -> str:
    if unreachable:
        return unreachable
    chain = _chain(exc)
    if any(type(err).__name__ == "OfflineModeIsEnabled" for err in chain):
        return "HF_HUB_OFFLINE is set"
    innermost = chain[-1]
    if type(innermost).__name__ == "LocalEntryNotFoundError":
        return "not in the cache and downloads are off"
    return _short(innermost)


def _creation_error(name: str, exc: BaseException, unreachable: str | None = None) -> EncoderError:
    """Turn what timm or huggingface_hub raised while building ``name`` into one sentence."""
    if _is_network_error(exc):
        reason = _network_reason(exc, unreachable)
        return EncoderError(
            f"weights for {name} are not in the local cache and cannot be downloaded ({reason}): "
            "pass --weights FILE or warm the cache (HF_HOME) on a machine with network"
        )
    names = {cls.__name__ for err in _chain(exc) for cls in type(err).__mro__}
    if "HfHubHTTPError" in names:
        return EncoderError(
            f"{name} cannot be fetched from the Hugging Face Hub ({_short(exc)}): check the name, log in "
            "(HF_TOKEN) for gated models, or pass --weights FILE"
        )
    text = str(exc)
    if "No pretrained weights exist" in text or "Invalid pretrained tag" in text:
        return EncoderError(
            f"timm has no pretrained weights for {name} ({_short(exc)}): pass --weights FILE or pick a name "
            "from timm.list_models(pretrained=True)"
        )
    return EncoderError(f"timm cannot build {name} ({_short(exc)}): check the name and options, or upgrade timm")


def _hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached when that is certain at once (its host name does
    not resolve and no proxy is set); None when it may be reachable or offline mode is already on."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    if constants.HF_HUB_OFFLINE or any(
        os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    ):
        return None
    host = urllib.parse.urlsplit(constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"no network: {host} does not resolve"
    return None


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """Switch huggingface_hub to offline mode for one call, so that it reads its cache at once.

    Without network and without ``HF_HUB_OFFLINE``, huggingface_hub retries each file
    for about 20 s before it falls back to the cache; when the Hub's host does not even
    resolve, those retries cannot succeed.
    """
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _needs_hub(name: str, kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("pretrained")) or source_of(name) == "hf-hub"


def _create(name: str, **kwargs: Any) -> nn.Module:
    timm = _import_timm()
    unreachable = _hub_unreachable() if _needs_hub(name, kwargs) else None
    try:
        with _hub_offline(unreachable is not None):
            return timm.create_model(name, **kwargs)
    except Exception as exc:  # noqa: BLE001 - timm and the Hub raise many types; all become one sentence
        raise _creation_error(name, exc, unreachable) from exc


def _create_meta(name: str, **kwargs: Any) -> nn.Module:
    """Build without allocating weights (meta device) when the model allows it; on the CPU otherwise."""
    timm = _import_timm()
    unreachable = _hub_unreachable() if _needs_hub(name, kwargs) else None
    try:
        with torch.device("meta"), _hub_offline(unreachable is not None):
            return timm.create_model(name, pretrained=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - some models compute on tensors in __init__, which meta cannot
        if _is_network_error(exc) or "Unknown model" in str(exc):
            raise _creation_error(name, exc, unreachable) from exc  # not the meta device's fault: no retry
        return _create(name, pretrained=False, **kwargs)


def _reference(name: str) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """Key shapes and top-level module names of the full ``num_classes=0`` model."""
    return _describe(_create_meta(name, num_classes=0))


def _describe(model: nn.Module) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    return shapes_of(model.state_dict()), {child for child, _ in model.named_children()}


def _family(name: str) -> list[str]:
    """Same-family depth variants of an architecture (resnet18 -> resnet26, resnet34, resnet50, ...)."""
    if source_of(name) != "timm":
        return []
    arch = name.split(".", 1)[0]
    match = re.fullmatch(r"([a-z_]+?)(\d+)", arch)
    if not match:
        return []
    timm = _import_timm()
    pattern = re.compile(re.escape(match.group(1)) + r"\d+")
    return [m for m in timm.list_models(match.group(1) + "*") if pattern.fullmatch(m) and m != arch][:12]


def _mismatch_error(path: Path, name: str, state: dict, aligned: dict, report: KeyReport) -> EncoderError:
    if not aligned:
        first = sorted(state)[0]
        hint = f"none of its {len(state)} keys (e.g. {first!r}) names a {name} parameter"
    elif report.mismatched or report.unexpected:
        # keys of the wrong shape or extra blocks: perhaps a sibling depth (a truncated file is not)
        guess = guess_architecture(state, _family(name), _reference)
        hint = f"is it a {guess} checkpoint?" if guess else f"check that it holds {name} weights"
    else:
        hint = f"check that it holds {name} weights"
    return EncoderError(f"{path.name} does not match {name}: {report.describe()}; {hint}")


def _from_efficientnet_pytorch(state: dict, shapes: dict, name: str, path: Path) -> dict:
    """An EfficientNet-PyTorch checkpoint renamed to ``name``'s timm keys, or one line on why it cannot be."""
    renamed, problem = efficientnet_pytorch_to_timm(state, shapes)
    if problem is None:
        return renamed
    guess = next((other for other in _family(name)
                  if efficientnet_pytorch_to_timm(state, _reference(other)[0])[1] is None), None)
    hint = f"is it a {guess} checkpoint?" if guess else f"check that it holds {name} weights"
    raise EncoderError(f"{path.name} is an EfficientNet-PyTorch checkpoint that does not fit {name}: {problem}; {hint}")


def _load_weights(model: nn.Module, name: str, path: Path, reference: nn.Module, layer: str | None) -> None:
    """Load a local weights file into ``model`` (full, or cut at ``layer``), strictly.

    ``reference`` is the full ``num_classes=0`` model (meta tensors suffice): the file is
    checked against it, so a layer-cut model still refuses a file of another architecture.
    """
    state = read_state_dict(path)
    shapes, top_level = _describe(reference)
    if is_efficientnet_pytorch(state):
        state = _from_efficientnet_pytorch(state, shapes, name, path)
    aligned, report = align_state_dict(state, shapes, top_level)
    # BatchNorm's batch counter is unused in eval and absent from some older torchvision files.
    report.missing = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    if not report.ok:
        raise _mismatch_error(path, name, state, aligned, report)
    target = model.state_dict()
    if layer is None:
        remapped = dict(aligned)
    else:
        # Feature wrappers rename modules: FeatureListNet flattens "stages.0" to "stages_0",
        # FeatureGetterNet nests the model under "model.". Match on names with "." and "_" unified.
        by_flat = {k.replace(".", "_"): k for k in aligned}
        remapped = {}
        for key in target:
            flat = key.replace(".", "_")
            source = by_flat.get(flat) or (by_flat.get(flat[len("model_"):]) if key.startswith("model.") else None)
            if source is not None:
                remapped[key] = aligned[source]
            elif not key.endswith("num_batches_tracked"):
                raise EncoderError(
                    f"cannot find {key} of {name} cut at {layer} in {path.name}: export without --layer "
                    "or report this model"
                )
    for key, value in target.items():
        remapped.setdefault(key, value)  # only num_batches_tracked is left to fill
    model.load_state_dict(remapped, strict=True)


def _feature_modules(name: str, reference: nn.Module) -> list[str]:
    """Module names a layer can be taken from (timm's ``feature_info``), e.g. act1, layer1 ... layer4."""
    info = getattr(reference, "feature_info", None)
    modules = [entry.get("module") for entry in info] if isinstance(info, list) else []
    if not modules or not all(isinstance(m, str) for m in modules):
        raise EncoderError(f"{name} does not describe its layers to timm (no feature_info): export without --layer")
    return modules


def native_bf16(device) -> bool:
    """Whether ``device`` is a GPU that computes in bf16 natively (compute capability 8.0, Ampere, or later).

    ``torch.cuda.is_bf16_supported()`` says yes on older GPUs too (V100, T4: it
    counts emulation, much slower than float32 there), and asks about the
    current device rather than this one.
    """
    import torch

    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


class TimmEncoder(Encoder):
    """A timm network as an encoder: global-pooled last features, or a pooled intermediate layer.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model built with ``num_classes=0`` or ``features_only=True,
        out_indices=[i]`` (then ``layer`` names it), in eval mode.
    name : str
        The name it was created from.
    source : str
        ``timm``, ``hf-hub`` or ``local``.
    model_id : str
        What ``info().id`` reports.
    layer : str or None
        The feature module the representation is taken from.
    weights_sha256 : str or None
        Digest of the local weights file.
    device : str or torch.device

    Notes
    -----
    Preprocessing follows timm's data config for the model
    (``timm.data.resolve_data_config``): the whole patch is resized to
    ``input_size`` with the config's interpolation (antialiased), scaled to [0, 1]
    and normalised with its mean and std. Unlike timm's eval transform there is
    no centre crop: a patch is the field of view, and cropping would drop its
    border. With ``crop_pct=1`` timm's own PIL transform gives the same
    embeddings up to uint8 rounding (tested).

    A layer's feature map is averaged over space, whatever its layout (NCHW, or
    NHWC as Swin returns it); for ViTs timm returns the patch tokens as a map, so
    the class token is left out. On CUDA the network runs in channels-last memory
    format, under bf16 autocast where the GPU supports it; outputs are float32.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        source: str,
        model_id: str,
        layer: str | None = None,
        weights_sha256: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        timm = _import_timm()
        config = timm.data.resolve_data_config({}, model=model)
        _, height, width = config["input_size"]
        if height != width:
            raise EncoderError(
                f"{name} takes {height}x{width} inputs and patches are square: choose a model with a square input"
            )
        interpolation = config.get("interpolation", "bicubic")
        self.interpolation = interpolation if interpolation in _INTERPOLATIONS else "bicubic"
        self.mean = tuple(float(v) for v in config["mean"])
        self.std = tuple(float(v) for v in config["std"])
        self.name = name
        self.input_size = int(height)
        self.source = source
        self.model_id = model_id
        self.layer = layer
        self.weights_sha256 = weights_sha256
        self.model = model.eval()
        if layer is None:
            self.dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
            self._output_fmt = None
        else:
            self.dim = int(model.feature_info.channels()[-1])
            self._output_fmt = str(getattr(getattr(model, "output_fmt", "NCHW"), "value", "NCHW"))
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)  # x / 255 - mean) / std  ==  x * scale + shift
        self._shift = -mean / std
        self.device = torch.device("cpu")
        self.to(device)

    def _move(self, device: torch.device) -> None:
        memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.model.to(device=device, memory_format=memory_format)
        self._scale = self._scale.to(device)
        self._shift = self._shift.to(device)
        self._autocast = native_bf16(device)

    def info(self) -> ModelInfo:
        """``ModelInfo`` with the source, weights digest, layer and preprocessing."""
        return ModelInfo(
            id=self.model_id,
            dim=self.dim,
            source=self.source,
            weights_sha256=self.weights_sha256,
            layer=self.layer,
            preprocessing={
                "input_size": self.input_size,
                "mean": list(self.mean),
                "std": list(self.std),
                "interpolation": self.interpolation,
            },
        )

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, H) -> float32 (B, 3, input_size, input_size), resized and normalised."""
        x = resize_square(batch.float(), self.input_size, self.interpolation)
        x = torch.addcmul(self._shift, x, self._scale)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(batch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            out = self.model(x)
        if self.layer is not None:
            out = out[-1]
            if out.ndim == 4:
                out = out.mean(dim=(1, 2) if self._output_fmt == "NHWC" else (2, 3))
            elif out.ndim == 3:
                out = out.mean(dim=1)
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise EncoderError(
                f"{self.name} gave outputs of shape {tuple(out.shape)} instead of (B, {self.dim}): "
                "this model's head is not supported, try --layer"
            )
        return out


def create_timm_encoder(
    name: str,
    *,
    weights: str | Path | None = None,
    layer: str | None = None,
    device: str | torch.device = "cpu",
    model_id: str | None = None,
    source: str | None = None,
    pretrained: bool = True,
) -> TimmEncoder:
    """Build a timm model as an encoder; see :func:`sic_share.encoders.create_encoder`.

    ``model_id`` and ``source`` override what ``info()`` records, for registered
    encoders that are a timm architecture with weights of their own (the weights
    file's sha256 is recorded all the same). ``pretrained=False`` without ``weights``
    builds the architecture with timm's random initialisation (no download), e.g. to
    pretrain it from scratch.
    """
    override_id, override_source = model_id, source
    dev = resolve_device(device)
    source = source_of(name)
    path = Path(weights) if weights is not None else None
    if path is not None and not path.is_file():
        raise EncoderError(f"weights file {path} does not exist: check --weights")
    # the full model without weights (meta tensors): layer names and the keys a file must hold
    reference = _create_meta(name, num_classes=0) if (layer is not None or path is not None) else None
    if layer is None:
        kwargs: dict[str, Any] = {"num_classes": 0}
    else:
        modules = _feature_modules(name, reference)
        if layer not in modules:
            raise EncoderError(f"{name} has no layer {layer!r}: use one of {', '.join(modules)}")
        kwargs = {"features_only": True, "out_indices": [modules.index(layer)]}
    model = _create(name, pretrained=pretrained and path is None, **kwargs)
    model_id = name
    sha256 = None
    if path is not None:
        _load_weights(model, name, path, reference, layer)
        sha256 = file_sha256(path)
        source = "local"
    elif source == "timm" and "." not in name and pretrained:
        tag = (getattr(model, "pretrained_cfg", None) or {}).get("tag")
        model_id = f"{name}.{tag}" if tag else name  # record which weights the bare name resolved to
    return TimmEncoder(
        model, name=name, source=override_source or source, model_id=override_id or model_id, layer=layer,
        weights_sha256=sha256, device=dev,
    )
