"""Hubs: publish, pull and list signed datasets on any fsspec URL."""

from __future__ import annotations

from sic_share.hub._hub import DatasetRef, HubEntry, list_datasets, parse_ref, publish, pull

__all__ = ["DatasetRef", "HubEntry", "list_datasets", "parse_ref", "publish", "pull"]
