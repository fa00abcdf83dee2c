"""Ground truth for the exporter: masks and QuPath GeoJSON as class rasters, and patch labels.

The readers live in :mod:`sic_share.annotations`, which SIC's seed reader and the
result writers share; this module keeps the exporter's names working.
"""

from __future__ import annotations

from sic_share.annotations._labels import (
    LabelRaster,
    check_class_names,
    class_name,
    geojson_features,
    geojson_labels,
    mask_labels,
    patch_labels,
)

__all__ = [
    "LabelRaster",
    "check_class_names",
    "class_name",
    "geojson_features",
    "geojson_labels",
    "mask_labels",
    "patch_labels",
]
