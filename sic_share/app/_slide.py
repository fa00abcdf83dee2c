"""One slide for the app: found like ``sic`` finds it, decoded once, kept memory-mapped by its sha256.

Everything the annotation loop needs that does not depend on the seeds is computed
once per slide file and kept beside the verified file in the sha256 cache
(``<cache>/sha256/<ab>/.<digest>.app/``): the decoded embedding matrix as a ``.npy``
that is memory-mapped on the next start, the working projection SIC clusters, the
map colours and the 2-D layout. The key is the slide file's sha256, so a changed file
never meets an old cache; a cache folder is complete or absent (written under a
temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sic_share._paths import cache_dir
from sic_share.dataset import SlideMetadata, read_slide
from sic_share.sic._run import SlideFile, locate_slide

__all__ = ["CachedSlide", "FULL_DIMS_VALUES", "SlideFile", "WORK_DIMS", "locate_slide", "open_cached"]

#: Above this many embedding dimensions the loop clusters a cached principal subspace of this many ...
WORK_DIMS = 64
#: ... unless the slide has at most this many values (patches x dimensions): then the embeddings themselves,
#: as ``sic-share sic`` does, so that a small slide gets exactly the CLI's labels. Measured on 2 cores
#: (label spreading, one fit): 500 x 1280 145 ms against 128 ms in 64-d; 1000 x 1280 712 ms against 176 ms.
FULL_DIMS_VALUES = 1 << 19
#: Rows drawn to fit the working projection (randomized SVD), as SIC fits its own.
_PCA_SAMPLE = 8192
_CHUNK = 8192
_CACHE_VERSION = 1


def _file_digest(path: Path, root: Path) -> str:
    """sha256 of a local file, remembered by (path, inode, size, mtime) so a warm start does not hash it."""
    st = path.stat()
    stamp = {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    memo = root / "app-digests" / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32] + ".json")
    try:
        known = json.loads(memo.read_text())
        if known.get("stamp") == stamp:
            return str(known["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    from sic_share.signing import sha256_file

    digest = sha256_file(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
    except OSError:
        pass  # the memo only saves time
    return digest


class CachedSlide:
    """One slide's seed-independent arrays, memory-mapped from the cache folder.

    Attributes
    ----------
    slide_id, source : str
    digest : str
        sha256 of the slide file.
    folder : Path
        The cache folder.
    metadata : SlideMetadata
    coords : ndarray of shape (n_patches, 2), int32
        Level-0 patch centres.
    truth : ndarray of shape (n_patches,), int8
        Ground-truth labels of the dataset (-1: none).
    embeddings : ndarray of shape (n_patches, dim), memory-mapped
        The decoded embedding matrix in the file's dtype.
    """

    def __init__(self, folder: Path, digest: str, source: str) -> None:
        self.folder = folder
        self.digest = digest
        self.source = source
        info = json.loads((folder / "slide.json").read_text())
        self.slide_id: str = info["slide_id"]
        self.metadata = SlideMetadata.from_json(info["metadata"].encode(), self.slide_id)
        self.coords = np.load(folder / "coords.npy")
        self.truth = np.load(folder / "truth.npy")
        self.embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def patch_size(self) -> float:
        """Patch side in level-0 pixels."""
        return float(self.metadata.patching.level0_size_px)

    def derived(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The array ``name``: from the cache folder (memory-mapped), or computed once and kept there."""
        path = self.folder / f"{name}.npy"
        if path.exists():
            return np.load(path, mmap_mode="r")
        value = np.ascontiguousarray(compute())
        _save(path, value)
        return np.load(path, mmap_mode="r")

    def work_matrix(self) -> np.ndarray:
        """What the loop clusters: the embeddings as float32 when ``dim <= WORK_DIMS`` or the slide is small
        (``n_patches * dim <= FULL_DIMS_VALUES``), else a cached ``WORK_DIMS``-dimensional principal subspace
        of them (float32)."""
        n, dim = self.embeddings.shape
        if dim <= WORK_DIMS or n * dim <= FULL_DIMS_VALUES:
            return self.derived("work", lambda: np.asarray(self.embeddings, np.float32))
        return self.derived(f"work{WORK_DIMS}", self._project)

    def _project(self) -> np.ndarray:
        from sklearn.utils.extmath import randomized_svd

        X = self.embeddings
        n, d = X.shape
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(n, size=min(n, _PCA_SAMPLE), replace=False))
        S = np.asarray(X[rows], np.float32)
        mean = S.mean(axis=0)
        _, _, vt = randomized_svd(S - mean, WORK_DIMS, n_iter=4, random_state=0)
        W = np.ascontiguousarray(vt.T, np.float32)
        Z = np.empty((n, WORK_DIMS), np.float32)
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            np.matmul(np.asarray(X[start:stop], np.float32) - mean, W, out=Z[start:stop])
        return Z


def _save(path: Path, value: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, value)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _folder_for(digest: str, root: Path) -> Path:
    return root / "sha256" / digest[:2] / f".{digest}.app"


def open_cached(slide: SlideFile, *, root: str | os.PathLike[str] | None = None) -> CachedSlide:
    """The slide's cache folder, decoding the Parquet file into it the first time.

    Parameters
    ----------
    slide : SlideFile
        From :func:`locate_slide`.
    root : path-like, optional
        The cache folder (default: sic-share's, where pulled files are kept).

    Notes
    -----
    Cold: one Parquet read (:func:`~sic_share.dataset.read_slide` in the file's
    dtype, so float16 stays float16) and one ``.npy`` write. Warm: the file's
    sha256 (known for hub files, remembered by inode/size/mtime for local ones) and
    a memory map; pages are read as they are touched.
    """
    base = Path(root) if root is not None else cache_dir()
    digest = slide.digest or _file_digest(slide.path, base)
    folder = _folder_for(digest, base)
    if (folder / "slide.json").exists():
        try:
            info = json.loads((folder / "slide.json").read_text())
            if info.get("version") == _CACHE_VERSION:
                return CachedSlide(folder, digest, slide.source)
        except (OSError, ValueError):
            pass
        shutil.rmtree(folder, ignore_errors=True)
    data = read_slide(slide.path, dtype=np.float16 if _is_half(slide.path) else np.float32)
    slide.check_unchanged()  # what is cached under the verified digest is what was verified
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        np.save(tmp / "coords.npy", np.ascontiguousarray(data.coords, np.int32))
        np.save(tmp / "truth.npy", np.ascontiguousarray(data.labels, np.int8))
        np.save(tmp / "embeddings.npy", np.ascontiguousarray(data.embeddings))
        info: dict[str, Any] = {"version": _CACHE_VERSION, "slide_id": data.slide_id,
                                "metadata": data.metadata.to_json().decode()}
        (tmp / "slide.json").write_text(json.dumps(info))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process made it first
            if not (folder / "slide.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CachedSlide(folder, digest, slide.source)


def _is_half(path: Path) -> bool:
    from sic_share.dataset import read_slide_metadata

    meta, _ = read_slide_metadata(path)
    return meta.embedding_dtype == "float16"
