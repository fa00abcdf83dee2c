"""Named hubs: ``sic-share hub add NAME URL --endpoint-url ...``, then ``--hub NAME`` everywhere.

The config file (``hubs.json`` in the config folder) holds URLs, endpoints and
regions only. Credentials are never stored by sic-share: they come from the
usual AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``~/.aws/credentials``), as for the aws CLI, boto3, s3fs and DuckDB.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sic_share._jsonstore import load_json, not_written_by_us, save_json
from sic_share._paths import config_dir, default_hub_url
from sic_share.dataset import check_name
from sic_share.errors import HubError

__all__ = ["HubConfig", "add_hub", "list_hubs", "remove_hub", "resolve_hub"]

# s3fs reads ahead 50 MiB per open file by default, which turns a column-pruned
# Parquet read into a full download; whole-file copies (publish, pull) do not
# need read-ahead either.
S3_STORAGE_OPTIONS: dict[str, Any] = {"default_block_size": 1 << 20, "default_cache_type": "none"}


@dataclass(frozen=True)
class HubConfig:
    """A named hub: where it is and how to reach it (never who you are)."""

    name: str
    url: str
    endpoint_url: str | None = None
    region: str | None = None


_FIELDS = ("name", "url", "endpoint_url", "region")


def _path(path: str | os.PathLike[str] | None) -> Path:
    return Path(path) if path is not None else config_dir() / "hubs.json"


def list_hubs(path: str | os.PathLike[str] | None = None) -> list[HubConfig]:
    """Named hubs from the config file; one that does not hold what ``add_hub`` writes is one error naming it."""
    where = _path(path)
    data = load_json(where, {"hubs": []}, what="a hub config")
    if not isinstance(data, dict) or not isinstance(data.get("hubs"), list):
        raise not_written_by_us(where, "a hub config", 'no list "hubs" at the top')
    hubs = []
    for i, entry in enumerate(data["hubs"], 1):
        if (not isinstance(entry, dict) or not {"name", "url"} <= set(entry) <= set(_FIELDS)
                or not isinstance(entry["name"], str) or not isinstance(entry["url"], str)
                or not all(isinstance(entry.get(f), (str, type(None))) for f in _FIELDS)):
            raise not_written_by_us(where, "a hub config", f"hub {i} is not an object of strings {', '.join(_FIELDS)}")
        hubs.append(HubConfig(**entry))
    return hubs


def add_hub(name: str, url: str, *, endpoint_url: str | None = None, region: str | None = None,
            path: str | os.PathLike[str] | None = None) -> HubConfig:
    """Add or replace a named hub."""
    check_name(name, "hub name")
    if "://" not in url and not url.startswith("/"):
        raise HubError(f"hub URL {url!r} should be s3://BUCKET[/PREFIX], file:///PATH or an absolute folder")
    if any(part in url for part in ("@", "?")) or "aws_secret" in url.lower():
        raise HubError("a hub URL must not carry credentials: use AWS_PROFILE or the AWS_* variables")
    entry = HubConfig(name, url.rstrip("/") or url, endpoint_url, region)
    hubs = [h for h in list_hubs(path) if h.name != name] + [entry]
    save_json(_path(path), {"hubs": [asdict(h) for h in hubs]})
    return entry


def remove_hub(name: str, path: str | os.PathLike[str] | None = None) -> HubConfig:
    hubs = list_hubs(path)
    found = [h for h in hubs if h.name == name]
    if not found:
        raise HubError(f"no hub named {name!r}: see 'sic-share hub ls'")
    save_json(_path(path), {"hubs": [asdict(h) for h in hubs if h.name != name]})
    return found[0]


def resolve_hub(hub: str | None, path: str | os.PathLike[str] | None = None) -> tuple[str, dict[str, Any]]:
    """Turn ``--hub`` (a configured name, a URL, or None) into ``(url, storage_options)``.

    None means ``$SIC_SHARE_HUB`` or the local default hub. For ``s3://`` URLs
    the storage options turn s3fs's read-ahead off and carry the configured
    endpoint and region; otherwise botocore's own ``AWS_ENDPOINT_URL`` and
    ``AWS_DEFAULT_REGION`` apply.
    """
    url = hub or default_hub_url()
    options: dict[str, Any] = {}
    named = {h.name: h for h in list_hubs(path)}
    if url in named:
        entry = named[url]
        url = entry.url
        if entry.endpoint_url:
            options["endpoint_url"] = entry.endpoint_url
        if entry.region:
            options["client_kwargs"] = {"region_name": entry.region}
    if url.startswith(("s3://", "s3a://")):
        options = {**S3_STORAGE_OPTIONS, **options}
    elif "://" not in url and "/" not in url and not url.startswith(".") and not os.path.isdir(url):
        raise HubError(
            f"no hub named {url!r}: add it with 'sic-share hub add {url} URL', or give a URL or a folder (./{url})"
        )
    return url, options
