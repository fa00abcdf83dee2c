"""Open a local dataset folder for reading: what ``sic``, ``app``, ``umap``, ``to-anndata``,
``benchmark`` and ``similarity`` check before they use a byte of it.

:func:`open_folder` checks what is cheap for the whole folder (the envelope, the
manifest, the listing of ``slides/``); :meth:`DatasetFolder.verify` then hashes
only the slide files a command is about to read, so annotating one slide of a
100-slide folder hashes one file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sic_share.dataset import SLIDES_DIR, slide_files
from sic_share.errors import DatasetError, VerificationError
from sic_share.signing._manifest import ENVELOPE, Manifest, check_file, listed_present, read_signed_folder
from sic_share.signing._trust import TrustStore, VersionRecord

__all__ = ["DatasetFolder", "open_folder"]


@dataclass(frozen=True)
class DatasetFolder:
    """A local dataset folder whose envelope, manifest and listing have been checked.

    Attributes
    ----------
    root : Path
    manifest : Manifest or None
        The verified manifest; None for an unsigned folder (opened with ``unsigned=True``).
    slides : dict of str to Path
        Slide id to file, for the slides the folder holds (a copy made by
        ``pull --slides`` holds some of those its manifest lists).
    note : str or None
        One line for the user when the folder is unsigned (its bytes are checked by
        nobody); None for a signed folder. The library never prints it.
    """

    root: Path
    manifest: Manifest | None
    slides: dict[str, Path]
    note: str | None = None
    _record: VersionRecord | None = field(default=None, repr=False, compare=False)

    @property
    def source(self) -> str:
        """How results name the folder: its path as given."""
        return str(self.root)

    def listed(self, slide_id: str) -> bool:
        """Whether the signed manifest lists the slide (it may still be absent from a partial copy)."""
        return self.manifest is not None and f"{SLIDES_DIR}/{slide_id}.parquet" in self.manifest.files

    def verify(self, slide_ids: Iterable[str] | None = None) -> dict[str, str | None]:
        """Check the slides about to be read against their signed size and sha256.

        Parameters
        ----------
        slide_ids : iterable of str, optional
            The slides to check (default: every slide the folder holds).

        Returns
        -------
        dict of str to str or None
            Slide id to the sha256 that was checked, which callers pass along
            (the app keys its cache by it); None for each slide of an unsigned folder.

        Notes
        -----
        Only the chosen files are hashed (one read each). Once every chosen file verifies, the manifest's version is
        recorded as verified, so an older version is refused later (as after
        ``verify``). The file is read again by whoever uses it: someone who can
        write the folder between this check and that read can still change what is
        read (see docs/trust.md, "Local dataset folders").
        """
        wanted = list(self.slides) if slide_ids is None else list(slide_ids)
        unknown = [slide_id for slide_id in wanted if slide_id not in self.slides]
        if unknown:
            raise DatasetError(f"{self.root} holds no slide {unknown[0]!r}: its slides are "
                               f"{', '.join(sorted(self.slides)[:5])}{', ...' if len(self.slides) > 5 else ''}")
        if self.manifest is None:
            return dict.fromkeys(wanted)
        digests: dict[str, str | None] = {}
        for slide_id in wanted:
            digests[slide_id] = _check_file(self.root, self.manifest, f"{SLIDES_DIR}/{slide_id}.parquet")
        if self._record is not None:
            self._record.record(self.manifest.publisher, self.manifest.name, self.manifest.version)
        return digests


def open_folder(
    dataset_dir: str | os.PathLike[str],
    *,
    unsigned: bool = False,
    allow_rollback: bool = False,
    trust: TrustStore | None = None,
    record: VersionRecord | None = None,
) -> DatasetFolder:
    """Open a local dataset folder for reading, refusing one that does not verify.

    Parameters
    ----------
    dataset_dir : path-like
        The folder holding ``manifest.json``, ``manifest.dsse.json`` and ``slides/``.
    unsigned : bool, default=False
        Accept a folder without an envelope (the holder's own ``export --no-sign``
        output); the result then carries a :attr:`~DatasetFolder.note` saying that
        nobody checks its bytes. A signed folder is verified whatever this says.
    allow_rollback : bool, default=False
        Accept a version older than one verified before.
    trust, record : optional
        The trust store and the record of verified versions (default: the user's).

    Returns
    -------
    DatasetFolder
        Call :meth:`~DatasetFolder.verify` with the slides to read before reading them.

    Raises
    ------
    VerificationError, TrustError
        One sentence naming the first check that failed: no envelope (without
        ``unsigned``), a key nobody trusts or trusted for another publisher, an
        expired or rolled-back version, a manifest that is not the signed payload,
        a Parquet file in ``slides/`` that the manifest does not list, a folder
        that holds none of the listed slides.
    DatasetError
        Not a folder, or (unsigned) a folder without slide files.

    Notes
    -----
    Checks, in order, as ``verify`` makes them: the envelope is signed by a
    trusted key; the manifest's publisher is the one that key is trusted for; it
    has not expired; its version is not older than one verified before;
    ``manifest.json`` is byte for byte the signed payload; no unlisted Parquet
    file sits in ``slides/``. Listed files that are absent are allowed (a copy
    made by ``pull --slides``); what is read must be present, and is hashed by
    :meth:`~DatasetFolder.verify`.
    """
    root = Path(dataset_dir)
    files = slide_files(root) if not (root / ENVELOPE).exists() else None  # also: not a folder
    if files is not None:
        if not unsigned:
            raise VerificationError(
                f"{root} is not signed (no {ENVELOPE}), so nobody vouches for its bytes: sign it with "
                f"'sic-share sign {root}', or pass --unsigned to read it unchecked"
            )
        note = f"{root} is unsigned: its bytes are checked by nobody (read with --unsigned)"
        return DatasetFolder(root, None, {p.stem: p for p in files}, note)
    record = record or VersionRecord()
    manifest = read_signed_folder(root, trust=trust, record=record, allow_rollback=allow_rollback)
    present = listed_present(root, manifest)
    if not present:
        raise VerificationError(f"{root} holds none of the files of {manifest.ref}: pull them again")
    held = {Path(name).stem: root / name for name in sorted(present)}
    return DatasetFolder(root, manifest, held, None, record)


def _check_file(root: Path, manifest: Manifest, fname: str) -> str:
    """Check one listed file's size and sha256; returns the digest."""
    return check_file(root, manifest, fname, missing=(
        f" from {root}: pull it again ('sic-share pull {manifest.ref} --slides {Path(fname).stem}')"))
