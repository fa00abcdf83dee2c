"""The exporter: whole-slide images to format-v1 embedding datasets (needs the ``export`` extra)."""

from __future__ import annotations

from sic_share.export._pipeline import (
    ExportOptions,
    ExportProgress,
    ExportReport,
    SignedExport,
    SlideProblem,
    WorkerStats,
    export_and_sign,
    export_slides,
    find_slides,
    parse_shard,
    select_shard,
)
from sic_share.export._engine import parse_devices
from sic_share.export._parts import check_parts

__all__ = [
    "ExportOptions",
    "ExportProgress",
    "ExportReport",
    "SignedExport",
    "SlideProblem",
    "WorkerStats",
    "check_parts",
    "export_and_sign",
    "export_slides",
    "find_slides",
    "parse_devices",
    "parse_shard",
    "select_shard",
]
