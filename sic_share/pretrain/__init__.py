"""SimCLR pretraining on a data holder's own slides (needs the ``export`` and ``pretrain`` extras).

>>> from sic_share.pretrain import PretrainOptions, pretrain
>>> report = pretrain(["slides/"], "simclr.pt", PretrainOptions(epochs=20))  # doctest: +SKIP

The checkpoint is a weights file export reads as it is:
``sic-share export slides/ --model efficientnet_lite0.in1k --weights simclr.pt``.
"""

from __future__ import annotations

from sic_share.pretrain._checkpoint import RECIPE_KEY
from sic_share.pretrain._data import Augmentations
from sic_share.pretrain._train import PretrainOptions, PretrainProgress, PretrainReport, pretrain

__all__ = [
    "RECIPE_KEY",
    "Augmentations",
    "PretrainOptions",
    "PretrainProgress",
    "PretrainReport",
    "pretrain",
]
