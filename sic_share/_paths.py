"""Where sic-share keeps its state: keys, trust store, verified versions, default hub.

``SIC_SHARE_HOME`` puts everything under one folder (tests, containers). Without it
the XDG base directories are used: config (keys, trust) under
``$XDG_CONFIG_HOME/sic-share``, data (default hub) under
``$XDG_DATA_HOME/sic-share`` and downloaded files under ``$XDG_CACHE_HOME/sic-share``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "config_dir", "data_dir", "keys_dir", "default_hub_url"]


def _home_override() -> Path | None:
    value = os.environ.get("SIC_SHARE_HOME")
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    """Folder of the trust store and of the verified-versions record."""
    home = _home_override()
    if home is not None:
        return home / "config"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sic-share"


def data_dir() -> Path:
    """Folder of the default hub."""
    home = _home_override()
    if home is not None:
        return home / "data"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sic-share"


def cache_dir() -> Path:
    """Folder of downloaded dataset files, keyed by sha256 (``sic-share cache ls|clear``)."""
    home = _home_override()
    if home is not None:
        return home / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sic-share"


def keys_dir() -> Path:
    """Folder of the holder's signing keys and pseudonym secret."""
    return config_dir() / "keys"


def default_hub_url() -> str:
    """The hub used when none is named: ``$SIC_SHARE_HUB`` or a local folder."""
    return os.environ.get("SIC_SHARE_HUB") or str(data_dir() / "hub")
