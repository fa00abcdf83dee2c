"""The ``Encoder`` interface and what every encoder shares: device choice, batch checks, resizing."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from sic_share._cores import usable_cores
from sic_share.dataset import ModelInfo
from sic_share.errors import EncoderError

__all__ = ["Encoder", "resolve_device", "resize_square"]

_RESIZE_MODES = ("bilinear", "bicubic")
_threads_configured = False


def _configure_cpu_threads() -> None:
    """Use every core this process may run on, once, unless the user set ``OMP_NUM_THREADS``."""
    global _threads_configured
    if _threads_configured:
        return
    _threads_configured = True
    if "OMP_NUM_THREADS" in os.environ:
        return
    cores = usable_cores()
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``device`` into a ``torch.device`` this machine has.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    torch.device

    Raises
    ------
    EncoderError
        When the name is not a device, or names a GPU torch cannot see.

    Notes
    -----
    The first time a CPU device is resolved, torch's intra-op thread count is set to
    the number of cores this process may use (``os.sched_getaffinity``), unless
    ``OMP_NUM_THREADS`` is set, in which case the user's choice stands.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise EncoderError(f"device {device!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EncoderError(
                f"CUDA was asked for (device={str(device)!r}) but torch sees no GPU (torch {torch.__version__}; "
                "check the driver and CUDA_VISIBLE_DEVICES): use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise EncoderError(
                f"device {str(device)!r} was asked for but torch sees {count} GPU(s): use cuda:0 to cuda:{count - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise EncoderError(f"device {str(device)!r} was asked for but torch sees no Apple GPU: use --device cpu")
    elif dev.type == "cpu":
        _configure_cpu_threads()
    else:
        raise EncoderError(f"device {str(device)!r} is not supported: use cpu, cuda, cuda:N or mps")
    return dev


def resize_square(x: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Antialiased resize of a float batch to ``size`` x ``size``, values kept in [0, 255].

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W), float
        Pixel values in [0, 255].
    size : int
        Output side.
    interpolation : {"bilinear", "bicubic"}
        Filter; antialiased when shrinking (as PIL does).

    Returns
    -------
    Tensor of shape (B, C, size, size)
        The input itself when it already has that size.

    Notes
    -----
    Bicubic filtering overshoots near edges; the result is clamped to [0, 255] as
    PIL's uint8 resize clamps, so the values match what a timm eval transform on a
    PIL image would feed the network (up to PIL's rounding to integers).
    """
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    out = F.interpolate(x, size=(size, size), mode=interpolation, antialias=True, align_corners=False)
    return out.clamp_(0.0, 255.0) if interpolation == "bicubic" else out


class Encoder(ABC):
    """Turns RGB patches into fixed-length embeddings.

    Subclasses set ``name``, ``dim``, ``input_size`` and ``device``, implement
    :meth:`info` and :meth:`_forward`, and move their parameters in :meth:`_move`.

    Attributes
    ----------
    name : str
        The name the encoder was created with.
    dim : int
        Embedding length D.
    input_size : int
        Side of the square image the network sees after resizing.
    device : torch.device
        Where the computation runs.
    """

    name: str
    dim: int
    input_size: int
    device: torch.device

    @abstractmethod
    def info(self) -> ModelInfo:
        """What produced the embeddings, for the dataset's metadata (JSON-serialisable)."""

    @abstractmethod
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Embed a checked uint8 batch already on ``self.device``; runs under inference mode."""

    def _move(self, device: torch.device) -> None:
        """Move parameters and buffers to ``device`` (nothing to move by default)."""

    def to(self, device: str | torch.device) -> Encoder:
        """Move the encoder to ``device`` and return it.

        Raises
        ------
        EncoderError
            When the device does not exist on this machine.
        """
        dev = resolve_device(device)
        self._move(dev)
        self.device = dev
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Embed a batch of patches.

        Parameters
        ----------
        batch : Tensor of shape (B, 3, H, W), uint8
            RGB patches, any square side H = W, on ``self.device`` or the CPU.

        Returns
        -------
        Tensor of shape (B, dim), float32, on ``self.device``
            One embedding per patch.

        Raises
        ------
        EncoderError
            When the batch is not a uint8 (B, 3, H, W) tensor of square patches.
        """
        if not isinstance(batch, torch.Tensor):
            raise EncoderError(f"{self.name} takes a torch.Tensor batch, got {type(batch).__name__}")
        if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[2] != batch.shape[3]:
            raise EncoderError(
                f"{self.name} takes uint8 RGB patches of shape (B, 3, H, H), got {batch.dtype} "
                f"{tuple(batch.shape)}: pass square RGB patches as uint8"
            )
        batch = batch.to(self.device, non_blocking=True)
        with torch.inference_mode():
            if batch.shape[0] == 0:
                return torch.empty((0, self.dim), dtype=torch.float32, device=self.device)
            return self._forward(batch).float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={str(self.device)!r})"
