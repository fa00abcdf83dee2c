"""Results out: patch classes as label tables, QuPath GeoJSON, TissUUmaps CSV and PNG overlays."""

from __future__ import annotations

from sic_share.viz._exports import (
    FORMATS,
    format_for,
    write_labels,
    write_result,
    write_tissuumaps,
)
from sic_share.viz._geojson import class_geometries, qupath_geojson, write_geojson
from sic_share.viz._confidence import ConfidenceScale, UncertainRegion, confidence_scale, uncertain_regions
from sic_share.viz._palette import OKABE_ITO, class_colors, colors_for, hex_color, seeds_file_colors
from sic_share.viz._render import render_confidence, render_overlay, write_confidence_png, write_png
from sic_share.viz._embedding_map import (
    METHODS,
    MapResult,
    embedding_rgb,
    read_result,
    render_embedding_map,
    write_embedding_map,
)
from sic_share.viz._anndata import to_anndata

__all__ = [
    "FORMATS",
    "OKABE_ITO",
    "ConfidenceScale",
    "UncertainRegion",
    "confidence_scale",
    "uncertain_regions",
    "class_colors",
    "class_geometries",
    "colors_for",
    "format_for",
    "hex_color",
    "seeds_file_colors",
    "qupath_geojson",
    "render_confidence",
    "render_overlay",
    "write_geojson",
    "write_labels",
    "write_confidence_png",
    "write_png",
    "write_result",
    "write_tissuumaps",
    "METHODS",
    "MapResult",
    "embedding_rgb",
    "read_result",
    "render_embedding_map",
    "to_anndata",
    "write_embedding_map",
]
