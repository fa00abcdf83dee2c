"""The paper's Figure 2 protocol: how well SIC separates tissue with each model's embeddings."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from sic_share.compare._data import (
    RULES,
    SCORES,
    Dataset,
    align,
    check_choice,
    draw_seed_rows,
    fit_sic,
    open_dataset,
    read_keys,
    refuse_repeat,
    same_grid_fix,
    seed_rng,
    sic_random_state,
)
from sic_share.dataset import read_slide
from sic_share.errors import DatasetError, SeedError, SicShareError
from sic_share.sic import DEFAULT_METHOD, list_methods
from sic_share.viz._common import atomic_write, check_target

__all__ = ["BenchmarkResult", "FoldRow", "SlideScore", "SummaryRow", "Skipped", "run_benchmark"]


@dataclass(frozen=True)
class FoldRow:
    """One SIC run: one model, one slide, one click count, one fold.

    Attributes
    ----------
    dataset, model : str
        The dataset's name (folder or hub reference) and its model id.
    slide_id : str
    clicks : int
        Seed patches drawn inside each class.
    fold : int
        0-based repetition with a fresh draw of seeds.
    score : float
        F1 of the positive class (binary), macro F1 (more classes) or accuracy, over
        every patch that has a ground-truth label.
    n_patches : int
        Patches SIC ran on (those every benchmarked dataset holds).
    positive_ratio : float
        Share of labelled patches in the positive class (binary); with more classes,
        the share of the rarest class.
    n_rounds : int
        Refinements SIC accepted.
    fit_seconds : float
        Wall time of the SIC fit alone.
    seeds : str
        The seed patches as ``x:y:class`` separated by ``;``, read from this dataset's
        own coordinates (identical for every model and method: that is the paired design).
    method : str
        The annotation method (see :func:`sic_share.sic.list_methods`).
    """

    dataset: str
    model: str
    slide_id: str
    clicks: int
    fold: int
    score: float
    n_patches: int
    positive_ratio: float
    n_rounds: int
    fit_seconds: float
    seeds: str
    method: str = DEFAULT_METHOD


@dataclass(frozen=True)
class SlideScore:
    """One model and method on one slide at one click count: the best fold and the mean over folds."""

    dataset: str
    model: str
    slide_id: str
    clicks: int
    best: float
    mean: float
    n_patches: int
    positive_ratio: float
    method: str = DEFAULT_METHOD


@dataclass(frozen=True)
class SummaryRow:
    """One model and method at one click count, over slides: mean and standard deviation (ddof=1)."""

    dataset: str
    model: str
    clicks: int
    n_slides: int
    best_mean: float
    best_std: float
    mean_mean: float
    mean_std: float
    method: str = DEFAULT_METHOD


@dataclass(frozen=True)
class Skipped:
    """A slide left out of the benchmark, and why."""

    dataset: str
    slide_id: str
    reason: str


@dataclass(frozen=True)
class BenchmarkResult:
    """Everything :func:`run_benchmark` measured.

    Attributes
    ----------
    datasets : tuple of str
        Dataset names, in the order given.
    models : tuple of str
        Their model ids.
    classes : tuple of str
        Class names of the task SIC solved (binary: negative, positive).
    score : str
        ``"f1"`` or ``"accuracy"``.
    rule : str or None
        SIC's acceptance rule (None: SIC's default, or no SIC run).
    clicks : tuple of int
    folds : int
    seed : int
    rows : tuple of FoldRow
        Every SIC run.
    skipped : tuple of Skipped
        Slides left out, with the reason.
    wall_seconds : float
        Wall time of the whole run (reading, seeding, SIC, scoring).
    methods : tuple of str
        The annotation methods compared, in the order given.
    """

    datasets: tuple[str, ...]
    models: tuple[str, ...]
    classes: tuple[str, ...]
    score: str
    rule: str | None
    clicks: tuple[int, ...]
    folds: int
    seed: int
    rows: tuple[FoldRow, ...]
    skipped: tuple[Skipped, ...] = ()
    wall_seconds: float = 0.0
    _labels: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    methods: tuple[str, ...] = (DEFAULT_METHOD,)

    # ------------------------------------------------------------ tables
    @property
    def fit_seconds(self) -> float:
        """Sum of the wall times of every SIC fit."""
        return float(sum(r.fit_seconds for r in self.rows))

    def label(self, dataset: str) -> str:
        """How tables and plots name a dataset: its model id when that is unique, else its name."""
        return self._labels.get(dataset, dataset)

    def slides(self) -> list[SlideScore]:
        """Best fold and mean over folds of every (dataset, method, slide, clicks)."""
        groups: dict[tuple[str, str, str, int], list[FoldRow]] = {}
        for r in self.rows:
            groups.setdefault((r.dataset, r.method, r.slide_id, r.clicks), []).append(r)
        out = []
        for (dataset, method, slide_id, clicks), rows in groups.items():
            scores = np.array([r.score for r in rows])
            out.append(SlideScore(dataset, rows[0].model, slide_id, clicks, float(scores.max()), float(scores.mean()),
                                  rows[0].n_patches, rows[0].positive_ratio, method))
        return out

    def summary(self) -> list[SummaryRow]:
        """Mean ± std over slides of the best fold and of the mean over folds, per dataset x method x clicks."""
        per = self.slides()
        out = []
        for dataset, model in zip(self.datasets, self.models, strict=True):
            for method in self.methods:
                for clicks in self.clicks:
                    rows = [s for s in per if s.dataset == dataset and s.method == method and s.clicks == clicks]
                    if not rows:
                        continue
                    best = np.array([s.best for s in rows])
                    mean = np.array([s.mean for s in rows])
                    out.append(SummaryRow(dataset, model, clicks, len(rows), float(best.mean()), _std(best),
                                          float(mean.mean()), _std(mean), method))
        return out

    def series(self) -> list[tuple[str, str, str]]:
        """(dataset, method, name) of every compared series: the model, the method, or both when both vary."""
        out = []
        for dataset in self.datasets:
            for method in self.methods:
                if len(self.methods) == 1:
                    name = self.label(dataset)
                elif len(self.datasets) == 1:
                    name = method
                else:
                    name = f"{self.label(dataset)} / {method}"
                out.append((dataset, method, name))
        return out

    @property
    def score_name(self) -> str:
        if self.score == "accuracy":
            return "accuracy"
        return f"F1 of '{self.classes[1]}'" if len(self.classes) == 2 else "macro F1"

    def to_text(self) -> str:
        """A table per model x clicks, then the skipped slides."""
        n_slides = len({r.slide_id for r in self.rows})
        rule = f", rule={self.rule}" if self.rule is not None else ""
        head = [f"{self.score_name} per slide over {n_slides} slides, {self.folds} folds of random seeds "
                f"(method={','.join(self.methods)}{rule}, seed={self.seed}); mean ± std over slides"]
        table = [("model", "method", "clicks", "slides", f"best of {self.folds} folds", "mean over folds")]
        for s in self.summary():
            table.append((self.label(s.dataset), s.method, str(s.clicks), str(s.n_slides),
                          f"{s.best_mean:.3f} ± {s.best_std:.3f}", f"{s.mean_mean:.3f} ± {s.mean_std:.3f}"))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = head + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
        for s in self.skipped:
            lines.append(f"skipped {s.slide_id} ({s.dataset}): {s.reason}")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Every fold as a CSV row (the per-slide best and mean follow from them)."""
        buffer = io.StringIO()
        names = list(FoldRow.__dataclass_fields__)
        writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            row = asdict(r)
            row["score"] = f"{r.score:.6f}"
            row["positive_ratio"] = f"{r.positive_ratio:.6f}"
            row["fit_seconds"] = f"{r.fit_seconds:.4f}"
            writer.writerow(row)
        return buffer.getvalue()

    def to_dict(self) -> dict:
        """Settings, summary, per-slide scores, folds and skipped slides, as JSON-ready values."""
        return {
            "protocol": "Chelebian et al. Figure 2: random seed patches per class, SIC, score every labelled patch",
            "datasets": [{"name": d, "model": m} for d, m in zip(self.datasets, self.models, strict=True)],
            "classes": list(self.classes), "score": self.score, "rule": self.rule, "methods": list(self.methods),
            "clicks": list(self.clicks),
            "folds": self.folds, "seed": self.seed, "wall_seconds": self.wall_seconds,
            "fit_seconds": self.fit_seconds,
            "summary": [asdict(s) for s in self.summary()],
            "slides": [asdict(s) for s in self.slides()],
            "folds_detail": [asdict(r) for r in self.rows],
            "skipped": [asdict(s) for s in self.skipped],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    # ------------------------------------------------------------ writers
    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_csv` atomically."""
        return atomic_write(path, self.to_csv().encode())

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically."""
        return atomic_write(path, self.to_json().encode())

    def write_text(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_text` atomically."""
        return atomic_write(path, self.to_text().encode())

    def write_plot(self, path: str | os.PathLike[str]) -> Path:
        """Box plot like the paper's Figure 2: x = clicks, one box per model, y = best-fold score per slide.

        Notes
        -----
        Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global
        backend state). Each slide's best-fold score is also drawn as a dot, since
        cohorts are often small enough that a box alone hides them.
        """
        target = check_target(path)
        return atomic_write(target, self._plot_png())

    def _plot_png(self) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        per = self.slides()
        series = self.series()
        n_models = len(series)
        fig = Figure(figsize=(max(5.0, 1.6 + 1.1 * len(self.clicks) * max(n_models, 1)), 4.2), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / max(n_models, 1)
        colors = [f"C{i % 10}" for i in range(n_models)]
        rng = np.random.default_rng(0)
        handles = []
        for j, (dataset, method, name) in enumerate(series):
            positions, data = [], []
            for i, clicks in enumerate(self.clicks):
                values = [s.best for s in per if s.dataset == dataset and s.method == method and s.clicks == clicks]
                if values:
                    positions.append(i + (j - (n_models - 1) / 2) * width)
                    data.append(values)
            if not data:
                continue
            box = ax.boxplot(data, positions=positions, widths=width * 0.8, patch_artist=True, showfliers=False,
                             medianprops={"color": "black"})
            for patch in box["boxes"]:
                patch.set(facecolor=colors[j], alpha=0.45, edgecolor=colors[j])
            for p, values in zip(positions, data, strict=True):
                jitter = rng.uniform(-width * 0.25, width * 0.25, len(values))
                ax.scatter(p + jitter, values, s=10, color=colors[j], edgecolors="none", zorder=3)
            handles.append((box["boxes"][0], name))
        ax.set_xticks(range(len(self.clicks)))
        ax.set_xticklabels([str(c) for c in self.clicks])
        ax.set_xlim(-0.6, len(self.clicks) - 0.4)
        ax.set_xlabel("seed patches (clicks) per class")
        ax.set_ylabel(self.score_name)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
        n_slides = len({s.slide_id for s in per})
        ax.set_title(f"{', '.join(self.methods)} per slide, best of {self.folds} folds ({n_slides} slides)", fontsize=11)
        if handles:
            ax.legend([h for h, _ in handles], [name for _, name in handles], loc="lower right", fontsize=8,
                      framealpha=0.9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


# ---------------------------------------------------------------- the run
@dataclass(frozen=True)
class _Draw:
    clicks: int
    fold: int
    rows: np.ndarray  # positions in the slide's common patches
    classes: np.ndarray
    random_state: int


@dataclass(frozen=True)
class _Task:
    """One dataset's slide: read once, every click count and fold run on it (one slide in memory per worker)."""

    dataset: str
    model: str
    path: Path
    dtype: type
    slide_id: str
    rows: np.ndarray  # the file's row of each common patch, in (x, y) order
    truth: np.ndarray  # class of each common patch (task classes), -1 none
    draws: tuple[_Draw, ...]
    n_classes: int
    score: str
    rule: str | None
    positive_ratio: float
    methods: tuple[str, ...] = (DEFAULT_METHOD,)


