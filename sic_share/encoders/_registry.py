"""Registry of named encoders; names it does not hold go to timm (see ``_factory``)."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from sic_share.encoders._base import Encoder

__all__ = ["register_encoder", "list_encoders", "is_registered", "registered_names", "encoder_factory"]

EncoderFactory = Callable[..., "Encoder"]
_factories: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Register a factory under ``name``.

    Parameters
    ----------
    name : str
        The name ``create_encoder`` will know it by.

    Returns
    -------
    callable
        A decorator that registers and returns the factory unchanged. The factory is
        called as ``factory(weights=..., layer=..., device=...)`` and returns an
        :class:`Encoder`.

    Raises
    ------
    ValueError
        When ``name`` is already registered (a programming error, not a user one).
    """

    def decorator(factory: EncoderFactory) -> EncoderFactory:
        if name in _factories:
            raise ValueError(f"encoder {name!r} is already registered")
        _factories[name] = factory
        return factory

    return decorator


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered (non-timm) encoder."""
    return name in _factories


def registered_names() -> list[str]:
    """Registered encoder names, sorted."""
    return sorted(_factories)


def encoder_factory(name: str) -> EncoderFactory:
    """The factory registered under ``name`` (``KeyError`` when there is none)."""
    return _factories[name]


def list_encoders(pattern: str = "*") -> list[str]:
    """Names ``create_encoder`` accepts that match a wildcard pattern.

    Parameters
    ----------
    pattern : str, default="*"
        ``fnmatch`` pattern, e.g. ``"resnet*"``.

    Returns
    -------
    list of str
        Registered names first (``handcrafted``, ...), then matching timm
        architectures (``timm.list_models(pattern)``; without timm installed, none).
        ``hf-hub:org/name`` names are accepted too but cannot be listed offline.
    """
    names = [name for name in sorted(_factories) if fnmatch.fnmatchcase(name, pattern)]
    try:
        import timm
    except ImportError:
        return names
    return names + [name for name in timm.list_models(pattern) if name not in _factories]
