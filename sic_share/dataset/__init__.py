"""Dataset format v1: per-slide Parquet files of patch coordinates and embeddings."""

from __future__ import annotations

from sic_share.dataset._folder import SLIDES_DIR, DatasetSummary, near_slides, slide_files, summarize
from sic_share.dataset._io import SlideData, SlideWriter, check_rows, read_slide, read_slide_metadata, write_slide
from sic_share.dataset._schema import (
    FORMAT_VERSION,
    ModelInfo,
    Patching,
    SlideMetadata,
    arrow_schema,
    check_name,
)

__all__ = [
    "FORMAT_VERSION",
    "SLIDES_DIR",
    "DatasetSummary",
    "ModelInfo",
    "Patching",
    "SlideData",
    "SlideMetadata",
    "SlideWriter",
    "arrow_schema",
    "check_name",
    "check_rows",
    "near_slides",
    "read_slide",
    "read_slide_metadata",
    "slide_files",
    "summarize",
    "write_slide",
]