def _score(truth: np.ndarray, pred: np.ndarray, n_classes: int, score: str) -> float:
    mask = truth >= 0
    t, p = truth[mask], pred[mask]
    if score == "accuracy":
        return float(accuracy_score(t, p))
    if n_classes == 2:
        return float(f1_score(t, p, pos_label=1, average="binary", zero_division=0.0))
    return float(f1_score(t, p, labels=np.arange(n_classes), average="macro", zero_division=0.0))


def _run_task(task: _Task) -> list[FoldRow]:
    slide = read_slide(task.path, dtype=task.dtype)
    coords = slide.coords[task.rows]
    out = []
    for d in task.draws:
        seeds = ";".join(f"{x}:{y}:{c}" for (x, y), c in zip(coords[d.rows].tolist(), d.classes.tolist(), strict=True))
        for method in task.methods:  # the same seeds and random_state for every method: paired
            pred, est, seconds = fit_sic(slide.embeddings, task.rows, d.rows, d.classes, task.n_classes,
                                         score=task.score, rule=task.rule, random_state=d.random_state,
                                         method=method, coords=slide.coords)
            out.append(FoldRow(task.dataset, task.model, task.slide_id, d.clicks, d.fold,
                               _score(task.truth, pred, task.n_classes, task.score), int(task.rows.size),
                               task.positive_ratio, int(getattr(est, "n_rounds_", 0)), seconds, seeds, method))
    return out


