"""Dataset format v1: Parquet round trips, DuckDB readability, streaming reads, bad files."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import assert_one_line_error, blobs, make_dataset, metadata
from sic_share.dataset import SlideWriter, arrow_schema, read_slide, read_slide_metadata, summarize, write_slide
from sic_share.dataset._io import _row_group_rows
from sic_share.errors import DatasetError


@pytest.mark.parametrize("dtype, tol", [("float16", 2e-3), ("float32", 0.0)])
def test_round_trip_keeps_every_column(tmp_path, dtype, tol):
    coords, emb, labels = blobs(500, 24)
    labels[::7] = -1
    tissue = np.linspace(0.5, 1.0, 500, dtype=np.float32)
    path = write_slide(tmp_path / "a1.parquet", slide_id="a1", metadata=metadata(24, dtype=dtype),
                       coords=coords, embeddings=emb, tissue=tissue, labels=labels)
    slide = read_slide(path)
    assert slide.slide_id == "a1"
    assert slide.coords.dtype == np.int32 and slide.coords.shape == (500, 2)
    np.testing.assert_array_equal(slide.coords, coords)
    assert slide.embeddings.dtype == np.float32 and slide.embeddings.shape == (500, 24)
    np.testing.assert_allclose(slide.embeddings, emb, rtol=tol, atol=tol * 10)
    np.testing.assert_array_equal(slide.labels, labels)
    np.testing.assert_allclose(slide.tissue, tissue)
    assert slide.metadata == metadata(24, dtype=dtype)
    assert read_slide(path, dtype=np.float16).embeddings.dtype == np.float16


def test_footer_metadata_is_json_under_sic_share_key(tmp_path):
    coords, emb, _ = blobs(10, 8)
    path = write_slide(tmp_path / "a.parquet", slide_id="a", metadata=metadata(8), coords=coords, embeddings=emb)
    footer = json.loads(pq.read_schema(path).metadata[b"sic_share"])
    assert footer["format_version"] == 1
    assert footer["model"]["dim"] == 8
    assert footer["patching"] == {"size_px": 256, "level0_size_px": 256, "level0_mpp": 0.5,
                                  "target_mpp": 0.5, "stride_px": 128}
    assert footer["classes"] == ["normal", "tumour"]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_duckdb_reads_what_we_write(tmp_path, dtype):
    coords, emb, labels = blobs(300, 16)
    path = write_slide(tmp_path / "d.parquet", slide_id="d", metadata=metadata(16, dtype=dtype),
                       coords=coords, embeddings=emb, labels=labels)
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT x, y, label, embedding::FLOAT[16] FROM read_parquet('{path}') ORDER BY y, x"
    ).fetchall()
    assert len(rows) == 300
    got = np.array([r[3] for r in rows], dtype=np.float32)
    order = np.lexsort((coords[:, 0], coords[:, 1]))
    np.testing.assert_allclose(got, emb[order], atol=2e-2 if dtype == "float16" else 0)
    # array functions work once cast to a fixed size, as docs/format.md shows
    sim = con.execute(
        f"SELECT array_cosine_similarity(embedding::FLOAT[16], embedding::FLOAT[16]) FROM '{path}' LIMIT 1"
    ).fetchone()[0]
    assert sim == pytest.approx(1.0, abs=1e-5)


def test_encodings_float32_byte_stream_split_float16_plain(tmp_path):
    coords, emb, _ = blobs(100, 8)
    encodings = {}
    for dtype in ("float16", "float32"):
        path = write_slide(tmp_path / f"{dtype}.parquet", slide_id="e", metadata=metadata(8, dtype=dtype),
                           coords=coords, embeddings=emb)
        column = pq.ParquetFile(path).metadata.row_group(0).column(5)
        assert column.path_in_schema == "embedding.list.element"
        assert column.compression == "ZSTD"
        encodings[dtype] = column.encodings
    assert "BYTE_STREAM_SPLIT" in encodings["float32"]
    # DuckDB cannot read FLOAT16 written with BYTE_STREAM_SPLIT
    assert "BYTE_STREAM_SPLIT" not in encodings["float16"]


def test_float16_file_is_no_larger_than_raw(tmp_path):
    rng = np.random.default_rng(1)
    low_rank = np.maximum(rng.normal(size=(4000, 8)) @ rng.normal(size=(8, 256)) + rng.normal(size=(4000, 256)), 0)
    coords = np.stack(np.meshgrid(np.arange(80), np.arange(50)), -1).reshape(-1, 2) * 128
    path = write_slide(tmp_path / "s.parquet", slide_id="s", metadata=metadata(256), coords=coords, embeddings=low_rank)
    raw = low_rank.astype(np.float16).nbytes
    assert path.stat().st_size <= 1.05 * raw


def test_row_groups_stream_a_large_slide(tmp_path):
    dim = 512
    rows = _row_group_rows(dim, "float16")
    assert rows == 16384
    coords, emb, _ = blobs(rows * 2 + 100, dim)
    with SlideWriter(tmp_path / "big.parquet", slide_id="big", metadata=metadata(dim)) as writer:
        for start in range(0, len(coords), 5000):  # the exporter writes in batches
            writer.write(coords[start:start + 5000], emb[start:start + 5000])
    meta = pq.ParquetFile(writer.path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [rows, rows, 100]
    slide = read_slide(writer.path)
    np.testing.assert_array_equal(slide.coords, coords)


def test_writer_leaves_nothing_when_it_fails(tmp_path):
    coords, emb, _ = blobs(50, 8)
    emb[10, 3] = np.nan
    with pytest.raises(DatasetError, match="patch 15 .* not finite"):
        with SlideWriter(tmp_path / "slides" / "x.parquet", slide_id="x", metadata=metadata(8)) as writer:
            writer.write(coords[:5], emb[:5])
            writer.write(coords, emb)
    assert list((tmp_path / "slides").iterdir()) == []


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c, e, l: (c[:, :1], e, l), "should be \\(n_patches, 2\\)"),
        (lambda c, e, l: (c[:-1], e, l), "do not match coords"),
        (lambda c, e, l: (c.astype(float), e, l), "integer pixel positions"),
        (lambda c, e, l: (c - 1000, e, l), "outside"),
        (lambda c, e, l: (c, e.astype(str), l), "real numbers"),
        (lambda c, e, l: (c, e, l + 5), "class names"),
        (lambda c, e, l: (c, e * 1e6, l), "not finite"),
    ],
)
def test_writer_rejects_bad_arrays(tmp_path, change, message):
    coords, emb, labels = blobs(40, 8)
    coords, emb, labels = change(coords, emb, labels)
    with pytest.raises(DatasetError, match=message):
        write_slide(tmp_path / "b.parquet", slide_id="b", metadata=metadata(8), coords=coords,
                    embeddings=emb, labels=labels)
    assert not list(tmp_path.iterdir())


def test_truncated_file_is_one_clear_error(tmp_path):
    coords, emb, _ = blobs(100, 8)
    path = write_slide(tmp_path / "t.parquet", slide_id="t", metadata=metadata(8), coords=coords, embeddings=emb)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_slide(path)


def test_wrong_schema_is_one_clear_error(tmp_path):
    table = pa.table({"x": [1], "y": [2], "pixels": [b"\x00"]})
    pq.write_table(table, tmp_path / "w.parquet")
    with pytest.raises(DatasetError, match="format v1 needs exactly"):
        read_slide_metadata(tmp_path / "w.parquet")


def test_nan_written_by_another_tool_is_caught_on_read(tmp_path):
    meta = metadata(4, dtype="float32")
    schema = arrow_schema(4, "float32", meta)
    values = pa.array(np.array([0.1, np.nan, 0.3, 0.4], np.float32))
    table = pa.Table.from_arrays(
        [pa.array(["n"]), pa.array([1], pa.int32()), pa.array([1], pa.int32()), pa.array([1.0], pa.float32()),
         pa.array([None], pa.int8()), pa.FixedSizeListArray.from_arrays(values, 4)],
        schema=schema,
    )
    pq.write_table(table, tmp_path / "n.parquet")
    with pytest.raises(DatasetError, match="non-finite"):
        read_slide(tmp_path / "n.parquet")


def test_dataset_summary_refuses_mixed_models(tmp_path):
    root = make_dataset(tmp_path / "ds", slides=1)
    coords, emb, _ = blobs(10, 16)
    write_slide(root / "slides" / "other.parquet", slide_id="other", metadata=metadata(16, model_id="another"),
                coords=coords, embeddings=emb)
    with pytest.raises(DatasetError, match="another model"):
        summarize(root)


def test_sign_refuses_a_nan_embedding_via_cli(tmp_path, cli, publisher):
    root = make_dataset(tmp_path / "ds", slides=1, dtype="float32")
    path = root / "slides" / "s0.parquet"
    table = pq.read_table(path)
    values = table.column("embedding").combine_chunks().flatten().to_numpy().copy()
    values[5] = np.nan
    emb = pa.FixedSizeListArray.from_arrays(pa.array(values), type=table.schema.field("embedding").type)
    pq.write_table(table.set_column(5, table.schema.field("embedding"), emb), path)
    result = cli("sign", root, "--name", "crc", "--key", publisher.private)
    assert_one_line_error(result, "non-finite")
    assert not (root / "manifest.json").exists()
