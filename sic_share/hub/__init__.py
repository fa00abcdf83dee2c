"""Hubs: publish, pull and list signed datasets on any fsspec URL; named hubs."""

from __future__ import annotations

from sic_share.hub._cache import BlobCache, CacheEntry
from sic_share.hub._config import HubConfig, add_hub, list_hubs, remove_hub, resolve_hub
from sic_share.hub._info import DatasetInfo, dataset_info
from sic_share.hub._hub import DatasetRef, HubEntry, collect_garbage, fetch_slides, list_datasets, open_manifest, parse_ref, publish, pull

__all__ = [
    "BlobCache",
    "CacheEntry",
    "DatasetInfo",
    "dataset_info",
    "DatasetRef",
    "HubConfig",
    "HubEntry",
    "add_hub",
    "collect_garbage",
    "fetch_slides",
    "list_datasets",
    "list_hubs",
    "open_manifest",
    "parse_ref",
    "publish",
    "pull",
    "remove_hub",
    "resolve_hub",
]
