"""Parts of a sharded export, and the check that turns them into one dataset at ``sign``.

Each ``export --shard I/N`` run writes one part record per dataset folder, in
``<folder>.parts/I-of-N.json`` beside the folder (never inside it: the dataset
holds only what is published, and the privacy audit refuses anything else).
A part lists the pseudonyms of the shard's slides with what became of each
(``done``, ``empty``: no tissue, nothing to write; ``failed``) and the
settings the shard cut them with. No slide name or path is written.

``sign`` of a folder that has parts signs only when every shard of the same
``N`` has its part, all cut with the same settings, and every listed slide
that is not empty has its file; otherwise it refuses with one line naming the
shard to rerun.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from sic_share._jsonstore import atomic_write_bytes, read_bounded
from sic_share.dataset import SLIDES_DIR
from sic_share.errors import DatasetError

__all__ = ["check_parts", "clear_parts", "parts_dir", "write_part"]

_PART = re.compile(r"(\d+)-of-(\d+)\.json")
_PART_LIMIT = 64 << 20
_SETTING_NAMES = {"model": "model", "size_px": "patch size", "stride_px": "stride", "target_mpp": "target µm/px",
                  "dtype": "embedding dtype", "classes": "classes"}


def parts_dir(folder: str | os.PathLike[str]) -> Path:
    """``<folder>.parts``, beside the dataset folder."""
    folder = Path(folder).resolve()
    return folder.with_name(folder.name + ".parts")


def clear_parts(folder: str | os.PathLike[str]) -> None:
    """Forget an earlier sharded run's parts (a whole run, or ``--force``, supersedes them)."""
    shutil.rmtree(parts_dir(folder), ignore_errors=True)


def _settings(model, options, classes) -> dict:
    return {
        "model": asdict(model),
        "size_px": options.size_px,
        "stride_px": options.stride_px if options.stride_px is not None else options.size_px // 2,
        "target_mpp": options.target_mpp,
        "dtype": options.dtype,
        "classes": list(classes or options.classes or ()),
    }


def write_part(folder: Path, shard: tuple[int, int], model, options, classes, slide_ids: list[str],
               empty: set[str]) -> Path:
    """Record what shard ``shard`` of a run did for ``folder`` (atomically; a rerun replaces it)."""
    i, n = shard
    slides = {}
    for slide_id in slide_ids:
        if (folder / SLIDES_DIR / f"{slide_id}.parquet").exists():
            slides[slide_id] = "done"
        elif slide_id in empty:
            slides[slide_id] = "empty"
        else:
            slides[slide_id] = "failed"
    record = {"shard": [i, n], "settings": _settings(model, options, classes), "slides": slides}
    target = parts_dir(folder) / f"{i}-of-{n}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, json.dumps(record, indent=1, sort_keys=True).encode())
    return target


def _describe(setting: str, value) -> str:
    if setting == "model":
        return str(value.get("id"))
    return str(value)


def check_parts(folder: str | os.PathLike[str]) -> int | None:
    """Check that the parts beside ``folder`` make one complete dataset; the number of shards, or None.

    Raises
    ------
    DatasetError
        One line naming the first problem: a shard without its part, parts of
        two shardings, a shard cut with other settings, a slide of the list that
        failed or whose file is gone, a slide file that no shard listed.
    """
    folder = Path(folder)
    where = parts_dir(folder)
    if not where.is_dir():
        return None
    parts: dict[int, dict] = {}
    counts: set[int] = set()
    for path in sorted(where.iterdir()):
        match = _PART.fullmatch(path.name)
        if not match:
            continue
        try:
            record = json.loads(read_bounded(path, _PART_LIMIT, "shard part"))
            slides, settings = dict(record["slides"]), dict(record["settings"])
        except (OSError, ValueError, KeyError, TypeError):
            raise DatasetError(f"shard part {path} cannot be read: rerun export --shard "
                               f"{match[1]}/{match[2]} to write it again") from None
        i, n = int(match[1]), int(match[2])
        counts.add(n)
        parts[i] = {"slides": slides, "settings": settings, "n": n}
    if not parts:
        return None
    if len(counts) > 1:
        a, b = sorted(counts)[:2]
        raise DatasetError(f"{where} holds parts of two shardings (.../{a} and .../{b}): delete the folder and "
                           "rerun every shard with one N")
    (n,) = counts
    for i in range(n):
        if i not in parts:
            raise DatasetError(f"shard {i}/{n} has not finished: {where} has no part {i}-of-{n}.json; run "
                               f"export --shard {i}/{n} with the same slides and --out, then sign")
    first = parts[0]["settings"]
    for i in range(1, n):
        settings = parts[i]["settings"]
        for key, name in _SETTING_NAMES.items():
            if settings.get(key) != first.get(key):
                old, new = _describe(key, first.get(key)), _describe(key, settings.get(key))
                if key == "model" and old == new:
                    old, new = "one set of weights, layer or preprocessing", "another"
                raise DatasetError(f"shard {i}/{n} was cut with {name} {new}, shard 0/{n} with {old}: one "
                                   "dataset is one model on one grid; rerun every shard with one set of settings "
                                   "(into a new --out), then sign")
    listed: dict[str, int] = {}
    for i in range(n):
        for slide_id, status in parts[i]["slides"].items():
            listed[slide_id] = i
            present = (folder / SLIDES_DIR / f"{slide_id}.parquet").exists()
            if status == "empty" or present:
                continue
            why = "failed in that run" if status == "failed" else "has no file any more"
            raise DatasetError(f"slide {slide_id} of shard {i}/{n} is missing ({why}): rerun export --shard {i}/{n} "
                               f"('sic-share slides lookup {slide_id}' names the slide), then sign")
    for path in sorted((folder / SLIDES_DIR).glob("*.parquet")):
        if path.stem not in listed:
            raise DatasetError(f"slides/{path.name} is in no shard's list: it comes from another run; delete it, "
                               f"or rerun the shards with the slides it belongs to, then sign")
    return n
