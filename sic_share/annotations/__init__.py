"""Annotations on a slide, read once for everyone: ground-truth labels (export) and seeds (SIC) both use them.

- :func:`mask_labels` and :func:`geojson_labels`: a mask image or a QuPath GeoJSON
  export as a :class:`LabelRaster` of class indices;
- :func:`patch_labels`: the paper's rule, a patch is a class when at least half of it
  lies in that class's region;
- :func:`geojson_features` and :func:`class_name`: the features of any GeoJSON
  container QuPath writes, and the class of one feature;
- :func:`check_class_names`: class names that fit the int8 label column.

This is the core layer: the exporter, the SIC seed reader and the result writers
import it; it imports none of them.
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
