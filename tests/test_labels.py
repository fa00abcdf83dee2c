"""Ground truth: masks and QuPath GeoJSON to class rasters, and the paper's 50 % patch rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sic_share.errors import LabelError
from sic_share.annotations import LabelRaster, geojson_labels, mask_labels, patch_labels

SLIDE = (4096, 3072)  # level-0 width, height
PATCH = 256


@pytest.fixture
def binary_mask(tmp_path):
    """A 0/255 mask at 1/8 of SLIDE with one rectangle: level-0 x in [800, 2400), y in [800, 1600)."""
    mask = np.zeros((SLIDE[1] // 8, SLIDE[0] // 8), np.uint8)
    mask[100:200, 100:300] = 255
    path = tmp_path / "slide-1.png"
    Image.fromarray(mask).save(path)
    return path


def test_binary_mask_inside_outside_and_half(binary_mask):
    raster = mask_labels(binary_mask, SLIDE)
    assert raster.classes == ("negative", "positive")
    assert raster.scale == 8.0
    assert raster.raster.dtype == np.int16 and raster.raster.shape == (384, 512)
    coords = np.array([
        [1600, 1200],  # fully inside
        [3000, 2500],  # fully outside
        [800, 1200],  # left half inside: exactly 0.5 of the patch
        [799, 1200],  # 127/256 inside
        [2400, 1600],  # a quarter inside (corner)
    ])
    labels = patch_labels(raster, coords, PATCH)
    assert labels.dtype == np.int8
    assert labels.tolist() == [1, 0, 1, 0, 0]


def test_threshold_is_the_fraction_a_class_must_cover(binary_mask):
    raster = mask_labels(binary_mask, SLIDE)
    coords = np.array([[1600, 1200], [800, 1200], [3000, 2500]])
    # at 0.75 the half-covered patch has no class (negative covers 0.5 too)
    assert patch_labels(raster, coords, PATCH, threshold=0.75).tolist() == [1, -1, 0]
    assert patch_labels(raster, coords, PATCH, threshold=1.0).tolist() == [1, -1, 0]


@pytest.mark.parametrize("threshold", [0, 1.5, -0.1, float("nan")])
def test_threshold_outside_0_1_is_rejected(binary_mask, threshold):
    raster = mask_labels(binary_mask, SLIDE)
    with pytest.raises(LabelError, match=f"threshold={threshold!r}"):
        patch_labels(raster, np.array([[1600, 1200]]), PATCH, threshold=threshold)


def test_patch_coverage_is_exact_off_the_raster_grid():
    # one annotated raster pixel of 8 x 8 level-0 pixels at x, y in [8, 16) x [0, 8); the 16 px patch
    # around (6, 4) spans [-2, 14) x [-4, 12), so it covers 6 x 8 = 48 of its 256 pixels
    raster = LabelRaster(np.array([[-1, 0], [-1, -1]], np.int16), 8.0, ("tumour",))
    assert patch_labels(raster, np.array([[6, 4]]), 16, threshold=48 / 256).tolist() == [0]
    assert patch_labels(raster, np.array([[6, 4]]), 16, threshold=0.19).tolist() == [-1]


def test_multi_class_mask_needs_every_value_named(tmp_path):
    mask = np.zeros((300, 400), np.uint8)
    mask[:, 200:] = 1
    mask[150:, 300:] = 2
    path = tmp_path / "multi.png"
    Image.fromarray(mask).save(path)
    slide = (4000, 3000)
    with pytest.raises(LabelError, match="0, 1, 2"):
        mask_labels(path, slide)
    with pytest.raises(LabelError, match="0, 1, 2"):
        mask_labels(path, slide, classes=("background", "tumour"))
    raster = mask_labels(path, slide, classes=("background", "tumour", "stroma"))
    assert raster.classes == ("background", "tumour", "stroma")
    coords = np.array([[500, 500], [2500, 500], [3500, 2500]])
    assert patch_labels(raster, coords, 256).tolist() == [0, 1, 2]


def test_mask_with_another_aspect_names_both_sizes(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((50, 100), np.uint8)).save(path)
    with pytest.raises(LabelError) as info:
        mask_labels(path, (2220, 2967))
    message = str(info.value)
    assert "mask x.png is 100 x 50 but slide is 2220 x 2967 (aspect 2.00 vs 0.75)" in message
    assert "give the mask made for this slide" in message


def test_mask_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(LabelError, match="notes.png is not a readable image"):
        mask_labels(path, SLIDE)
    with pytest.raises(LabelError, match="does not exist"):
        mask_labels(tmp_path / "missing.png", SLIDE)


def test_jpeg_binary_mask_is_thresholded(tmp_path):
    mask = np.zeros((384, 512), np.uint8)
    mask[100:200, 100:300] = 255
    path = tmp_path / "lossy.jpg"
    Image.fromarray(mask).save(path, quality=70)
    raster = mask_labels(path, SLIDE)
    assert raster.classes == ("negative", "positive")
    assert patch_labels(raster, np.array([[1600, 1200], [3000, 2500]]), PATCH).tolist() == [1, 0]


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _feature(geometry, name=None, color=(200, 0, 0), uid="6a1f0c1e-3c55-4a4b-9d7e-0f9b2f8c1a77"):
    properties = {"objectType": "annotation"}
    if name is not None:
        properties["classification"] = {"name": name, "color": list(color)}
    return {"type": "Feature", "id": uid, "geometry": geometry, "properties": properties}


@pytest.fixture
def qupath_geojson(tmp_path):
    """As QuPath exports: a Tumor polygon with a hole, a Stroma MultiPolygon, one unclassified, one point."""
    features = [
        _feature({"type": "Polygon", "coordinates": [_square(1000, 1000, 3000, 3000), _square(1600, 1600, 2400, 2400)]},
                 "Tumor", uid="0d5b7a36-8c43-4d1e-9a0f-3b7e2f1c9d01"),
        _feature({"type": "MultiPolygon",
                  "coordinates": [[_square(200, 200, 700, 700)], [_square(3300, 3300, 3900, 3900)]]},
                 "Stroma", color=(150, 200, 150), uid="1e6c8b47-9d54-4e2f-8b1a-4c8f3a2d0e12"),
        _feature({"type": "Polygon", "coordinates": [_square(100, 3000, 600, 3500)]}, None,
                 uid="2f7d9c58-ae65-4f30-9c2b-5d9a4b3e1f23"),
        _feature({"type": "Point", "coordinates": [50, 50]}, "Tumor", uid="3a8eac69-bf76-4041-8d3c-6eab5c4f2a34"),
    ]
    path = tmp_path / "slide-1.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_qupath_geojson_holes_multipolygons_and_classes(qupath_geojson):
    raster = geojson_labels(qupath_geojson, (4096, 4096), max_raster_side=512)
    assert raster.classes == ("Stroma", "Tumor")  # sorted names found
    assert raster.scale == 8.0 and raster.raster.shape == (512, 512)
    assert raster.skipped == 2  # the unclassified polygon and the point
    coords = np.array([
        [2000, 2000],  # in the hole
        [1300, 1300],  # inside the tumour ring
        [450, 450],  # first stroma part
        [3600, 3600],  # second stroma part
        [350, 3250],  # the unclassified polygon
        [1000, 1300],  # exactly half on the tumour's left edge
        [999, 1300],  # just under half
    ])
    assert patch_labels(raster, coords, PATCH).tolist() == [-1, 1, 0, 0, -1, 1, -1]


def test_geojson_class_order_and_unknown_classes(qupath_geojson):
    raster = geojson_labels(qupath_geojson, (4096, 4096), classes=("Tumor", "Stroma", "Necrosis"), max_raster_side=512)
    assert raster.classes == ("Tumor", "Stroma", "Necrosis")
    assert patch_labels(raster, np.array([[1300, 1300], [450, 450]]), PATCH).tolist() == [0, 1]
    with pytest.raises(LabelError, match="'Stroma'"):
        geojson_labels(qupath_geojson, (4096, 4096), classes=("Tumor",))


def test_geojson_list_single_feature_and_nesting(tmp_path):
    tumour = _feature({"type": "Polygon", "coordinates": [_square(0, 0, 2000, 2000)]}, "Tumor")
    necrosis = _feature({"type": "Polygon", "coordinates": [_square(500, 500, 1000, 1000)]}, "Necrosis")
    listed = tmp_path / "list.geojson"
    listed.write_text(json.dumps([necrosis, tumour]))  # the nested one first: the smaller still wins
    raster = geojson_labels(listed, (2000, 2000))
    assert raster.scale == 1.0 and raster.classes == ("Necrosis", "Tumor")
    assert patch_labels(raster, np.array([[750, 750], [1500, 1500]]), 256).tolist() == [0, 1]
    single = tmp_path / "single.geojson"
    single.write_text(json.dumps(tumour))
    assert geojson_labels(single, (2000, 2000)).classes == ("Tumor",)


def test_geojson_errors(tmp_path):
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    with pytest.raises(LabelError, match="broken.geojson are not valid JSON"):
        geojson_labels(broken, SLIDE)
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature({"type": "Polygon", "coordinates": [_square(0, 0, 10, 10)]}, None)]}))
    with pytest.raises(LabelError, match="no classified Polygon or MultiPolygon .1 unclassified"):
        geojson_labels(empty, SLIDE)
