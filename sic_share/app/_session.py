"""The annotation loop on one slide: classes, seeds, undo/redo, the method's result, exports.

A :class:`Session` holds the state the browser edits. Each change records an undo
step and re-runs the chosen method on the cached working matrix; results are kept
by state, so undo and redo show an earlier result at once.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sic_share.app._guard import shown
from sic_share.app._methods import Fit, Method, available_methods, fit_method, prepare_method
from sic_share.app._slide import CachedSlide
from sic_share.errors import SeedError, SicShareError

__all__ = ["EXPORTS", "Session", "SessionError"]

#: Export formats: the writers of ``sic-share sic`` (:func:`sic_share.viz.write_result`), and file names.
#: Named by the method that made the annotation (``<slide>-<method>.*``).
EXPORTS = {
    "geojson": ("geojson", "{slide}-{method}.geojson", "application/geo+json"),
    "tissuumaps": ("tissuumaps", "{slide}-{method}.tissuumaps.csv", "text/csv"),
    "png": ("png", "{slide}-{method}.png", "image/png"),
    "parquet": ("parquet", "{slide}-{method}.parquet", "application/vnd.apache.parquet"),
    "csv": ("csv", "{slide}-{method}.csv", "text/csv"),
}
_DEFAULT_CLASSES = ("background", "lesion")
_KEPT_RESULTS = 64
_MAX_CLASSES = 32


class SessionError(SicShareError, ValueError):
    """A request the loop cannot carry out (unknown class, method, patch index): one sentence for the page."""


@dataclass(frozen=True)
class _State:
    seed_index: np.ndarray  # int64, sorted, unique
    seed_class: np.ndarray  # int8, class index of each
    classes: tuple[tuple[str, str], ...]  # (name, "#rrggbb" chosen for it, or "" for the palette's)
    method: str
    rule: str | None

    def key(self) -> tuple[Any, ...]:
        return (self.seed_index.tobytes(), self.seed_class.tobytes(), len(self.classes), self.method, self.rule)


@dataclass
class _Outcome:
    labels: np.ndarray
    confidence: np.ndarray | None
    message: str
    seconds: float
    rounds: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _chosen(name: str, color: str) -> str:
    """A colour chosen for a class, as ``#rrggbb`` (an unreadable one is one sentence)."""
    from sic_share.viz import class_colors, hex_color

    return hex_color(class_colors([name], {name: color})[0]) if color else ""


def _colours(state: _State) -> tuple[str, ...]:
    """Each class's colour: the one chosen for it, else the palette's for these names.

    The palette is :func:`sic_share.viz.class_colors`, which every writer of ``sic-share sic``
    uses: with the same class names a class has the same colour in the app, its PNG, GeoJSON
    and TissUUmaps exports, and in the CLI's.
    """
    from sic_share.viz import class_colors, hex_color

    names = [n for n, _ in state.classes]
    chosen = {n: c for n, c in state.classes if c}
    return tuple(hex_color(c) for c in class_colors(names, chosen or None))


