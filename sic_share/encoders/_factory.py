"""``create_encoder``: registered names first, then timm."""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from sic_share.encoders._base import Encoder
from sic_share.encoders._registry import encoder_factory, is_registered, registered_names
from sic_share.encoders._timm import create_timm_encoder, is_timm_name
from sic_share.errors import EncoderError

__all__ = ["create_encoder"]


def _unknown(name: str) -> EncoderError:
    known = ", ".join(registered_names())
    hint = ""
    try:
        import timm

        close = difflib.get_close_matches(name, registered_names() + timm.list_models(), n=3, cutoff=0.75)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
    except ImportError:
        pass
    return EncoderError(
        f"unknown model {name!r}{hint}: use {known}, a timm name (see 'sic-share models' or "
        "timm.list_models()) or hf-hub:org/name"
    )


def create_encoder(
    name: str,
    *,
    weights: str | Path | None = None,
    layer: str | None = None,
    device: str | torch.device = "cpu",
) -> Encoder:
    """Create an encoder by name.

    Parameters
    ----------
    name : str
        A registered name (``handcrafted``), a timm architecture, optionally with a
        pretrained tag (``resnet50``, ``resnet50.a1_in1k``), or ``hf-hub:org/name``.
    weights : str or Path, optional
        A local weights file (safetensors or torch; raw state dict or nested under
        ``state_dict``/``model``/``teacher``; Lightning/DDP prefixes are stripped).
        Without it, timm's pretrained weights are used (downloaded or from the cache).
    layer : str, optional
        Take the representation from this feature module (e.g. ``layer3`` of a
        ResNet-50, 1024-d, as CLAM and TRIDENT do), global-average pooled.
    device : str or torch.device, default="cpu"
        ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns
    -------
    Encoder
        Call it on uint8 (B, 3, H, H) patches to get float32 (B, dim) embeddings.

    Raises
    ------
    EncoderError
        Unknown name, unknown layer, weights that do not fit the model, weights that
        are neither cached nor downloadable, or a device this machine lacks.

    Notes
    -----
    Timm models are built with ``num_classes=0`` (global-pooled features) or
    ``features_only=True, out_indices=[i]`` for ``layer``; ``info().source`` is
    ``timm``, ``hf-hub``, or ``local`` when a weights file was given, whose sha256
    is then recorded. Weights files are checked strictly against the backbone:
    every parameter present with its shape; only head keys (``fc``, ``head``,
    ``classifier``, ...) and modules the network lacks are dropped. A bare timm
    name loaded with pretrained weights records the tag it resolved to in
    ``info().id`` (``resnet18`` -> ``resnet18.a1_in1k``): timm's default weights
    for a name change between releases.

    Pretrained weights come from the Hugging Face cache (``HF_HOME``) or are
    downloaded. When the Hub's host name does not resolve (an air-gapped node, no
    proxy set), the cache is read in offline mode at once instead of letting
    huggingface_hub retry each file for about 20 s; missing weights then fail
    with one sentence naming ``--weights`` and ``HF_HOME``.

    Examples
    --------
    >>> enc = create_encoder("handcrafted")
    >>> enc(torch.zeros(2, 3, 256, 256, dtype=torch.uint8)).shape
    torch.Size([2, 40])
    """
    if not isinstance(name, str) or not name:
        raise EncoderError(f"model name {name!r} is empty: pass --model NAME (e.g. handcrafted or resnet50)")
    if is_registered(name):
        return encoder_factory(name)(weights=weights, layer=layer, device=device)
    if not is_timm_name(name):
        raise _unknown(name)
    return create_timm_encoder(name, weights=weights, layer=layer, device=device)
