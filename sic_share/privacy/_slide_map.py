"""The holder's private slide map: which slide file each pseudonym stands for.

Results come back keyed by pseudonym (a GeoJSON for slide ``4356d3d39c40a6b4``);
the hospital must find the slide to open it in QuPath. ``export`` and ``import``
record every slide they pseudonymise in ``slide-map.json`` beside the holder
secret (mode 0600). It never enters a dataset: ``audit`` refuses any dataset
that contains a name it holds.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from sic_share._fsutil import has_scheme
from sic_share._jsonstore import STATE_LIMIT, atomic_write_bytes, read_bounded, wait_for_lock
from sic_share._paths import keys_dir
from sic_share.errors import SicShareError

__all__ = ["SlideEntry", "SlideMap"]

_MIN_PREFIX = 4
_LOCK_TIMEOUT_S = 60.0


def _where(location: str) -> str:
    """How the map records where a slide was: an absolute local path, or its URL without secrets.

    A URL stays a URL (``Path(url)`` would mangle ``s3://b/x.svs`` into
    ``<cwd>/s3:/b/x.svs``), with its user name and password, query string and
    fragment removed: a presigned URL (S3 ``X-Amz-Signature``, a GCS signature,
    an Azure SAS ``sig=``) carries its credential in the query, and a
    ``https://user:pass@host/`` URL in its user part. What stays (scheme, host,
    port, path) names the object for the holder without being able to open it;
    a presigned URL expires anyway. fsspec chains (``simplecache::s3://...``)
    are cleaned link by link; ``file://`` is a local path.
    """
    text = os.fspath(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if not any(has_scheme(link) for link in text.split("::")):
        return str(Path(text).resolve())
    links = []
    for link in text.split("::"):
        if has_scheme(link):
            parts = urllib.parse.urlsplit(link)
            host = parts.netloc.rpartition("@")[2]
            link = urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
        links.append(link)
    return "::".join(links)


@dataclass(frozen=True)
class SlideEntry:
    """One pseudonymised slide: its pseudonym, the name it was made from, and where the file was."""

    slide_id: str
    name: str  # the source stem the pseudonym is the HMAC of
    path: str  # the file as the holder gave it (absolute), last time it was seen
    seen: str  # ISO time of the last export or import


class SlideMap:
    """``slide name <-> slide_id`` for the holder, in ``<keys folder>/slide-map.json``.

    Parameters
    ----------
    path : path-like, optional
        Defaults to ``slide-map.json`` in the keys folder (``$SIC_SHARE_HOME/config/keys``).

    Notes
    -----
    Keyed by slide id: one name has one id per holder secret, so a holder who uses
    two secrets finds both ids under the name. Writes are atomic (temporary file,
    then rename) and the file is created with mode 0600. :meth:`record` reads,
    merges and writes under an exclusive ``flock`` on ``.slide-map.json.lock``
    beside the map, so processes that record at once (``export --shard`` tasks
    started together on one file system) keep each other's entries; where the
    file system has no locks, records are made unlocked (the last write wins).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else keys_dir() / "slide-map.json"

    @classmethod
    def beside(cls, secret_path: str | os.PathLike[str] | None) -> SlideMap:
        """The map kept next to a holder secret (the default map for the default secret)."""
        return cls(Path(secret_path).parent / "slide-map.json" if secret_path is not None else None)

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(read_bounded(self.path, STATE_LIMIT, "slide map"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            raise SicShareError(f"slide map {self.path} cannot be read ({exc}): restore it from backup") from None
        return data.get("slides", {}) if isinstance(data, dict) else {}

    def entries(self) -> list[SlideEntry]:
        """Every recorded slide, sorted by name then id."""
        return sorted((SlideEntry(sid, **row) for sid, row in self._load().items()), key=lambda e: (e.name, e.slide_id))

    def record(self, pairs: list[tuple[str, str, str]]) -> None:
        """Record ``(slide_id, source stem, file path or URL)`` triples (a no-op for an empty list).

        A local path is recorded absolute; a URL as a URL without its credentials,
        query string or fragment (see :func:`_where`).
        """
        if not pairs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            slides = self._load()
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            for slide_id, name, path in pairs:
                slides[slide_id] = {"name": name, "path": _where(path), "seen": now}
            body = json.dumps({"slides": slides}, indent=1, sort_keys=True).encode() + b"\n"
            atomic_write_bytes(self.path, body, mode=0o600)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive lock of the map's read-modify-write (waits up to a minute for another holder)."""
        lock = self.path.with_name(f".{self.path.name}.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SicShareError(f"cannot open the slide map's lock {lock} ({exc.strerror}): check the folder's "
                                "permissions") from None
        try:  # where the file system has no locks, record unlocked
            wait_for_lock(fd, _LOCK_TIMEOUT_S, f"the slide map {self.path} has been locked by another process for "
                          f"over {_LOCK_TIMEOUT_S:g} s: wait for the other export or import to finish, then run again")
            yield
        finally:
            os.close(fd)  # releases the lock

    def names(self) -> list[str]:
        """Every source name recorded (what ``audit`` must not find in a dataset)."""
        return sorted({row["name"] for row in self._load().values()})

    def lookup(self, query: str) -> list[SlideEntry]:
        """Slides whose id is ``query`` (or starts with it, 4+ characters), else whose name or file is it.

        Raises
        ------
        SicShareError
            When nothing matches, naming the map and what was searched.
        """
        entries = self.entries()
        text = query.strip()
        by_id = [e for e in entries if e.slide_id == text.lower()]
        if not by_id and len(text) >= _MIN_PREFIX:
            by_id = [e for e in entries if e.slide_id.startswith(text.lower())]
        if by_id:
            return by_id
        from sic_share.privacy._pseudonym import source_stem

        stem = source_stem(text)
        where = _where(text) if text else text
        by_name = [e for e in entries if e.name == stem or Path(e.path).name == text or e.path in (text, where)]
        if by_name:
            return by_name
        starting = [e for e in entries if text and e.slide_id.startswith(text.lower())]
        if starting:
            raise SicShareError(
                f"{query!r} is too short: a slide id prefix needs at least {_MIN_PREFIX} characters "
                f"({len(starting)} recorded slide ids start with it); see 'sic-share slides ls'"
            )
        raise SicShareError(
            f"no slide {query!r} in the slide map {self.path} ({len(entries)} slides recorded): give a slide id "
            "or file name that 'sic-share export' or 'import' saw on this machine"
        )

    def to_dicts(self, entries: list[SlideEntry]) -> list[dict[str, str]]:
        return [asdict(e) for e in entries]
