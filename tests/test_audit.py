"""The privacy audit: a clean dataset passes, and each kind of leak is found and named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import blobs, metadata
from PIL import Image

from sic_share.dataset import write_slide
from sic_share.errors import DatasetError
from sic_share.privacy import _audit
from sic_share.privacy._audit import Finding, audit_dataset
from sic_share.signing import sign_dataset

IDS = ("0a1b2c3d4e5f6071", "8192a3b4c5d6e7f8")
SOURCE = "/data/cohort/TCGA-AB-1234.svs"


def clean_dataset(root: Path, *, model_id: str = "test-model", ids: tuple[str, ...] = IDS) -> Path:
    """Slide files named by 16-hex pseudonyms, as export writes them."""
    meta = metadata(8, model_id=model_id)
    for i, slide_id in enumerate(ids):
        coords, emb, labels = blobs(60, 8, seed=i)
        write_slide(root / "slides" / f"{slide_id}.parquet", slide_id=slide_id, metadata=meta,
                    coords=coords, embeddings=emb, labels=labels)
    return root


def first_slide(root: Path) -> Path:
    return root / "slides" / f"{IDS[0]}.parquet"


def rewrite(path: Path, change) -> None:
    """Rewrite a slide file through pyarrow after ``change(table) -> table``."""
    table = change(pq.read_table(path))
    pq.write_table(table, path)


def problems(findings: list[Finding], file: str) -> str:
    return " | ".join(f.problem for f in findings if f.file == file)


@pytest.fixture
def dataset(tmp_path) -> Path:
    return clean_dataset(tmp_path / "ds")


def test_clean_dataset_has_no_findings(dataset):
    assert audit_dataset(dataset, forbidden=[SOURCE]) == []


def test_signed_clean_dataset_has_no_findings(dataset, publisher):
    # manifest.json holds a creation date, URIs, digests and the privacy texts: all ours
    sign_dataset(dataset, name="crc", key_path=publisher.private)
    assert audit_dataset(dataset, forbidden=[SOURCE, "slide-0042.ndpi"]) == []


@pytest.mark.parametrize("model_id", ["hf-hub:MahmoodLab/UNI", "timm/resnet50.a1_in1k"])
def test_model_ids_are_not_paths(tmp_path, publisher, model_id):
    root = clean_dataset(tmp_path / "ds", model_id=model_id)
    sign_dataset(root, name="crc", key_path=publisher.private)
    assert audit_dataset(root) == []


def test_extra_column(dataset):
    rewrite(first_slide(dataset), lambda t: t.append_column("scanner_gain", pa.array(np.ones(len(t), np.float32))))
    found = problems(audit_dataset(dataset), f"slides/{IDS[0]}.parquet")
    assert "extra column 'scanner_gain'" in found


def test_string_column(dataset):
    rewrite(first_slide(dataset), lambda t: t.append_column("note", pa.array(["ok"] * len(t))))
    found = problems(audit_dataset(dataset), f"slides/{IDS[0]}.parquet")
    assert "extra text column 'note'" in found


def test_text_in_a_format_column(dataset):
    rewrite(first_slide(dataset), lambda t: t.set_column(3, "tissue", pa.array(["high"] * len(t))))
    found = problems(audit_dataset(dataset), f"slides/{IDS[0]}.parquet")
    assert "column 'tissue' is string" in found and "only slide_id may hold text" in found


def test_extra_footer_metadata_key(dataset):
    rewrite(first_slide(dataset),
            lambda t: t.replace_schema_metadata({**t.schema.metadata, b"aperio.Date": b"12/29/09"}))
    found = problems(audit_dataset(dataset), f"slides/{IDS[0]}.parquet")
    assert "footer metadata key 'aperio.Date'" in found


def test_extra_key_in_sic_share_json(dataset):
    def change(table):
        body = json.loads(table.schema.metadata[b"sic_share"])
        body["scanner"] = "Aperio GT450"
        body["model"]["operator"] = "alice"
        return table.replace_schema_metadata({b"sic_share": json.dumps(body).encode()})

    rewrite(first_slide(dataset), change)
    found = problems(audit_dataset(dataset), f"slides/{IDS[0]}.parquet")
    assert "the key 'scanner'" in found and "the key model.'operator'" in found


def test_path_in_model_id(tmp_path, publisher):
    root = clean_dataset(tmp_path / "ds", model_id="/home/alice/slides/patient7.svs")
    sign_dataset(root, name="crc", key_path=publisher.private)
    findings = audit_dataset(root)
    for file in (f"slides/{IDS[0]}.parquet", f"slides/{IDS[1]}.parquet", "manifest.json"):
        assert "path or URL ('/home/alice/slides/patient7.svs')" in problems(findings, file)


@pytest.mark.parametrize("model_id", ["uni-2024-03-01", "uni_20240301", "uni scanned Mar 1 2024", "uni 01/03/2024"])
def test_date_in_model_id(tmp_path, model_id):
    root = clean_dataset(tmp_path / "ds", model_id=model_id)
    found = problems(audit_dataset(root), f"slides/{IDS[0]}.parquet")
    assert "sic_share metadata model.id holds what looks like a date" in found


def test_png_dropped_in_the_folder(dataset):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(dataset / "slides" / "thumbnail.png")
    (dataset / ".notes.txt").write_text("to do")
    findings = audit_dataset(dataset)
    assert "does not belong in a dataset" in problems(findings, "slides/thumbnail.png")
    assert "does not belong in a dataset" in problems(findings, ".notes.txt")
    assert {f.file for f in findings} == {"slides/thumbnail.png", ".notes.txt"}


def test_forbidden_name_in_a_files_bytes(dataset, monkeypatch):
    # small chunks, so that the name straddles a chunk boundary
    monkeypatch.setattr(_audit, "_CHUNK", 64)
    (dataset / "slides" / "export.log").write_bytes(b"x" * 60 + b"opened tcga-ab-1234 at level 0\n")
    found = problems(audit_dataset(dataset, forbidden=[SOURCE]), "slides/export.log")
    assert "does not belong" in found and "contain the source slide name 'TCGA-AB-1234'" in found


def test_forbidden_name_in_parquet_metadata(tmp_path):
    root = clean_dataset(tmp_path / "ds", model_id="uni-for-TCGA-AB-1234")
    found = problems(audit_dataset(root, forbidden=[SOURCE]), f"slides/{IDS[0]}.parquet")
    assert "model.id holds the source slide name 'TCGA-AB-1234'" in found
    assert audit_dataset(root, forbidden=["TCGA-XY-9999.svs"]) == []


def test_a_very_short_slide_name_is_found_only_as_a_word(tmp_path):
    # a slide imported as "s" or "a" is not "found" in every slides/ path, writer name and class name
    root = clean_dataset(tmp_path / "ds")
    assert audit_dataset(root, forbidden=["s", "/in/a.svs"]) == []
    # but a short name standing as a word of its own still is
    named = clean_dataset(tmp_path / "named", model_id="uni-p7")
    found = problems(audit_dataset(named, forbidden=["p7.svs"]), f"slides/{IDS[0]}.parquet")
    assert "model.id holds the source slide name 'p7'" in found


def test_slide_id_that_is_not_a_pseudonym(tmp_path):
    root = clean_dataset(tmp_path / "ds", ids=("patient7", IDS[1]))
    found = problems(audit_dataset(root), "slides/patient7.parquet")
    assert "slide_id 'patient7' is not a pseudonym" in found
    assert "file name 'patient7' is not a slide pseudonym" in found


def test_slide_id_that_differs_from_its_file_name(dataset):
    rewrite(first_slide(dataset), lambda t: t.set_column(0, pa.field("slide_id", pa.string(), nullable=False),
                                                         pa.array([IDS[1]] * len(t))))
    found = problems(audit_dataset(dataset), f"slides/{IDS[0]}.parquet")
    assert f"slide_id '{IDS[1]}' differs from the file name" in found


def test_every_finding_is_reported(dataset):
    rewrite(first_slide(dataset), lambda t: t.append_column("note", pa.array(["x"] * len(t))))
    (dataset / "slides" / "thumb.png").write_bytes(b"\x89PNG")
    files = [f.file for f in audit_dataset(dataset)]
    assert "slides/thumb.png" in files and f"slides/{IDS[0]}.parquet" in files


def test_audit_of_a_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        audit_dataset(tmp_path / "nowhere")