class Session:
    """The state of one annotation session over a cached slide.

    Parameters
    ----------
    slide : CachedSlide
    classes : sequence of str, optional
        Initial class names; default: the dataset's ground-truth classes, else
        ``background, lesion``. For two classes the first is the negative one.
    random_state : int, default=0
        Seed of every fit (the same seeds give the same annotation).
    """

    def __init__(self, slide: CachedSlide, *, classes: Sequence[str] | None = None, random_state: int = 0) -> None:
        self.slide = slide
        self.random_state = random_state
        self.methods: dict[str, Method] = available_methods()
        names = tuple(classes or slide.metadata.classes or _DEFAULT_CLASSES)
        #: True while the classes are the app's own placeholders: a seeds file loaded first replaces them.
        self._placeholder = not (classes or slide.metadata.classes)
        first = next(iter(self.methods.values()))
        self._state = _State(np.empty(0, np.int64), np.empty(0, np.int8), tuple((n, "") for n in names),
                             first.name, first.rules[0] if first.rules else None)
        self._undo: list[_State] = []
        self._redo: list[_State] = []
        self._results: OrderedDict[tuple[Any, ...], _Outcome] = OrderedDict()
        self._lock = threading.Lock()
        self.revision = 0
        self._X = slide.work_matrix()
        self._prepared: dict[Any, Any] = {}  # seed-independent parts of fits on this slide (fit_method)
        self._prepare_lock = threading.Lock()  # held while _prepared is built (warm, or a fit)
        self._cells: tuple[np.ndarray, np.ndarray] | None = None  # each patch's grid (column, row)

    # -- reading ----------------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._state.classes)

    @property
    def colors(self) -> tuple[str, ...]:
        """``#rrggbb`` per class: the colour chosen for it, else what every other output draws it with."""
        return _colours(self._state)

    @property
    def work_dim(self) -> int:
        """Columns of the matrix the loop clusters (the embeddings' own when at most 64)."""
        return int(self._X.shape[1])

    def seed_labels(self) -> np.ndarray:
        """Seed class per patch (-1 none), int8."""
        dense = np.full(len(self.slide), -1, np.int8)
        dense[self._state.seed_index] = self._state.seed_class
        return dense

    def outcome(self) -> _Outcome:
        """The method's result for the current state (computed when not kept)."""
        with self._lock:
            return self._outcome(self._state)

    def response(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The state as the page draws it: a JSON-able header and the per-patch arrays."""
        with self._lock:
            state = self._state
            result = self._outcome(state)
            seeds = self.seed_labels()
            counts = np.bincount(result.labels[result.labels >= 0].astype(np.int64), minlength=len(state.classes))
            seeded = np.bincount(state.seed_class.astype(np.int64), minlength=len(state.classes))
            meta = {
                "revision": self.revision,
                "classes": [{"name": n, "color": c, "count": int(counts[i]), "seeds": int(seeded[i])}
                            for i, (n, c) in enumerate(zip(self.classes, _colours(state)))],
                "n_seeds": int(state.seed_index.size),
                "method": state.method,
                "rule": state.rule,
                "message": result.message,
                "seconds": result.seconds,
                "rounds": result.rounds,
                "can_undo": bool(self._undo),
                "can_redo": bool(self._redo),
                "has_confidence": result.confidence is not None,
            }
            arrays = {"labels": result.labels, "seeds": seeds}
            if result.confidence is not None:
                arrays["confidence"] = np.round(result.confidence * 255).astype(np.uint8)
                scale, regions = self._least_certain(result)
                arrays["unsure"] = scale.tier
                meta["confidence"] = {**scale.to_json(), "legend": scale.legend(),
                                      "regions": [r.to_json() for r in regions]}
            return meta, arrays

    def _least_certain(self, result: _Outcome) -> tuple[Any, list[Any]]:
        """The confidence layer's tiers and the places to seed next, as ``sic-share sic`` names them.

        Kept with the result (undo shows them at once); the patch grid's cells are computed once per slide.
        """
        from sic_share.viz._confidence import confidence_scale, grid_cells, uncertain_regions

        if "least_certain" not in result.extra:
            if self._cells is None:
                self._cells = grid_cells(self.slide.coords)
            scale = confidence_scale(result.confidence)
            result.extra["least_certain"] = (scale, uncertain_regions(self.slide.coords, scale, result.confidence,
                                                                      cells=self._cells))
        return result.extra["least_certain"]

    # -- changing ---------------------------------------------------------------------------------
    def _change(self, new: _State) -> None:
        with self._lock:
            if new.key() == self._state.key() and new.classes == self._state.classes:
                return
            self._undo.append(self._state)
            self._redo.clear()
            self._state = new
            self.revision += 1
            self._outcome(new)

    def _class_index(self, value: Any) -> int:
        k = len(self._state.classes)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < k:
            raise SessionError(f"class {shown(value)} is not one of the {k} classes")
        return int(value)

    def _indices(self, values: Any) -> np.ndarray:
        n = len(self.slide)
        try:
            index = np.asarray(values).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise SessionError("patch indices should be a list of whole numbers") from None
        if not index.size:
            return np.empty(0, np.int64)
        if index.dtype.kind not in "iu":  # floats, bools, strings, and ints too large for int64 (object)
            bad = next((v for v in index.tolist() if isinstance(v, bool) or not isinstance(v, int)
                        or not 0 <= v < n), index[0])
            raise SessionError(f"patch index {shown(bad)} should be a whole number from 0 to {n - 1}")
        low, high = index.min(), index.max()
        if low < 0 or high >= n:
            raise SessionError(f"patch index {int(low if low < 0 else high)} is not on this slide of {n} patches")
        return np.unique(index.astype(np.int64))

    def add_seeds(self, indices: Any, class_index: Any) -> None:
        """Seed ``indices`` with a class (a patch seeded before changes class)."""
        c = self._class_index(class_index)
        add = self._indices(indices)
        s = self._state
        keep = ~np.isin(s.seed_index, add)
        index = np.concatenate([s.seed_index[keep], add])
        cls = np.concatenate([s.seed_class[keep], np.full(add.size, c, np.int8)])
        order = np.argsort(index, kind="stable")
        self._change(_State(index[order], cls[order], s.classes, s.method, s.rule))

    def clear_seeds(self) -> None:
        """Unseed every patch (one undo step)."""
        s = self._state
        self._change(_State(np.empty(0, np.int64), np.empty(0, np.int8), s.classes, s.method, s.rule))

    def remove_seeds(self, indices: Any) -> None:
        """Unseed ``indices``."""
        drop = self._indices(indices)
        s = self._state
        keep = ~np.isin(s.seed_index, drop)
        self._change(_State(s.seed_index[keep], s.seed_class[keep], s.classes, s.method, s.rule))

    def add_class(self, name: str, color: str | None = None) -> None:
        """A new class at the end of the list."""
        s = self._state
        if len(s.classes) >= _MAX_CLASSES:
            raise SessionError(f"{_MAX_CLASSES} classes is the most the app draws: rename one instead")
        name = self._new_name(name)
        colour = _chosen(name, color)
        self._change(_State(s.seed_index, s.seed_class, (*s.classes, (name, colour)), s.method, s.rule))

    def rename_class(self, class_index: Any, name: str, color: str | None = None) -> None:
        """Rename (and optionally recolour) a class."""
        c = self._class_index(class_index)
        s = self._state
        old_name, old_colour = s.classes[c]
        name = old_name if name.strip() == old_name else self._new_name(name, besides=c)
        colour = _chosen(name, color) if color else old_colour  # a palette colour follows the new name
        classes = tuple((name, colour) if i == c else pair for i, pair in enumerate(s.classes))
        self._change(_State(s.seed_index, s.seed_class, classes, s.method, s.rule))

    def _new_name(self, name: Any, besides: int | None = None) -> str:
        """A checked class name; ``besides`` is the class being renamed (its name may change case only)."""
        text = str(name or "").strip()
        if not text or len(text) > 64:
            raise SessionError("a class name should be 1-64 characters")
        if text.casefold() in {n.casefold() for i, n in enumerate(self.classes) if i != besides}:
            raise SessionError(f"there is already a class {text!r}: choose another name")
        return text

    def set_method(self, name: str, rule: str | None = None) -> None:
        """Choose the method (and its rule)."""
        if name not in self.methods:
            raise SessionError(f"method {name!r} is not one of {', '.join(self.methods)}")
        method = self.methods[name]
        if method.rules:
            rule = rule if rule is not None else method.rules[0]
            if rule not in method.rules:
                raise SessionError(f"rule {rule!r} is not one of {', '.join(method.rules)} for {name}")
        else:
            rule = None
        s = self._state
        self._change(_State(s.seed_index, s.seed_class, s.classes, name, rule))

    def undo(self) -> None:
        with self._lock:
            if self._undo:
                self._redo.append(self._state)
                self._state = self._undo.pop()
                self.revision += 1

    def redo(self) -> None:
        with self._lock:
            if self._redo:
                self._undo.append(self._state)
                self._state = self._redo.pop()
                self.revision += 1

    # -- the method -------------------------------------------------------------------------------
    def _outcome(self, state: _State) -> _Outcome:
        key = state.key()
        if key in self._results:
            self._results.move_to_end(key)
            return self._results[key]
        result = self._fit(state)
        self._results[key] = result
        while len(self._results) > _KEPT_RESULTS:
            self._results.popitem(last=False)
        return result

    def _fit(self, state: _State) -> _Outcome:
        n = len(self.slide)
        none = np.full(n, -1, np.int8)
        present = np.unique(state.seed_class).astype(np.int64)
        names = [name for name, _ in state.classes]
        if present.size < 2:
            need = "seed patches of at least two classes" if present.size == 0 else (
                f"seed a class other than {names[int(present[0])]!r}")
            return _Outcome(none, None, f"{need} to start", 0.0)
        remap = np.full(len(names), -1, np.int64)
        remap[present] = np.arange(present.size)
        seeds = np.full(n, -1, np.int64)
        seeds[state.seed_index] = remap[state.seed_class.astype(np.int64)]
        start = time.perf_counter()
        try:
            with self._prepare_lock:
                fit: Fit = fit_method(self.methods[state.method], state.rule, self._X, seeds, int(present.size),
                                      random_state=self.random_state, coords=self.slide.coords,
                                      prepared=self._prepared)
        except SicShareError as exc:
            return _Outcome(none, None, str(exc), time.perf_counter() - start)
        seconds = time.perf_counter() - start
        labels = present[fit.labels.astype(np.int64)].astype(np.int8)
        missing = [names[i] for i in range(len(names)) if i not in set(present.tolist())]
        message = (f"{', '.join(map(repr, missing))} {'has' if len(missing) == 1 else 'have'} no seed yet: "
                   "left out") if missing else ""
        return _Outcome(labels, fit.confidence, message, seconds, fit.rounds)

    def warm(self) -> None:
        """Build what the first fit needs (the method's module, its per-slide graph) before the first click.

        Runs beside the server (it does not hold the state lock, so the page loads
        meanwhile); a click that comes first waits for it. A failure is left for that
        click to report.
        """
        with self._prepare_lock:
            state = self._state
            try:
                import scipy.ndimage  # noqa: F401 - the confidence layer's regions: 0.3 s on the first click else

                prepare_method(self.methods[state.method], state.rule, self._X, random_state=self.random_state,
                               coords=self.slide.coords, prepared=self._prepared)
            except Exception:  # noqa: BLE001 - the first fit repeats the work and reports what went wrong
                pass

    # -- files ------------------------------------------------------------------------------------
    def export(self, fmt: str, *, tiles: bool = False) -> tuple[bytes, str, str]:
        """The current annotation as a file: ``(bytes, file name, media type)``.

        Written by :func:`sic_share.viz.write_result`, the writer ``sic-share sic`` uses.
        """
        from sic_share.viz import write_result

        if fmt not in EXPORTS:
            raise SessionError(f"export format {fmt!r} is not one of {', '.join(EXPORTS)}")
        kind, pattern, media = EXPORTS[fmt]
        with self._lock:
            state = self._state
            result = self._outcome(state)
        if not (result.labels >= 0).any():
            raise SessionError("nothing to export yet: seed patches of at least two classes first")
        name = pattern.format(slide=self.slide.slide_id, method=state.method)
        with tempfile.TemporaryDirectory(prefix="sic-share-app-") as tmp:
            path = write_result(Path(tmp) / name, kind, slide_id=self.slide.slide_id, coords=self.slide.coords,
                                labels=result.labels, classes=[n for n, _ in state.classes],
                                patch_size=self.slide.patch_size, colors=list(_colours(state)), tiles=tiles,
                                legend=True, title=f"slide {self.slide.slide_id}: {state.method} from "
                                                   f"{len(state.seed_index)} seeded patches")
            return path.read_bytes(), name, media

    def save_seeds(self, fmt: str) -> tuple[bytes, str, str]:
        """The seeds as QuPath GeoJSON points or a CSV ``x,y,label`` at the seeded patches' centres."""
        with self._lock:
            state = self._state
        xy = self.slide.coords[state.seed_index].astype(np.int64)
        names = [n for n, _ in state.classes]
        slide = self.slide.slide_id
        if fmt == "csv":
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["x", "y", "label"])
            writer.writerows((int(x), int(y), names[c]) for (x, y), c in zip(xy.tolist(), state.seed_class.tolist()))
            return text.getvalue().encode(), f"{slide}-seeds.csv", "text/csv"
        if fmt != "geojson":
            raise SessionError(f"seed format {fmt!r} is not geojson or csv")
        from sic_share.viz import class_colors

        rgb = {n: list(c) for n, c in zip(names, class_colors(names, list(_colours(state))))}
        features = [{
            "type": "Feature", "id": str(uuid.uuid4()),
            "geometry": {"type": "Point", "coordinates": [int(x), int(y)]},
            "properties": {"objectType": "annotation",
                           "classification": {"name": names[c], "color": rgb[names[c]]}},
        } for (x, y), c in zip(xy.tolist(), state.seed_class.tolist())]
        body = json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))
        return body.encode(), f"{slide}-seeds.geojson", "application/geo+json"

    def load_seeds(self, data: bytes, filename: str) -> str | None:
        """Add the seeds of a QuPath GeoJSON or CSV file; unknown class names become new classes.

        Returns a warning on what did not land, or None.
        """
        from sic_share.sic import read_seeds
        from sic_share.viz import hex_color, seeds_file_colors

        suffix = Path(filename or "seeds").suffix.lower()
        if suffix not in (".geojson", ".json", ".csv"):
            raise SessionError(f"seeds file {filename!r} should be QuPath GeoJSON (.geojson, .json) or CSV (.csv)")
        with tempfile.TemporaryDirectory(prefix="sic-share-app-") as tmp:
            path = Path(tmp) / Path(filename).name
            path.write_bytes(data)
            try:
                seeds = read_seeds(path, self.slide.coords, self.slide.patch_size, None)
            except SeedError as exc:
                raise SessionError(str(exc)) from None
        s = self._state
        given = {name.casefold(): hex_color(rgb) for name, rgb in seeds_file_colors(data).items()}
        # the app's placeholder classes, never seeded, give way to the file's own
        fresh = self._placeholder and s.seed_index.size == 0 and not self._undo
        classes = [] if fresh else list(s.classes)
        index = {n.casefold(): i for i, (n, _) in enumerate(classes)}
        for name in seeds.classes:
            if name.casefold() not in index:
                index[name.casefold()] = len(classes)
                classes.append((name, ""))
        # the file's QuPath colours, for each class whose colour nobody chose in the page
        classes = [(n, c or given.get(n.casefold(), "")) for n, c in classes]
        remap = np.array([index[n.casefold()] for n in seeds.classes], np.int8)
        got = np.flatnonzero(seeds.labels >= 0)
        new_class = remap[seeds.labels[got].astype(np.int64)]
        keep = ~np.isin(s.seed_index, got)
        index_all = np.concatenate([s.seed_index[keep], got.astype(np.int64)])
        cls_all = np.concatenate([s.seed_class[keep], new_class])
        order = np.argsort(index_all, kind="stable")
        self._change(_State(index_all[order], cls_all[order], tuple(classes), s.method, s.rule))
        return seeds.summary()
