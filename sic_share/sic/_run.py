"""The ``sic`` workflow: one slide of a dataset (local folder or hub), seeds in, labels out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sic_share.dataset import SlideData, near_slides, read_slide
from sic_share.errors import DatasetError, HubError, SeedError, VerificationError
from sic_share.sic._registry import DEFAULT_METHOD, create_method
from sic_share.sic._seeds import Seeds, class_counts, read_seeds

__all__ = ["SicResult", "SlideFile", "load_slide", "locate_slide", "map_seeds", "run_sic"]


@dataclass(frozen=True)
class SicResult:
    """What ``sic`` found on one slide.

    Attributes
    ----------
    slide : SlideData
        The slide as read (coordinates, embeddings, metadata).
    seeds : Seeds
        The seeds as mapped onto its patches, with those that missed.
    labels : ndarray of shape (n_patches,), int8
        Class index of every patch.
    classes : tuple of str
        Class names, index order.
    estimator : estimator
        The fitted estimator of ``method`` (SIC's has ``scores_`` and ``n_rounds_``).
    source : str
        The dataset folder, or the hub reference with its version.
    method : str
        The method's name (see :func:`~sic_share.sic.list_methods`).
    confidence : ndarray of shape (n_patches,), float32
        Per-patch confidence in [0, 1] (the estimator's ``confidence_``): low where
        the method hesitates, where the next seed helps most.
    """

    slide: SlideData
    seeds: Seeds
    labels: np.ndarray
    classes: tuple[str, ...]
    estimator: object
    source: str
    method: str = DEFAULT_METHOD
    confidence: np.ndarray | None = None

    @property
    def n_rounds(self) -> int | None:
        """SIC's accepted refinements; None for methods without rounds."""
        rounds = getattr(self.estimator, "n_rounds_", None)
        return None if rounds is None else int(rounds)

    @property
    def counts(self) -> dict[str, int]:
        """Labelled patches per class."""
        return class_counts(self.labels, self.classes)

    @property
    def patch_size(self) -> float:
        """Patch side in level-0 pixels of this slide."""
        return float(self.slide.metadata.patching.level0_size_px)


def _no_such_slide(slide_id: str, known: list[str], where: str) -> DatasetError:
    hint = near_slides(slide_id, known) or f"its slides are {', '.join(known[:5])}" + (
        ", ..." if len(known) > 5 else "")
    return DatasetError(f"{where} has no slide {slide_id!r}: {hint}")


@dataclass(frozen=True)
class SlideFile:
    """A slide's Parquet file, where it came from, and what was checked.

    Attributes
    ----------
    path : Path
    slide_id, source : str
    digest : str or None
        The sha256 the file was verified against (hub cache or signed folder); the app
        keys its cache by it. None for a slide of an unsigned folder.
    note : str or None
        One line for the user: the folder is unsigned and was read with ``unsigned=True``.
    stamp : tuple of int or None
        The file's (inode, size, mtime, ctime) taken before it was hashed (signed folders);
        :meth:`check_unchanged` compares it after a read.
    """

    path: Path
    slide_id: str
    source: str
    digest: str | None = None
    note: str | None = None
    stamp: tuple[int, int, int, int] | None = None

    def check_unchanged(self) -> None:
        """Refuse a verified file that was rewritten or replaced since it was hashed (call it after reading).

        A write changes the file's ctime, which no user can set back, and a replacement
        changes its inode; so a change between the hash and the end of a read is caught
        (up to the file system's timestamp granularity).
        """
        if self.stamp is not None and _stamp(self.path) != self.stamp:
            raise VerificationError(
                f"{self.path} of {self.source} changed while it was read (after it verified): run the command "
                "again, and if it happens again find what writes to the folder"
            )


def _stamp(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def locate_slide(dataset: str | os.PathLike[str] | SlideFile, slide_id: str | None, hub: str | None = None, *,
                 unsigned: bool = False, allow_rollback: bool = False) -> SlideFile:
    """The verified file of one slide of a local dataset folder or of a hub dataset (``publisher/name[@version]``).

    A path that exists is a folder, verified by :func:`~sic_share.signing.open_folder`
    (signature by a trusted key, expiry, rollback, the listing) and then only this
    slide's file hashed against its signed sha256. Otherwise a reference is looked up
    on the hub, and only that slide's file is fetched (verified against the signed
    manifest, kept in the cache). ``slide_id`` may be None when the dataset has exactly
    one slide. A :class:`SlideFile` is returned as it is, so every command that takes
    a dataset also takes a slide located before.

    Parameters
    ----------
    unsigned : bool, default=False
        Accept a local folder that is not signed (``export --no-sign``); the result's
        ``note`` then says that its bytes are checked by nobody.
    allow_rollback : bool, default=False
        Accept a version older than one verified before.
    """
    if isinstance(dataset, SlideFile):
        if slide_id is not None and slide_id != dataset.slide_id:
            raise DatasetError(f"slide {slide_id!r} was asked for, but {dataset.source}'s slide "
                               f"{dataset.slide_id!r} was located: locate the slide wanted")
        return dataset
    local = Path(dataset)
    if local.exists():
        from sic_share.signing import open_folder

        folder = open_folder(local, unsigned=unsigned, allow_rollback=allow_rollback)
        files = folder.slides
        if slide_id is None:
            if len(files) != 1:
                raise DatasetError(f"{local} has {len(files)} slides: choose one with --slide (e.g. {min(files)})")
            slide_id = next(iter(files))
        if slide_id not in files:
            if folder.listed(slide_id):
                ref = folder.manifest.ref
                raise DatasetError(f"{local} is a partial copy of {ref} without slide {slide_id!r}: pull it with "
                                   f"'sic-share pull {ref} --slides {slide_id}', or choose one of its slides")
            raise _no_such_slide(slide_id, sorted(files), str(local))
        stamp = _stamp(files[slide_id]) if folder.manifest is not None else None
        digest = folder.verify([slide_id])[slide_id]
        return SlideFile(files[slide_id], slide_id, str(local), digest, folder.note, stamp)
    from sic_share.hub import fetch_slides, open_manifest, parse_ref

    try:
        ref = parse_ref(str(dataset))
    except HubError:
        raise DatasetError(f"{dataset} is neither a dataset folder (no such folder) nor a hub reference "
                           "PUBLISHER/NAME[@VERSION]: check the path") from None
    if slide_id is None:
        stems = sorted(Path(name).stem for name in open_manifest(ref, hub, allow_rollback=allow_rollback).files)
        if len(stems) != 1:
            raise DatasetError(f"{ref} has {len(stems)} slides: choose one with --slide (e.g. {stems[0]})")
        slide_id = stems[0]
    manifest, paths = fetch_slides(ref, [slide_id], hub, allow_rollback=allow_rollback)
    name = next(n for n in manifest.files if Path(n).stem == slide_id)
    return SlideFile(paths[slide_id], slide_id, manifest.ref, manifest.files[name][1])


def load_slide(dataset: str | os.PathLike[str] | SlideFile, slide_id: str | None, hub: str | None = None, *,
               unsigned: bool = False, allow_rollback: bool = False) -> tuple[SlideData, str]:
    """Read one slide found by :func:`locate_slide`; returns it and where it came from."""
    found = locate_slide(dataset, slide_id, hub, unsigned=unsigned, allow_rollback=allow_rollback)
    slide = read_slide(found.path)
    found.check_unchanged()
    return slide, found.source


def map_seeds(source: str | os.PathLike[str], slide: SlideData, classes: tuple[str, ...] | None, *,
              strict: bool = True) -> Seeds:
    """Seeds with the classes asked for; else the dataset's ground-truth classes (so indices match
    its ``label`` column), refusing a seed class it does not have (``strict=False``, for drawing
    seeds: use the seeds' own names instead); else the seeds' own names, sorted."""
    patch = slide.metadata.patching.level0_size_px
    if classes:
        return read_seeds(source, slide.coords, patch, classes)
    found = read_seeds(source, slide.coords, patch, None)
    truth = slide.metadata.classes
    if not truth:
        return found
    known = {c.casefold() for c in truth}
    unknown = [c for c in found.classes if c.casefold() not in known]
    if unknown and not strict:
        return found
    if unknown:
        raise SeedError(f"seed class {unknown[0]!r} is not one of the dataset's classes {list(truth)}: use those "
                        "names, or name the classes yourself with --classes (binary: negative first)")
    return found.under(truth)


def run_sic(
    dataset: str | os.PathLike[str] | SlideFile,
    seeds: str | os.PathLike[str],
    *,
    slide_id: str | None = None,
    classes: tuple[str, ...] | None = None,
    hub: str | None = None,
    method: str = DEFAULT_METHOD,
    rule: str | None = None,
    score: str | None = None,
    normalize: bool = False,
    smooth: float | None = None,
    random_state: int | None = 0,
) -> SicResult:
    """Label every patch of one slide from a few seeds, with the method asked for.

    Parameters
    ----------
    dataset : path-like, str or SlideFile
        A dataset folder (verified, see :func:`locate_slide`), a hub reference
        ``publisher/name[@version]``, or a slide located before (how an unsigned
        folder is read: ``locate_slide(folder, slide, unsigned=True)``).
    seeds : path-like or str
        A seed CSV or QuPath GeoJSON, or patch indices ``"12:tumour,40:stroma"``
        (see :func:`read_seeds`).
    slide_id : str, optional
        The slide; may be omitted when the dataset has one slide.
    classes : tuple of str, optional
        Class names, index order. For two classes the first is the negative
        (background) class and the second the positive one SIC refines. When
        None: the dataset's ground-truth class names if the seeds use them,
        else the seeds' names sorted.
    method : str, default="spreading"
        A registered method (:func:`~sic_share.sic.list_methods`): ``spreading``
        (the default, chosen by the evaluation in ``benchmarks/sic.py``), ``sic``,
        ``prototype`` or ``logreg``.
    rule, score : str, optional
        SIC's options (``method="sic"`` only; given to another method they are an
        error). See :class:`SeededIterativeClustering`.
    normalize : bool, default=False
        L2-normalise embeddings first (every method).
    smooth : float, optional
        Weight of grid neighbours in the final smoothing; None keeps the method's default.
    random_state : int, default=0

    Returns
    -------
    SicResult
    """
    # an unknown method, or an option of another method, fails before any reading
    create_method(method, rule=rule, score=score, normalize=normalize or None, smooth=smooth)
    slide, where = load_slide(dataset, slide_id, hub)
    mapped = map_seeds(seeds, slide, tuple(classes) if classes else None)
    n_classes = len(mapped.classes)
    if not classes and not slide.metadata.classes and n_classes == 2:
        # Binary methods treat the second class as the positive one: never let the alphabet choose it.
        a, b = mapped.classes
        raise SeedError(f"the seeds name two classes, {a!r} and {b!r}, and the dataset names none: say which is "
                        f"the positive one with --classes NEGATIVE,POSITIVE (e.g. --classes {a},{b})")
    if len(slide) < n_classes:
        raise SeedError(f"slide {slide.slide_id} has {len(slide)} patches, fewer than the {n_classes} classes "
                        f"asked for: choose another slide or fewer classes")
    missing = [name for name, n in mapped.counts.items() if n == 0]
    if n_classes == 2 and missing:
        (have,) = [name for name in mapped.classes if name not in missing]
        raise SeedError(f"the seeds mark only {have!r} patches: the {method} method needs both classes, add at "
                        f"least one seed on {missing[0]!r}")
    if missing:
        raise SeedError(f"no seed marks a patch of {', '.join(map(repr, missing))}: the {method} method needs seeds "
                        "of every class, add some or leave the class out of --classes")
    estimator = create_method(method, n_classes=n_classes, random_state=random_state, rule=rule, score=score,
                              normalize=normalize or None, smooth=smooth)
    estimator.fit(slide.embeddings, mapped.labels, slide.coords)
    labels = np.asarray(estimator.labels_, dtype=np.int8)
    confidence = np.asarray(estimator.confidence_, dtype=np.float32)
    return SicResult(slide, mapped, labels, mapped.classes, estimator, where, method, confidence)