def _check_methods(method: str | Sequence[str], rule: str | None) -> tuple[str, ...]:
    names = tuple(m.strip() for m in method.split(",")) if isinstance(method, str) else tuple(method)
    known = list_methods()
    if not names or not all(names):
        raise SicShareError(f"method={method!r} should name methods such as {','.join(known)}")
    for name in names:
        if name not in known:
            raise SeedError(f"method {name!r} is not known: use one of {', '.join(known)}")
    if len(set(names)) != len(names):
        raise SicShareError(f"method={method!r} names a method twice: name each once")
    if rule is not None and "sic" not in names:
        raise SeedError(f"rule={rule!r} applies to method 'sic' only, not to {', '.join(names)}: drop it or add sic")
    return names


def _check_settings(clicks: Sequence[int], folds: int, score: str, rule: str | None, jobs: int) -> tuple[int, ...]:
    check_choice(score, SCORES, "score")
    if rule is not None:
        check_choice(rule, RULES, "rule")
    try:
        counts = tuple(sorted({int(c) for c in clicks}))
    except (TypeError, ValueError):
        raise SicShareError(f"clicks={clicks!r} should be whole numbers such as 1,3,5") from None
    if not counts or counts[0] < 1:
        raise SicShareError(f"clicks={list(clicks)!r} should be positive whole numbers such as 1,3,5")
    if not isinstance(folds, int) or folds < 1:
        raise SicShareError(f"folds={folds!r} should be a positive whole number (the paper uses 5)")
    if not isinstance(jobs, int) or (jobs < 1 and jobs != -1):
        raise SicShareError(f"jobs={jobs!r} should be a positive number of processes, or -1 for every CPU")
    return counts


