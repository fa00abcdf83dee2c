"""The exporter: whole-slide images to format-v1 embedding datasets (needs the ``export`` extra)."""

from __future__ import annotations

from sic_share.export._pipeline import (
    ExportOptions,
    ExportProgress,
    ExportReport,
    SignedExport,
    SlideProblem,
    export_and_sign,
    export_slides,
    find_slides,
    parse_shard,
    select_shard,
)

__all__ = [
    "ExportOptions",
    "ExportProgress",
    "ExportReport",
    "SignedExport",
    "SlideProblem",
    "export_and_sign",
    "export_slides",
    "find_slides",
    "parse_shard",
    "select_shard",
]
