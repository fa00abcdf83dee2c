"""Write and read one slide's Parquet file of format v1."""

from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sic_share._fsutil import resolve
from sic_share.dataset._schema import SlideMetadata, arrow_schema, check_name, check_schema
from sic_share.errors import DatasetError

__all__ = ["SlideData", "SlideWriter", "check_rows", "write_slide", "read_slide", "read_slide_metadata"]

_ROW_GROUP_BYTES = 16 << 20
_INT32_MAX = np.iinfo(np.int32).max


def _position_keys(coords: np.ndarray) -> np.ndarray:
    """One int64 per non-negative int32 (x, y): equal keys are equal positions."""
    return (coords[:, 0].astype(np.int64) << 32) | coords[:, 1].astype(np.int64)


def _first_duplicate(keys: np.ndarray) -> tuple[tuple[int, int], int] | None:
    """``((x, y), n_repeats)`` for the smallest position held by more than one key, or None.

    ``n_repeats`` counts the rows that repeat an earlier position. One sort of the keys.
    """
    if len(keys) < 2:
        return None
    ordered = np.sort(keys)
    repeats = ordered[1:] == ordered[:-1]
    if not repeats.any():
        return None
    key = int(ordered[1:][repeats][0])
    return (key >> 32, key & 0xFFFFFFFF), int(repeats.sum())


def check_rows(slide: SlideData, where: str) -> None:
    """Refuse rows that later commands cannot use: what ``sign`` checks beyond the schema.

    Parameters
    ----------
    slide : SlideData
        A slide as :func:`read_slide` returns it (null labels read as -1).
    where : str
        The file, as the error names it.

    Raises
    ------
    DatasetError
        When a patch centre is negative, a position ``(x, y)`` appears twice, or a
        label is not an index into the class list (or -1/null for none).

    Notes
    -----
    Cost: a few vectorised passes over the coordinates and labels and one sort
    of an int64 key per patch (about 40 ms for a million shuffled patches); the
    embeddings are not touched.
    """
    coords, labels, classes = slide.coords, slide.labels, slide.metadata.classes
    if len(coords) and coords.min() < 0:
        x, y = coords[np.flatnonzero((coords < 0).any(axis=1))[0]]
        raise DatasetError(
            f"{where} has a patch at negative (x={x}, y={y}): coordinates are level-0 pixel centres, "
            "export or import the slide again"
        )
    duplicate = _first_duplicate(_position_keys(coords))
    if duplicate is not None:
        (x, y), extra = duplicate
        raise DatasetError(
            f"{where} has more than one patch at (x={x}, y={y}) ({extra} repeated position(s) in all): "
            "each position holds one patch, export or import the slide again without duplicates"
        )
    if len(labels) and (labels.min() < -1 or labels.max() >= len(classes)):
        bad = int(labels[(labels < -1) | (labels >= len(classes))][0])
        named = f"{len(classes)} classes ({', '.join(classes)})" if classes else "no classes"
        raise DatasetError(
            f"{where} has label {bad} but the dataset names {named}: "
            "export or import it again with every class named (--classes), null for no label"
        )


