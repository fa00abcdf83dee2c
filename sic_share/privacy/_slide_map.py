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
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from sic_share._jsonstore import STATE_LIMIT, atomic_write_bytes, read_bounded
from sic_share._paths import keys_dir
from sic_share.errors import SicShareError

__all__ = ["SlideEntry", "SlideMap"]

_MIN_PREFIX = 4


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
    then rename) and the file is created with mode 0600.
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
        """Record ``(slide_id, source stem, file path)`` triples (a no-op for an empty list)."""
        if not pairs:
            return
        slides = self._load()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for slide_id, name, path in pairs:
            slides[slide_id] = {"name": name, "path": str(Path(path).resolve()), "seen": now}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"slides": slides}, indent=1, sort_keys=True).encode() + b"\n"
        atomic_write_bytes(self.path, body, mode=0o600)

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
        by_name = [e for e in entries if e.name == stem or Path(e.path).name == text or e.path == text]
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