def _labelled_how(ds: Dataset) -> str:
    """How to make a dataset like ``ds`` with ground truth: the option of the command that made it."""
    source = ds.metadata.model.source
    if source == "import:npy":
        return "labels imported with it (re-import with <slide>.labels.npy beside each slide and --classes)"
    if source.startswith("import:"):
        kind = source.split(":", 1)[1].upper()
        return (f"labels, which {kind} .h5 files do not hold (import the coords and features as "
                "<slide>.coords.npy/.features.npy with <slide>.labels.npy and --classes)")
    return "a dataset exported with labels (export --masks or --annotations)"


def _task_classes(classes: tuple[str, ...], positive: str | None) -> tuple[tuple[str, ...], np.ndarray | None]:
    """The classes SIC separates and, for ``positive``, the map from dataset class index to 0/1."""
    if positive is None:
        return classes, None
    folded = [c.casefold() for c in classes]
    if positive.casefold() not in folded:
        raise SeedError(f"positive class {positive!r} is not one of the dataset's classes {list(classes)}: name one of them")
    index = folded.index(positive.casefold())
    mapping = np.zeros(len(classes) + 1, np.int8)  # the last entry maps label -1
    mapping[index] = 1
    mapping[-1] = -1
    rest = [c for i, c in enumerate(classes) if i != index]
    negative = rest[0] if len(rest) == 1 else "not " + classes[index]
    return (negative, classes[index]), mapping


