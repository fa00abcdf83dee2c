"""Training data for SimCLR: random tissue patches read lazily from many slides, two augmented views each.

Nothing holds pixels beyond the batch being built: the dataset keeps each
slide's patch grid (8 bytes per patch) and reads a patch when a worker asks
for it, through slide handles that the worker opens itself.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Augmentations", "PatchSampler", "SlidePatches", "SlideSource", "TwoViews"]

# Slide handles one worker keeps open. The sampler visits a slide for several patches in a row,
# so a handful suffices; memory stays bounded whatever the number of slides (each OpenSlide
# handle holds its own tile cache).
_OPEN_HANDLES = 4


@dataclass(frozen=True)
class Augmentations:
    """How the two views of a patch are drawn (SimCLR's recipe, tuned for H&E).

    Attributes
    ----------
    min_scale, max_scale : float, default=0.25, 1.0
        Area range of the random resized crop, as a fraction of the patch.
    ratio : tuple of float, default=(3/4, 4/3)
        Aspect-ratio range of the crop.
    flips : bool, default=True
        Random horizontal and vertical flips.
    rotate90 : bool, default=True
        Random rotation by a multiple of 90°. With the flips, all 8 orientations.
    jitter_p : float, default=0.8
        Probability of colour jitter.
    brightness, contrast, saturation, hue : float, default=0.2, 0.2, 0.2, 0.02
        Colour jitter strengths (torchvision's ``ColorJitter``).
    grayscale_p : float, default=0.2
        Probability of a grayscale view.
    blur_p : float, default=0.5
        Probability of a Gaussian blur.
    blur_sigma : tuple of float, default=(0.1, 2.0)
        Blur sigma range, in pixels of the view.

    Notes
    -----
    The differences from SimCLR's ImageNet recipe, and why:

    - crops keep at least a quarter of the patch (SimCLR: 8 %): export always shows
      the network whole patches at one resolution, and an 8 % crop of a 256 px patch
      is magnified 3.5x, a scale the network never sees afterwards;
    - vertical flips and 90° rotations: tissue on a slide has no up or down;
    - mild colour jitter (SimCLR: 0.8 brightness, contrast and saturation, 0.2 hue):
      H&E's two stains carry meaning in their colour (nuclei blue-purple, stroma
      and cytoplasm pink); a 0.2 hue shift turns eosin green. The jitter spans
      stain and scanner variation between labs, not arbitrary colours;
    - the blur is scipy's separable Gaussian filter truncated at three sigmas, not
      torchvision's ``GaussianBlur``, which convolves with the full 2-D kernel: the
      same filter (within one grey level) at a quarter of the cost, measured, and the
      blur was the costliest step of a view.
    """

    min_scale: float = 0.25
    max_scale: float = 1.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flips: bool = True
    rotate90: bool = True
    jitter_p: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples become lists), for the checkpoint's recipe."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class _RandomBlur:
    """Gaussian blur of a uint8 (3, H, W) tensor with probability ``p``, sigma uniform in ``sigma``.

    Draws from torch's RNG like the torchvision steps around it; filters with
    scipy's separable Gaussian (truncated at three sigmas, mirrored edges, as
    torchvision pads), rounding to the nearest grey level.
    """

    def __init__(self, p: float, sigma: tuple[float, float]) -> None:
        self.p = p
        self.sigma = sigma

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from scipy.ndimage import gaussian_filter

        if float(torch.rand(())) >= self.p:
            return x
        s = float(torch.empty(()).uniform_(*self.sigma))
        out = gaussian_filter(x.numpy().astype(np.float32), sigma=(0.0, s, s), truncate=3.0, mode="mirror")
        return torch.from_numpy(np.clip(np.rint(out), 0, 255).astype(np.uint8))


class TwoViews:
    """Callable: a uint8 patch (3, H, W) -> two independently augmented uint8 views (3, S, S).

    Parameters
    ----------
    size : int
        Side of the views: the encoder's input size, so that its preprocessing only
        normalises them.
    augmentations : Augmentations
    """

    def __init__(self, size: int, augmentations: Augmentations) -> None:
        from torchvision.transforms import v2

        a = augmentations
        self.size = size
        self.rotate90 = a.rotate90
        steps: list[Any] = [v2.RandomResizedCrop(size, scale=(a.min_scale, a.max_scale), ratio=a.ratio,
                                                 antialias=True)]
        if a.flips:
            steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
        self.crop = v2.Compose(steps)
        colour: list[Any] = []
        if a.jitter_p > 0:
            colour.append(v2.RandomApply([v2.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue)],
                                         p=a.jitter_p))
        if a.grayscale_p > 0:
            colour.append(v2.RandomGrayscale(p=a.grayscale_p))
        if a.blur_p > 0:
            colour.append(_RandomBlur(a.blur_p, a.blur_sigma))
        self.colour = v2.Compose(colour) if colour else None

    def view(self, patch: torch.Tensor) -> torch.Tensor:
        """One augmented view; draws from torch's global RNG."""
        x = self.crop(patch)  # crop first: the colour transforms then work on the smaller view
        if self.rotate90:
            x = torch.rot90(x, int(torch.randint(4, ())), dims=(-2, -1))
        if self.colour is not None:
            x = self.colour(x)
        return x.contiguous()

    def __call__(self, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(patch), self.view(patch)


@dataclass(frozen=True)
class SlideSource:
    """Where and how to read one slide's patches (no pixels)."""

    path: Path
    mpp: float | None
    level: int
    level_size: int  # patch side at ``level``
    level0_size: int  # patch side in level-0 pixels


class SlidePatches:
    """Map-style dataset: ``(patch_index, seed) -> (view0, view1)``, read and augmented on demand.

    Parameters
    ----------
    sources : sequence of SlideSource
    coords : ndarray of shape (n_patches, 2), int32
        Level-0 patch centres of every slide, concatenated in ``sources`` order.
    offsets : ndarray of shape (n_slides + 1,), int64
        Slide ``s`` owns rows ``offsets[s]:offsets[s + 1]`` of ``coords``.
    views : TwoViews

    Notes
    -----
    ``seed`` makes the two views a function of the sample alone: the same run gives
    the same batches whatever the number of workers, and a resumed run sees what an
    uninterrupted one would have. Each worker opens its own slide handles (at most
    a few at a time), never sharing the parent's.
    """

    def __init__(self, sources: Sequence[SlideSource], coords: np.ndarray, offsets: np.ndarray,
                 views: TwoViews) -> None:
        self.sources = list(sources)
        self.coords = coords
        self.offsets = offsets
        self.views = views
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._pid = os.getpid()

    def reset(self) -> None:
        """Forget handles inherited from the parent process (called in each worker)."""
        self._handles = OrderedDict()
        self._pid = os.getpid()

    def close(self) -> None:
        """Close this process's slide handles."""
        while self._handles:
            self._handles.popitem(last=False)[1].close()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _reader(self, s: int) -> Any:
        from sic_share.slides import open_slide

        if self._pid != os.getpid():
            self.reset()
        if s in self._handles:
            self._handles.move_to_end(s)
        else:
            while len(self._handles) >= _OPEN_HANDLES:
                self._handles.popitem(last=False)[1].close()
            self._handles[s] = open_slide(self.sources[s].path, mpp=self.sources[s].mpp)
        return self._handles[s]

    def patch(self, index: int) -> torch.Tensor:
        """The uint8 patch (3, level_size, level_size) of a global patch index."""
        s = int(np.searchsorted(self.offsets, index, side="right")) - 1
        source = self.sources[s]
        x, y = (int(v) for v in np.round(self.coords[index] - source.level0_size / 2))
        region = self._reader(s).read_region((x, y), source.level, (source.level_size, source.level_size))
        if not region.flags.writeable:  # Pillow-backed arrays are read-only; torch wants to own writable memory
            region = region.copy()
        return torch.from_numpy(region).permute(2, 0, 1)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        patch = self.patch(index)
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone (workers=0)
            torch.manual_seed(seed)
            return self.views(patch)


class PatchSampler:
    """Yields ``(patch_index, seed)`` for one epoch: visits of a few patches of one random slide.

    Parameters
    ----------
    offsets : ndarray of shape (n_slides + 1,)
        Patch index ranges of the slides (see :class:`SlidePatches`).
    samples : int
        Samples per epoch.
    seed : int
        Run seed; the epoch's draw depends on ``(seed, epoch)`` only.
    visit : int, default=16
        Patches drawn from a slide before moving on.

    Notes
    -----
    A slide is picked with probability proportional to its number of patches and
    ``visit`` distinct patches of it are drawn, so every patch is equally likely;
    within an epoch a patch may come twice (from two visits). Visits keep the slide
    opens of a worker to about one per ``visit`` samples (opening an SVS file costs
    as much as reading several patches) and put patches of the same slide into a
    batch, which makes the negatives harder in the way SIC needs: it separates
    tissue within a slide. The sampler runs in the main process; the index stream
    is generated lazily, so memory does not grow with ``samples``.
    """

    def __init__(self, offsets: np.ndarray, samples: int, *, seed: int, visit: int = 16) -> None:
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.samples = int(samples)
        self.seed = int(seed)
        self.visit = int(visit)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the samples of ``epoch`` (0-based) next."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        sizes = np.diff(self.offsets)
        weights = sizes / sizes.sum()
        left = self.samples
        while left > 0:
            s = int(rng.choice(len(sizes), p=weights))
            take = min(self.visit, int(sizes[s]), left)
            picks = rng.choice(int(sizes[s]), size=take, replace=False) + self.offsets[s]
            seeds = rng.integers(0, 2**62, size=take)
            yield from zip(picks.tolist(), seeds.tolist())
            left -= take