def _row_group_rows(dim: int, dtype: str) -> int:
    """Rows per row group: about 16 MiB of embeddings, between 1024 and 65536 rows."""
    row_bytes = dim * (2 if dtype == "float16" else 4)
    return int(min(65536, max(1024, _ROW_GROUP_BYTES // row_bytes)))


@dataclass
class SlideData:
    """One slide's patches as numpy arrays.

    Attributes
    ----------
    slide_id : str
        Pseudonym of the slide.
    coords : ndarray of shape (n_patches, 2), int32
        Patch centres (x, y) in level-0 pixels of the source slide.
    embeddings : ndarray of shape (n_patches, dim)
        float32 unless another dtype was asked for.
    tissue : ndarray of shape (n_patches,), float32
        Tissue fraction of each patch.
    labels : ndarray of shape (n_patches,), int8
        Ground-truth class index, -1 where the patch has none.
    metadata : SlideMetadata
        Model, patching and class names from the file footer.
    """

    slide_id: str
    coords: np.ndarray
    embeddings: np.ndarray
    tissue: np.ndarray
    labels: np.ndarray
    metadata: SlideMetadata

    def __len__(self) -> int:
        return int(self.coords.shape[0])


class SlideWriter:
    """Stream one slide's rows into a Parquet file that appears only when complete.

    Rows go to a hidden temporary file beside ``path``; :meth:`close` renames it
    into place, and leaving the ``with`` block on an exception deletes it, so a
    crash never leaves a half-written slide under its final name.

    Parameters
    ----------
    path : path-like
        Final local path, conventionally ``<dataset>/slides/<slide_id>.parquet``.
    slide_id : str
        Pseudonym written in every row.
    metadata : SlideMetadata
        Stored as JSON under the footer key ``sic_share``.

    Notes
    -----
    Encoding: zstd for every column. float32 embeddings use BYTE_STREAM_SPLIT
    (about 0.85 x raw); float16 embeddings stay PLAIN, because DuckDB cannot read
    a FLOAT16 column written with BYTE_STREAM_SPLIT. Row groups hold about
    16 MiB of embeddings so that a remote reader fetches little more than it
    needs; rows are in the order given (export writes them in grid order, so the
    ``y`` statistics let readers skip row groups).
    """

    def __init__(self, path: str | os.PathLike[str], *, slide_id: str, metadata: SlideMetadata) -> None:
        self.path = Path(path)
        self.slide_id = check_name(slide_id, "slide id")
        self.metadata = metadata
        self._dim = metadata.model.dim
        self._n_classes = len(metadata.classes)
        self._rows_per_group = _row_group_rows(self._dim, metadata.embedding_dtype)
        self._np_dtype = np.dtype(metadata.embedding_dtype)
        self._schema = arrow_schema(self._dim, metadata.embedding_dtype, metadata)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._keys: list[np.ndarray] = []  # (x, y) of every row written, checked for duplicates on close
        self.n_rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        element = "embedding.list.element"
        self._writer = pq.ParquetWriter(
            self._tmp,
            self._schema,
            compression="zstd",
            use_dictionary=["slide_id"],
            use_byte_stream_split=[element] if metadata.embedding_dtype == "float32" else False,
            write_statistics=["x", "y", "tissue", "label"],
        )

    def write(
        self,
        coords: np.ndarray,
        embeddings: np.ndarray,
        *,
        tissue: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        """Append patches.

        Parameters
        ----------
        coords : array-like of shape (n, 2)
            Level-0 patch centres, non-negative integers; each position once per
            slide (checked on :meth:`close`).
        embeddings : array-like of shape (n, dim)
            Finite values; cast to the dataset's embedding dtype.
        tissue : array-like of shape (n,), optional
            Tissue fraction in [0, 1]; 1.0 when not known.
        labels : array-like of shape (n,), optional
            Class index per patch, -1 for none.
        """
        coords = np.asarray(coords)
        embeddings = np.asarray(embeddings)
        n = coords.shape[0] if coords.ndim == 2 else -1
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise DatasetError(f"coords of shape {coords.shape} should be (n_patches, 2)")
        if not np.issubdtype(coords.dtype, np.integer):
            raise DatasetError(f"coords have dtype {coords.dtype}, they should be integer pixel positions")
        if n and (coords.min() < 0 or coords.max() > _INT32_MAX):
            raise DatasetError(
                f"coords range [{coords.min()}, {coords.max()}] is outside [0, {_INT32_MAX}]: "
                "they should be level-0 pixel centres"
            )
        if embeddings.shape != (n, self._dim):
            raise DatasetError(
                f"embeddings of shape {embeddings.shape} do not match coords of {n} patches "
                f"and dim={self._dim}"
            )
        if not np.issubdtype(embeddings.dtype, np.number) or np.issubdtype(embeddings.dtype, np.complexfloating):
            raise DatasetError(f"embeddings have dtype {embeddings.dtype}, they should be real numbers")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
            values = embeddings.astype(self._np_dtype, copy=False)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            raise DatasetError(
                f"embedding of patch {self.n_rows + bad} at {tuple(coords[bad])} is not finite "
                f"(NaN or out of {self._np_dtype} range): fix the encoder output or use float32"
            )
        tissue = np.ones(n, np.float32) if tissue is None else np.asarray(tissue, np.float32)
        if tissue.shape != (n,) or (n and (tissue.min() < 0 or tissue.max() > 1 or not np.isfinite(tissue).all())):
            raise DatasetError(f"tissue fractions should be n={n} values in [0, 1]")
        if labels is None:
            label_arr = pa.nulls(n, pa.int8())
        else:
            labels = np.asarray(labels)
            if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
                raise DatasetError(f"labels should be n={n} integers, got shape {labels.shape} of {labels.dtype}")
            if n and (labels.min() < -1 or labels.max() >= max(self._n_classes, 0)):
                raise DatasetError(
                    f"labels range [{labels.min()}, {labels.max()}] does not fit the "
                    f"{self._n_classes} class names given: name every class (--classes) and use -1 for none"
                )
            label_arr = pa.array(labels.astype(np.int8), mask=labels < 0)
        flat = pa.array(np.ascontiguousarray(values).reshape(-1))
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([self.slide_id] * n, pa.string()),
                pa.array(coords[:, 0].astype(np.int32)),
                pa.array(coords[:, 1].astype(np.int32)),
                pa.array(tissue),
                label_arr,
                pa.FixedSizeListArray.from_arrays(flat, self._dim),
            ],
            schema=self._schema,
        )
        self._keys.append(_position_keys(coords))
        self._pending.append(batch)
        self._pending_rows += n
        self.n_rows += n
        while self._pending_rows >= self._rows_per_group:
            self._flush(self._rows_per_group)

    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending, schema=self._schema)
        self._writer.write_table(table.slice(0, rows), row_group_size=rows)
        rest = table.slice(rows)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows

    def close(self) -> Path:
        """Write the last row group and move the file to its final name.

        Refuses (and discards the file) when the slide has no patches or two
        patches at one position.
        """
        if self.n_rows == 0:
            self.abort()
            raise DatasetError(f"slide {self.slide_id} has no patches: nothing was written")
        duplicate = _first_duplicate(np.concatenate(self._keys))
        if duplicate is not None:
            self.abort()
            (x, y), extra = duplicate
            raise DatasetError(
                f"slide {self.slide_id} has more than one patch at (x={x}, y={y}) ({extra} repeated position(s) "
                "in all): each position holds one patch, give each (x, y) once; nothing was written"
            )
        if self._pending_rows:
            self._flush(self._pending_rows)
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - closing a writer we are throwing away
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> SlideWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_slide(
    path: str | os.PathLike[str],
    *,
    slide_id: str,
    metadata: SlideMetadata,
    coords: np.ndarray,
    embeddings: np.ndarray,
    tissue: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> Path:
    """Write one slide in one call; see :class:`SlideWriter`."""
    with SlideWriter(path, slide_id=slide_id, metadata=metadata) as writer:
        writer.write(coords, embeddings, tissue=tissue, labels=labels)
    return writer.path


@contextmanager
def _open_parquet(source: str | os.PathLike[str]) -> Iterator[tuple[pq.ParquetFile, str]]:
    fs, path = resolve(source)
    where = os.path.basename(path) or path
    try:
        with fs.open(path, "rb") as handle:
            try:
                yield pq.ParquetFile(handle), where
            except (pa.ArrowInvalid, OSError) as exc:
                raise DatasetError(
                    f"{where} is not a readable Parquet file ({exc}); it is truncated or corrupt: "
                    "pull or export it again"
                ) from None
    except FileNotFoundError:
        raise DatasetError(f"{source} does not exist") from None


def read_slide_metadata(source: str | os.PathLike[str]) -> tuple[SlideMetadata, int]:
    """Return a slide file's metadata and row count, reading only its footer."""
    with _open_parquet(source) as (pf, where):
        return check_schema(pf.schema_arrow, where), pf.metadata.num_rows


def _all_finite(values: np.ndarray) -> bool:
    if values.dtype == np.float16:
        # exponent bits all ones <=> inf or NaN; an integer pass is 2-3x faster than isfinite on float16
        return not ((values.view(np.uint16) & 0x7C00) == 0x7C00).any()
    return bool(np.isfinite(values).all())


def read_slide(
    source: str | os.PathLike[str],
    *,
    dtype: np.dtype | type = np.float32,
    threads: int | None = None,
) -> SlideData:
    """Read one slide's file into numpy arrays.

    Parameters
    ----------
    source : path or URL
        Local path, ``file://`` or ``s3://`` URL of a slide file.
    dtype : numpy dtype, default=np.float32
        dtype of the returned embeddings. ``np.float16`` on a float16 dataset
        skips the cast and halves the memory.
    threads : int, optional
        Row groups decoded at once; defaults to the number of CPUs (at most 8).

    Returns
    -------
    SlideData

    Raises
    ------
    DatasetError
        When the file is not format v1, is truncated, mixes slide ids, or holds
        a missing or non-finite embedding.

    Notes
    -----
    Memory: the output arrays are allocated once and each worker fills its row
    group's slice, so the peak is the result plus ``threads`` row groups (about
    16 MiB of embeddings each, plus Arrow's decoding buffers), never twice the
    slide. Cost: Parquet decoding of the embedding column dominates; each worker
    opens its own handle, which on 2 CPUs makes the read about 1.8 x faster than
    one sequential pass. ``benchmarks/format.py`` measures it against
    ``numpy.load``.
    """
    with _open_parquet(source) as (pf, where):
        meta = check_schema(pf.schema_arrow, where)
        sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    n, dim = sum(sizes), meta.model.dim
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    coords = np.empty((n, 2), np.int32)
    tissue = np.empty(n, np.float32)
    labels = np.empty(n, np.int8)
    embeddings = np.empty((n, dim), dtype)

    def fill(i: int) -> set[str]:
        start, stop = starts[i], starts[i + 1]
        with _open_parquet(source) as (handle, _):
            table = handle.read_row_group(i)
        coords[start:stop, 0] = table.column("x").to_numpy()
        coords[start:stop, 1] = table.column("y").to_numpy()
        tissue[start:stop] = table.column("tissue").to_numpy()
        labels[start:stop] = table.column("label").fill_null(-1).to_numpy()
        offset = start
        for chunk in table.column("embedding").chunks:
            if chunk.null_count:
                raise DatasetError(f"{where} has a missing embedding: the file is corrupt")
            values = chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
            embeddings[offset : offset + len(values)] = values
            offset += len(values)
        if not _all_finite(embeddings[start:stop]):
            raise DatasetError(
                f"{where} has a non-finite (NaN or infinite) embedding: the publisher must fix and re-export it"
            )
        return {value.as_py() for value in table.column("slide_id").unique()}

    workers = max(1, min(threads or os.cpu_count() or 1, 8, len(sizes)))
    if workers == 1:
        found = [fill(i) for i in range(len(sizes))]
    else:
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(fill, range(len(sizes))))
    slide_ids = set().union(*found)
    if not slide_ids:
        raise DatasetError(f"{where} holds no patches")
    if len(slide_ids) > 1:
        raise DatasetError(f"{where} mixes several slide ids: one file must hold one slide")
    return SlideData(slide_ids.pop(), coords, embeddings, tissue, labels, meta)