def run_benchmark(
    datasets: Sequence[str | os.PathLike[str]],
    *,
    clicks: Sequence[int] = (1, 3, 5),
    folds: int = 5,
    score: str = "f1",
    seed: int = 0,
    jobs: int = 1,
    hub: str | None = None,
    rule: str | None = None,
    method: str | Sequence[str] = DEFAULT_METHOD,
    positive: str | None = None,
    skip_small: bool = False,
    csv_path: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    text_path: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> BenchmarkResult:
    """Compare models by how well SIC labels their slides from a few random seed patches.

    The paper's Figure 2 protocol on datasets that carry ground-truth labels: for
    each dataset (one per model), each slide, each click count and each fold, draw
    ``clicks`` random seed patches inside each class, run SIC, and score every
    labelled patch against the truth.

    Parameters
    ----------
    datasets : sequence of path-like or str
        Dataset folders or hub references ``publisher/name[@version]``, one per model,
        on the same patch grid with the same class names.
    clicks : sequence of int, default=(1, 3, 5)
        Seed patches per class.
    folds : int, default=5
        Independent draws of seeds per slide and click count.
    score : {"f1", "accuracy"}, default="f1"
        Evaluation score, also SIC's score on the seeds (as in the paper). F1 is that
        of the positive class for two classes, macro F1 over classes for more.
    seed : int, default=0
        Seeds every random draw (see Notes).
    jobs : int, default=1
        Worker processes (-1: one per CPU); each holds one slide at a time.
    hub : str, optional
        Hub for dataset references.
    rule : {"structure", "paper", "authors"}, optional
        SIC's acceptance rule (see :class:`~sic_share.sic.SeededIterativeClustering`);
        only with method ``sic`` (None: its default, ``structure``).
    method : str or sequence of str, default="spreading"
        Annotation methods to compare (``"a,b,c"`` or a list; see
        :func:`sic_share.sic.list_methods`). Every method gets the same seed patches
        and the same ``random_state`` per fold (paired, as models are).
    positive : str, optional
        Make the task binary: this class against all the others. By default two
        classes are binary with the second as positive, and more classes run
        multi-class SIC.
    skip_small : bool, default=False
        Skip (and report) slides where a class has fewer patches than the largest
        click count, instead of raising.
    csv_path, json_path, plot_path, text_path : path-like, optional
        Where to write the fold rows (CSV), everything (JSON), the box plot (PNG) and
        the text table. Their folders are checked before any work is done.
    progress : callable, optional
        Called as ``progress(what, done, total)`` after each dataset's slide.

    Returns
    -------
    BenchmarkResult

    Raises
    ------
    DatasetError
        A dataset without ground-truth classes or labels; datasets with different
        class names, disagreeing labels, or no patch in common; every slide skipped.
    SeedError
        A class with fewer patches on some slide than the largest click count (unless
        ``skip_small``); an unknown ``positive`` class, score or rule.
    SicShareError
        Bad settings, or an output path in a folder that does not exist.

    Notes
    -----
    **Best fold and mean over folds.** The paper keeps the best of 5 folds per slide,
    simulating an expert who places good seeds. That flatters every model, more so
    with 1 click, so the mean over folds (the expected score of random seeds) is
    reported beside it; it is the honest figure for comparing models.

    **Paired seeds.** Seeds are drawn from a random stream derived from ``(seed,
    slide_id, clicks, fold)`` among the patches that *every* dataset given holds,
    ordered by (x, y). Models on the same grid therefore get the same seed patches,
    whatever the file row order and whichever datasets are run alongside, as long
    as the set of shared patches is the same; so are SIC's own random draws. SIC
    runs on, and is scored over, those shared patches only, so every model is
    scored on the same patches against the same truth.

    **Truth.** The ``label`` column of the first dataset, completed by the others
    where it is empty; datasets that give different classes to the same patch are
    an error. Unlabelled patches take part in clustering but not in the score.

    **Scores.** Every labelled patch is scored, as in the paper (not only the
    seeds). Multi-class: macro F1 over the classes (every class weighs the same,
    small lesions included), the paper's future work. The standard deviation is
    over slides with ddof=1 (0 for one slide).

    **Skipped, not fatal.** A slide missing from some dataset, sharing no patch
    between datasets, without labels, or without any patch of a class, is skipped
    and listed in ``skipped``. A class with fewer patches than the clicks asked for
    is an error by default (silently seeding fewer would change the protocol);
    ``skip_small`` skips such slides for every click count, so click counts are
    compared on the same slides.

    **Cost.** One SIC fit per dataset x slide x click count x fold. Each worker task
    is one dataset's slide, read once (float16 embeddings stay float16) and fitted
    ``len(clicks) * folds`` times; the ground-truth pass before reads only the x, y
    and label columns. ``benchmarks/compare.py`` measures the overhead over the
    fits themselves.
    """
    start = time.perf_counter()
    counts = _check_settings(clicks, folds, score, rule, jobs)
    methods = _check_methods(method, rule)
    for path in (csv_path, json_path, plot_path, text_path):
        if path is not None:
            check_target(path)
    if not datasets:
        raise SicShareError("no dataset given: name at least one dataset folder or hub reference")
    opened: list[Dataset] = []
    for source in datasets:
        ds = open_dataset(source, hub)
        if not ds.metadata.classes:
            raise DatasetError(f"{ds.name} has no ground-truth classes: benchmark needs {_labelled_how(ds)}, "
                               "or run 'sic-share sic' with your own seeds")
        refuse_repeat(ds, opened)
        opened.append(ds)
    classes = opened[0].metadata.classes
    for ds in opened[1:]:
        if [c.casefold() for c in ds.metadata.classes] != [c.casefold() for c in classes]:
            raise DatasetError(f"{ds.name} has classes {list(ds.metadata.classes)} but {opened[0].name} has "
                               f"{list(classes)}: benchmark datasets labelled from the same annotations")
    task_classes, mapping = _task_classes(classes, positive)
    k = len(task_classes)

    skipped: list[Skipped] = []
    all_ids = sorted(set().union(*(ds.files for ds in opened)))
    labelled = dict.fromkeys((ds.name for ds in opened), False)
    matched = total = 0
    prepared = []  # (slide_id, rows per dataset, truth)
    for slide_id in all_ids:
        lacking = [ds.name for ds in opened if slide_id not in ds.files]
        if lacking:
            skipped.append(Skipped(lacking[0], slide_id, f"not in {', '.join(lacking)}"))
            for ds in opened:
                if slide_id in ds.files:
                    labelled[ds.name] |= bool((read_keys(ds.files[slide_id])[1] >= 0).any())
            continue
        keys, labels = zip(*(read_keys(ds.files[slide_id]) for ds in opened), strict=True)
        for ds, lab in zip(opened, labels, strict=True):
            labelled[ds.name] |= bool((lab >= 0).any())
            if lab.size and (lab.min() < -1 or lab.max() >= len(classes)):  # signed before sign checked labels
                bad = int(lab.max() if lab.max() >= len(classes) else lab.min())
                raise DatasetError(f"slide {slide_id} of {ds.name} has label {bad}, outside its {len(classes)} "
                                   f"classes {list(classes)}: ask its publisher to sign it again (sign now refuses it)")
        common, rows = align(list(keys))
        matched += common.size
        total += max(k_.size for k_ in keys)
        if common.size == 0:
            sizes = " and ".join(str(k_.size) for k_ in keys)
            skipped.append(Skipped(opened[0].name, slide_id, f"the datasets share 0 of {sizes} patches"))
            continue
        truth = labels[0][rows[0]].copy()
        for ds, lab, r in zip(opened[1:], labels[1:], rows[1:], strict=True):
            other = lab[r]
            clash = (truth >= 0) & (other >= 0) & (truth != other)
            if clash.any():
                raise DatasetError(f"{opened[0].name} and {ds.name} disagree on the ground-truth class of "
                                   f"{int(clash.sum())} patches of slide {slide_id}: benchmark datasets labelled "
                                   "from the same annotations")
            truth = np.where(truth >= 0, truth, other)
        if mapping is not None:
            truth = mapping[truth]
        found = np.bincount(truth[truth >= 0].astype(np.int64), minlength=k)
        if not found.sum():
            skipped.append(Skipped(opened[0].name, slide_id, "no patch has a ground-truth label"))
            continue
        if (found == 0).any():
            missing = task_classes[int(np.flatnonzero(found == 0)[0])]
            skipped.append(Skipped(opened[0].name, slide_id, f"no patch of class {missing!r}"))
            continue
        fewest = int(found.argmin())
        if found[fewest] < counts[-1]:
            message = (f"slide {slide_id} has {int(found[fewest])} {task_classes[fewest]!r} patches, fewer than "
                       f"{counts[-1]} clicks")
            if not skip_small:
                raise SeedError(f"{message}: use at most {int(found[fewest])} clicks, or skip such slides "
                                "(--skip-small)")
            skipped.append(Skipped(opened[0].name, slide_id, message))
            continue
        prepared.append((slide_id, rows, truth, found))
    by_name = {ds.name: ds for ds in opened}
    for name, has in labelled.items():
        if not has:
            raise DatasetError(f"{name} has no ground-truth labels (every patch's label is empty): benchmark needs "
                               f"{_labelled_how(by_name[name])}")
    if not prepared:
        if matched == 0 and len(opened) > 1:
            raise DatasetError(f"{' and '.join(ds.name for ds in opened)} share 0 of {total} patches on "
                               f"(slide_id, x, y): they were not cut on the same grid — {same_grid_fix(*opened)}")
        reason = skipped[0].reason if skipped else "none has patches"
        raise DatasetError(f"every slide was skipped (first: {skipped[0].slide_id if skipped else '-'}: {reason}): "
                           "benchmark needs slides with patches of every class")

    tasks = []
    for slide_id, rows, truth, found in prepared:
        draws = []
        for clicks_ in counts:
            for fold in range(folds):
                seed_rows, seed_classes = draw_seed_rows(truth, k, clicks_, seed_rng(seed, slide_id, clicks_, fold))
                draws.append(_Draw(clicks_, fold, seed_rows, seed_classes,
                                   sic_random_state(seed, slide_id, clicks_, fold)))
        ratio = float(found[1] / found.sum()) if k == 2 else float(found.min() / found.sum())
        for ds, r in zip(opened, rows, strict=True):
            tasks.append(_Task(ds.name, ds.model, ds.files[slide_id], ds.dtype, slide_id, r, truth, tuple(draws),
                               k, score, rule, ratio, methods))
    if jobs == 1 or len(tasks) == 1:
        stream = (_run_task(t) for t in tasks)
    else:
        from joblib import Parallel, delayed

        stream = Parallel(n_jobs=jobs, return_as="generator")(delayed(_run_task)(t) for t in tasks)
    results = []
    for task, result in zip(tasks, stream):  # in task order, whichever way they ran
        results.append(result)
        if progress:
            progress(f"{task.model} {task.slide_id}", len(results), len(tasks))
    order = {ds.name: i for i, ds in enumerate(opened)}
    method_order = {m: i for i, m in enumerate(methods)}
    fold_rows = sorted((r for rs in results for r in rs),
                       key=lambda r: (order[r.dataset], method_order[r.method], r.slide_id, r.clicks, r.fold))

    models = tuple(ds.model for ds in opened)
    unique = len(set(models)) == len(models)
    result = BenchmarkResult(
        datasets=tuple(ds.name for ds in opened), models=models, classes=task_classes, score=score, rule=rule,
        clicks=counts, folds=folds, seed=seed, rows=tuple(fold_rows), skipped=tuple(skipped),
        wall_seconds=time.perf_counter() - start,
        _labels={ds.name: (ds.model if unique else ds.name) for ds in opened}, methods=methods,
    )
    if csv_path is not None:
        result.write_csv(csv_path)
    if json_path is not None:
        result.write_json(json_path)
    if text_path is not None:
        result.write_text(text_path)
    if plot_path is not None:
        result.write_plot(plot_path)
    return result
