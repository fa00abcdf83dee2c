"""Seeds in (CSV, QuPath GeoJSON, patch indices) and results out (tables, GeoJSON, TissUUmaps, PNG)."""

from __future__ import annotations

import csv
import json
import os
import re
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from conftest import make_dataset
from PIL import Image
from shapely.geometry import shape

from sic_share.dataset import read_slide
from sic_share.errors import SeedError, SicShareError
from sic_share.sic._seeds import read_seeds
from sic_share.viz import (
    class_colors,
    class_geometries,
    hex_color,
    qupath_geojson,
    render_overlay,
    write_result,
)

BINARY = ("negative", "positive")

# A 4 x 3 grid of 256 px patches at stride 128 (50 % overlap, as exported): patch i = 4 * row + col,
# centre (128 + 128 col, 128 + 128 row). The patches span x 0-640, y 0-512.
OVERLAP = np.array([(128 + 128 * c, 128 + 128 * r) for r in range(3) for c in range(4)], np.int32)
OVERLAP_SIZE = 256

# A 5 x 5 grid of 100 px patches at stride 100 (no overlap): centres (50 + 100 col, 50 + 100 row).
TILED = np.array([(50 + 100 * c, 50 + 100 * r) for r in range(5) for c in range(5)], np.int32)
TILED_SIZE = 100
TILED_LABELS = np.array([
    [0, 0, 0, 0, 2],
    [0, 1, 1, 1, 0],
    [0, 1, 0, 1, 0],  # class 1 is a ring with a class-0 hole
    [0, 1, 1, 1, 0],
    [-1, 0, 0, 0, 2],  # class 2 has two disjoint cells; one patch is unlabelled
]).ravel()
THREE = ("stroma", "tumour", "necrosis")
TILED_RESULT = {"slide_id": "s0", "coords": TILED, "labels": TILED_LABELS, "classes": THREE, "patch_size": TILED_SIZE}


def one_line(excinfo: pytest.ExceptionInfo, *fragments: str) -> str:
    """The error is one sentence on one line, naming what it should."""
    message = str(excinfo.value)
    assert "\n" not in message and message.strip(), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def feature(geometry: dict, name: str | None, *, legacy: bool = False, fid: str | None = None) -> dict:
    properties: dict = {"objectType": "annotation"}
    if name is not None:
        properties["classification"] = name if legacy else {"name": name, "color": [255, 0, 0]}
    out = {"type": "Feature", "geometry": geometry, "properties": properties}
    if fid:
        out["id"] = fid
    return out


def point(x: float, y: float) -> dict:
    return {"type": "Point", "coordinates": [x, y]}


def box(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def seeded(seeds) -> dict[int, int]:
    return {int(i): int(seeds.labels[i]) for i in np.flatnonzero(seeds.labels >= 0)}


# -- seeds in ------------------------------------------------------------------------------------


def test_csv_points_map_to_the_nearest_containing_patch(tmp_path):
    # (300, 200) lies in patches centred at x 256/384, y 128/256; (256, 256) is nearest -> patch 5.
    # (192, 192) is equidistant from four centres -> the lowest index, 0. Labels: name any case, or index.
    path = write(tmp_path / "seeds.csv", "x,y,label\n300,200,POSITIVE\n192,192,0\n630.5,500,positive\n")
    seeds = read_seeds(path, OVERLAP, OVERLAP_SIZE, BINARY)
    assert seeded(seeds) == {5: 1, 0: 0, 11: 1}
    assert seeds.labels.dtype == np.int8 and seeds.labels.shape == (12,)
    assert seeds.classes == BINARY and seeds.n_seeds == 3 and seeds.missed == ()
    assert seeds.counts == {"negative": 1, "positive": 2}
    assert seeds.summary() is None


def test_geojson_points_polygons_and_every_container(tmp_path):
    polygon = box(200, 100, 450, 300)  # holds the centres x 256, 384 and y 128, 256 -> patches 1, 2, 5, 6
    multipoint = {"type": "MultiPoint", "coordinates": [[130, 130], [600, 400]]}  # patches 0 and 11
    document = {"type": "FeatureCollection", "features": [
        feature(polygon, "Positive"),
        feature(multipoint, "negative", legacy=True),  # older QuPath: classification as a string
        feature(point(10, 10), None),  # unclassified: skipped
        feature({"type": "LineString", "coordinates": [[0, 0], [5, 5]]}, "negative"),  # skipped
    ]}
    path = write(tmp_path / "seeds.geojson", json.dumps(document))
    seeds = read_seeds(path, OVERLAP, OVERLAP_SIZE, BINARY)
    assert seeded(seeds) == {1: 1, 2: 1, 5: 1, 6: 1, 0: 0, 11: 0}
    assert seeds.n_seeds == 3 and seeds.skipped == 2
    assert "2 GeoJSON features ignored (1 LineString, 1 unclassified)" in seeds.summary()


def test_polygon_seeds_exactly_the_centres_inside_it(tmp_path):
    rng = np.random.default_rng(3)
    coords = rng.integers(0, 5000, (2000, 2)).astype(np.int32)
    ring = [[2500 + 2000 * np.cos(t), 2500 + 1500 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 40)]
    hole = [[2500 + 500 * np.cos(t), 2500 + 500 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 20)]
    geometry = {"type": "Polygon", "coordinates": [ring, hole]}
    path = write(tmp_path / "seeds.json", json.dumps([feature(geometry, "tumour")]))  # a bare feature list
    seeds = read_seeds(path, coords, 64, ("stroma", "tumour"))
    expected = shapely.contains_xy(shape(geometry), coords[:, 0], coords[:, 1])
    assert 100 < expected.sum() < 2000
    np.testing.assert_array_equal(seeds.labels == 1, expected)
    assert not (seeds.labels == 0).any()


def test_nested_polygons_smaller_wins_and_points_override(tmp_path):
    document = {"type": "Feature", "geometry": box(0, 0, 640, 512), "properties": {
        "classification": {"name": "stroma", "color": [0, 0, 255]}}}
    features = [feature(box(200, 200, 300, 300), "tumour"), document, feature(point(130, 130), "necrosis")]
    path = write(tmp_path / "seeds.geojson", json.dumps({"type": "FeatureCollection", "features": features}))
    seeds = read_seeds(path, OVERLAP, OVERLAP_SIZE, THREE)
    expected = np.zeros(12, np.int8)
    expected[5] = 1  # (256, 256) is in the small tumour polygon, drawn first in the file
    expected[0] = 2  # the necrosis click overrides the stroma polygon
    np.testing.assert_array_equal(seeds.labels, expected)


def test_single_feature_and_classes_inferred_sorted(tmp_path):
    path = write(tmp_path / "one.geojson", json.dumps(feature(point(130, 130), "Tumour")))
    seeds = read_seeds(path, OVERLAP, OVERLAP_SIZE)
    assert seeds.classes == ("Tumour",) and seeded(seeds) == {0: 0}
    path = write(tmp_path / "s.csv", "x,y,label\n130,130,tumour\n300,200,Benign\n")
    seeds = read_seeds(path, OVERLAP, OVERLAP_SIZE)
    assert seeds.classes == ("Benign", "tumour") and seeded(seeds) == {0: 1, 5: 0}


def test_patch_indices_inline_mapping_and_csv(tmp_path):
    seeds = read_seeds("0:positive, 11:0", OVERLAP, OVERLAP_SIZE, BINARY)
    assert seeded(seeds) == {0: 1, 11: 0}
    assert seeded(read_seeds({3: "negative", 4: 1}, OVERLAP, OVERLAP_SIZE, BINARY)) == {3: 0, 4: 1}
    path = write(tmp_path / "idx.csv", "index,label\n2,positive\n7,negative\n")
    assert seeded(read_seeds(path, OVERLAP, OVERLAP_SIZE, BINARY)) == {2: 1, 7: 0}


def test_seeds_of_a_class_that_hits_no_patch_are_reported(tmp_path):
    # x 700 is past the last patch (x 640) but within a patch side of it: a miss, not a mistake.
    path = write(tmp_path / "s.csv", "x,y,label\n130,130,tumour\n700,100,stroma\n")
    seeds = read_seeds(path, OVERLAP, OVERLAP_SIZE, THREE)
    assert seeded(seeds) == {0: 1}
    assert [(m.where, m.label, m.x, m.y) for m in seeds.missed] == [("row 3", "stroma", 700.0, 100.0)]
    assert seeds.missed_classes == ("stroma",)
    summary = seeds.summary()
    assert "1 of 2 seeds hit no patch" in summary and "'stroma'" in summary and "\n" not in summary
    polygon = write(tmp_path / "p.geojson", json.dumps([feature(box(130, 130, 140, 140), "tumour"),
                                                        feature(point(130, 130), "stroma")]))
    seeds = read_seeds(polygon, OVERLAP, OVERLAP_SIZE, THREE)  # a polygon between centres holds none
    assert seeds.missed_classes == ("tumour",) and seeded(seeds) == {0: 0}


# -- bad seeds: one line each --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fragments"), [
    ("not json at all", ("is not valid JSON",)),
    ('{"foo": 1, "bar": 2}', ("JSON object with the keys {foo, bar}", "not GeoJSON")),
    ("42", ("holds a JSON number", "not GeoJSON")),
    ('"hello"', ("holds a JSON string",)),
    (json.dumps(box(0, 0, 10, 10)), ("bare Polygon geometry without a class",)),
    (json.dumps([feature({"type": "Polygon", "coordinates": [[[0, 0], [1]]]}, "tumour")]), ("malformed Polygon",)),
    ("[]", ("hold no seeds",)),
    (json.dumps([feature(point(1, 1), None)]), ("hold no seeds", "1 GeoJSON feature ignored [1 unclassified]", "Set class")),
])
def test_geojson_that_is_not_geojson(tmp_path, text, fragments):
    path = write(tmp_path / "seeds.geojson", text)
    with pytest.raises(SeedError) as excinfo:
        read_seeds(path, OVERLAP, OVERLAP_SIZE, THREE)
    one_line(excinfo, "seeds.geojson", *fragments)


@pytest.mark.parametrize(("text", "fragments"), [
    ("a,b,c\n1,2,3\n", ("has the columns ['a', 'b', 'c']", "x,y,label", "index,label")),
    ("x,y\n1,2\n", ("x,y,label",)),
    ("", ("has the columns []",)),
    ("x,y,label\n", ("hold no seeds",)),
    ("x,y,label\n10,ten,tumour\n", ("row 2", "y='ten'", "not a number")),
    ("x,y,label\n130,130,lymphocyte\n", ("row 2", "unknown class 'lymphocyte'", "['stroma', 'tumour', 'necrosis']")),
    ("x,y,label\n130,130,3\n", ("row 2", "class index 3", "outside 0-2")),
    ("x,y,label\n130,130,-1\n", ("class index -1",)),
    ("index,label\n12,tumour\n", ("index 12", "12 patches (0-11)")),
    ("x,y,label\n130,130,tumour\n140,140,stroma\n", ("row 2 (tumour) and row 3 (stroma)", "patch 0", "(128, 128)")),
])
def test_bad_csv_seeds(tmp_path, text, fragments):
    path = write(tmp_path / "seeds.csv", text)
    with pytest.raises(SeedError) as excinfo:
        read_seeds(path, OVERLAP, OVERLAP_SIZE, THREE)
    one_line(excinfo, *fragments)


def test_coordinates_beyond_the_slide(tmp_path):
    # Say the user exported from a 4x-finer viewer or another slide: far beyond the patches.
    path = write(tmp_path / "s.csv", "x,y,label\n130,130,tumour\n5000,100,stroma\n9000,9000,stroma\n")
    with pytest.raises(SeedError) as excinfo:
        read_seeds(path, OVERLAP, OVERLAP_SIZE, THREE)
    one_line(excinfo, "row 3 and 1 more", "(5000, 100)", "beyond the slide's patches", "x 0-640, y 0-512",
             "level-0 pixels")
    path = write(tmp_path / "g.geojson", json.dumps([feature(point(-5, 10), "tumour")]))
    with pytest.raises(SeedError) as excinfo:
        read_seeds(path, OVERLAP, OVERLAP_SIZE, THREE)
    one_line(excinfo, "feature 0", "beyond the slide")


def test_all_seeds_outside_tissue(tmp_path):
    # Patches only where there is tissue (two pieces); both clicks land on the glass between them.
    sparse = np.array([(128, 128), (128, 256), (1024, 128), (1024, 256)], np.int32)
    path = write(tmp_path / "s.csv", "x,y,label\n600,150,tumour\n620,250,stroma\n")
    with pytest.raises(SeedError) as excinfo:
        read_seeds(path, sparse, OVERLAP_SIZE, THREE)
    one_line(excinfo, "none of the 2 seeds", "lies on a patch", "x 0-1152, y 0-384", "on tissue")


def test_bad_arguments_and_missing_files(tmp_path):
    with pytest.raises(SeedError) as excinfo:
        read_seeds(tmp_path / "nope.csv", OVERLAP, OVERLAP_SIZE, THREE)
    one_line(excinfo, "nope.csv does not exist", "12:tumour,40:stroma")
    with pytest.raises(SeedError) as excinfo:
        read_seeds("0:tumour", OVERLAP, OVERLAP_SIZE, ("tumour", "Tumour"))
    one_line(excinfo, "distinct")
    with pytest.raises(SeedError) as excinfo:
        read_seeds("0:1", OVERLAP, OVERLAP_SIZE)
    one_line(excinfo, "class index 1", "name the classes")
    with pytest.raises(SeedError) as excinfo:
        read_seeds("0:tumour", OVERLAP, 0, THREE)
    one_line(excinfo, "patch_size=0")
    with pytest.raises(SeedError):
        read_seeds("0:tumour", OVERLAP[:, 0], OVERLAP_SIZE, THREE)
    assert issubclass(SeedError, ValueError)


# -- results out ---------------------------------------------------------------------------------


def geojson_of(path: Path) -> list[dict]:
    document = json.loads(path.read_text())
    assert document["type"] == "FeatureCollection"
    return document["features"]


def check_qupath_feature(item: dict) -> None:
    assert item["type"] == "Feature"
    assert str(uuid.UUID(item["id"])) == item["id"]
    properties = item["properties"]
    assert properties["objectType"] in ("annotation", "tile")
    classification = properties["classification"]
    assert isinstance(classification["name"], str)
    assert len(classification["color"]) == 3 and all(0 <= int(v) <= 255 for v in classification["color"])


def test_geojson_of_a_tiled_grid_has_exact_areas_holes_and_no_overlap(tmp_path):
    path = write_result(tmp_path / "out.geojson", slide_id="s0", coords=TILED, labels=TILED_LABELS,
                        classes=THREE, patch_size=TILED_SIZE)
    features = geojson_of(path)
    assert [f["properties"]["classification"]["name"] for f in features] == list(THREE)
    extent = shapely.box(0, 0, 500, 500)
    geometries = {}
    for item in features:
        check_qupath_feature(item)
        assert item["properties"]["objectType"] == "annotation"
        geometry = shape(item["geometry"])
        assert geometry.is_valid and extent.covers(geometry)
        name = item["properties"]["classification"]["name"]
        n = int((TILED_LABELS == THREE.index(name)).sum())
        assert item["properties"]["measurements"]["n_patches"] == n
        assert geometry.area == pytest.approx(n * TILED_SIZE**2)
        geometries[name] = geometry
    ring = geometries["tumour"]
    assert ring.geom_type == "Polygon" and len(ring.interiors) == 1  # the hole is kept
    assert geometries["stroma"].geom_type == "MultiPolygon"  # outer region + the cell in the hole
    assert geometries["necrosis"].geom_type == "MultiPolygon" and len(geometries["necrosis"].geoms) == 2
    names = list(geometries)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert geometries[a].intersection(geometries[b]).area == 0


def test_geojson_of_overlapping_patches_tiles_the_tissue_without_overlap(tmp_path):
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 0, 2, 2, 2, 2])
    geometries = class_geometries(OVERLAP, labels, THREE, OVERLAP_SIZE)
    assert all(g.is_valid for g in geometries)
    assert sum(g.area for g in geometries) == pytest.approx(640 * 512)  # the patches' extent, once
    assert shapely.union_all(geometries).equals(shapely.box(0, 0, 640, 512))
    for i in range(3):
        for j in range(i + 1, 3):
            assert geometries[i].intersection(geometries[j]).area == 0
    # Inner cells are stride-sized (128 x 128); edge cells reach the patch edge (64 px further out).
    assert geometries[2].area == pytest.approx(640 * (512 - 320))


@pytest.mark.parametrize("tiles", [False, True])
@pytest.mark.parametrize(("coords", "size", "labels"), [
    (TILED, TILED_SIZE, TILED_LABELS),
    (OVERLAP, OVERLAP_SIZE, np.array([0, 0, 1, 1, 0, 1, 1, 0, 2, -1, 2, 2])),
])
def test_our_geojson_reads_back_as_seeds(tmp_path, coords, size, labels, tiles):
    path = write_result(tmp_path / "out.json", slide_id="s0", coords=coords, labels=labels, classes=THREE,
                        patch_size=size, tiles=tiles)
    features = geojson_of(path)
    for item in features:
        check_qupath_feature(item)
    tile_features = [f for f in features if f["properties"]["objectType"] == "tile"]
    assert len(tile_features) == (int((labels >= 0).sum()) if tiles else 0)
    seeds = read_seeds(path, coords, size, THREE)
    np.testing.assert_array_equal(seeds.labels, labels)
    assert seeds.missed == ()


def test_geojson_ids_are_deterministic_and_distinct():
    first = qupath_geojson(**TILED_RESULT, tiles=True)
    assert first == qupath_geojson(**TILED_RESULT, tiles=True)
    ids = [f["id"] for f in first["features"]]
    assert len(set(ids)) == len(ids) == 3 + 24
    other = qupath_geojson(**{**TILED_RESULT, "slide_id": "s1"}, tiles=True)
    assert set(ids).isdisjoint(f["id"] for f in other["features"])


def test_tissuumaps_csv(tmp_path):
    path = write_result(tmp_path / "markers.csv", "tissuumaps", slide_id="s0", coords=TILED, labels=TILED_LABELS,
                        classes=THREE, patch_size=TILED_SIZE, colors={"necrosis": "#000000"})
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["x", "y", "class", "color"]
    assert len(rows) == 24  # the unlabelled patch is left out
    palette = dict(zip(THREE, map(hex_color, class_colors(THREE, {"necrosis": "#000000"}))))
    assert palette["necrosis"] == "#000000"
    for row in rows:
        assert re.fullmatch(r"#[0-9a-f]{6}", row["color"]) and row["color"] == palette[row["class"]]
    assert (rows[0]["x"], rows[0]["y"], rows[0]["class"]) == ("50", "50", "stroma")
    seeds = read_seeds(path, TILED, TILED_SIZE, THREE)  # its class column reads back as seed labels
    np.testing.assert_array_equal(seeds.labels, TILED_LABELS)


def test_png_overlay(tmp_path):
    path = write_result(tmp_path / "overlay.png", slide_id="s0", coords=TILED, labels=TILED_LABELS,
                        classes=THREE, patch_size=TILED_SIZE, max_side=200)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (200, 200) and image.mode == "RGBA"
        assert float(image.text["level0_per_pixel"]) == pytest.approx(2.5)
        pixels = np.asarray(image)
    found = {tuple(int(v) for v in c) for c in pixels.reshape(-1, 4)}
    for color in class_colors(THREE):
        assert (*color, 255) in found
    assert pixels[190, 10, 3] == 0  # the unlabelled patch (bottom left) is transparent
    assert tuple(pixels[10, 10, :3]) == class_colors(THREE)[0]
    assert tuple(pixels[100, 100, :3]) == class_colors(THREE)[0]  # the hole in the tumour ring
    assert tuple(pixels[60, 60, :3]) == class_colors(THREE)[1]
    labels = np.zeros(12, int)
    labels[0] = -1
    wide = render_overlay(coords=OVERLAP, labels=labels, classes=BINARY, patch_size=OVERLAP_SIZE,
                          max_side=320, background="white", legend=True)
    assert wide.size[0] == 320 and wide.size[1] > 256  # 640 x 512 -> 320 x 256, plus the legend band
    pixels = np.asarray(wide)
    assert tuple(pixels[10, 10]) == (255, 255, 255, 255)  # the unlabelled patch on white
    assert tuple(pixels[200, 200, :3]) == class_colors(BINARY)[0]
    band = {tuple(int(v) for v in c) for c in pixels[256:].reshape(-1, 4)}
    assert {(*c, 255) for c in class_colors(BINARY)} <= band  # a swatch per class


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_label_tables(tmp_path, fmt):
    path = write_result(tmp_path / f"labels.{fmt}", slide_id="s0", coords=TILED, labels=TILED_LABELS,
                        classes=THREE, patch_size=TILED_SIZE)
    if fmt == "parquet":
        table = pq.read_table(path)
        assert table.column_names == ["slide_id", "x", "y", "label", "class"]
        assert str(table.schema.field("x").type) == "int32" and str(table.schema.field("label").type) == "int8"
        rows = table.to_pylist()
    else:
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["slide_id", "x", "y", "label", "class"]
    assert len(rows) == 25
    assert [str(v) for v in (rows[6]["x"], rows[6]["y"], rows[6]["label"], rows[6]["class"])] == [
        "150", "150", "1", "tumour"]
    assert str(rows[20]["label"]) == "-1" and rows[20]["class"] in (None, "")
    assert {r["slide_id"] for r in rows} == {"s0"}


def test_format_from_suffix_and_bad_formats(tmp_path):
    kwargs = TILED_RESULT
    with pytest.raises(SicShareError) as excinfo:
        write_result(tmp_path / "out.txt", **kwargs)
    one_line(excinfo, "out.txt", "parquet, csv, geojson, tissuumaps, png")
    with pytest.raises(SicShareError) as excinfo:
        write_result(tmp_path / "out.csv", "xlsx", **kwargs)
    one_line(excinfo, "'xlsx'")
    with pytest.raises(SicShareError) as excinfo:
        write_result(tmp_path / "out.csv", **{**kwargs, "labels": TILED_LABELS + 2})
    one_line(excinfo, "class index 4", "3 classes")
    with pytest.raises(SicShareError) as excinfo:
        write_result(tmp_path / "out.png", **kwargs, colors=["red"])
    one_line(excinfo, "1 colours", "3 classes")
    assert os.listdir(tmp_path) == []


def test_palette():
    assert class_colors(BINARY) == [(153, 153, 153), (213, 94, 0)]  # background grey, positive vermillion
    many = class_colors([f"c{i}" for i in range(20)])
    assert len(set(many)) == 20
    assert class_colors(BINARY, ["#00ff00", (1, 2, 3)]) == [(0, 255, 0), (1, 2, 3)]
    with pytest.raises(SicShareError) as excinfo:
        class_colors(BINARY, {"positive": "notacolour"})
    one_line(excinfo, "'notacolour'", "'positive'")


@pytest.mark.parametrize("name", ["out.parquet", "out.csv", "out.geojson", "out.png"])
def test_writes_are_atomic(tmp_path, monkeypatch, name):
    kwargs = TILED_RESULT
    with pytest.raises(SicShareError) as excinfo:
        write_result(tmp_path / "missing" / name, **kwargs)
    one_line(excinfo, "output folder", "missing", "does not exist")
    assert not (tmp_path / "missing").exists()

    out = tmp_path / name
    out.write_bytes(b"previous")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SicShareError) as excinfo:
        write_result(out, **kwargs)
    one_line(excinfo, "cannot write", "No space left on device")
    assert os.listdir(tmp_path) == [name] and out.read_bytes() == b"previous"  # no temporary file left


def test_a_dataset_slide_round_trips_through_qupath(tmp_path):
    """A slide read from a dataset: its classes out as GeoJSON, back in as seeds, in level-0 pixels."""
    root = make_dataset(tmp_path / "ds", slides=1, n=150)
    slide = read_slide(root / "slides" / "s0.parquet")
    size = slide.metadata.patching.level0_size_px
    classes = slide.metadata.classes
    out = write_result(tmp_path / "s0.geojson", slide_id=slide.slide_id, coords=slide.coords,
                       labels=slide.labels, classes=classes, patch_size=size)
    seeds = read_seeds(out, slide.coords, size, classes)
    np.testing.assert_array_equal(seeds.labels, slide.labels)
    x, y = slide.coords[17]
    clicked = write(tmp_path / "click.csv", f"x,y,label\n{x + 10},{y - 10},{classes[1]}\n")
    assert seeded(read_seeds(clicked, slide.coords, size, classes)) == {17: 1}


def test_seeds_under_other_classes_equal_a_second_read_with_them(tmp_path):
    coords = np.stack(np.meshgrid(np.arange(10), np.arange(10)), -1).reshape(-1, 2) * 128 + 128
    coords = coords[~((coords[:, 0] >= 1000) & (coords[:, 1] <= 400))]  # no tissue top right
    path = tmp_path / "s.csv"
    path.write_text("x,y,label\n128,128,Tumour\n640,640,normal\n1152,1152,NORMAL\n1280,256,tumour\n")
    truth = ("normal", "tumour", "stroma")
    first = read_seeds(path, coords, 256, None)
    again = read_seeds(path, coords, 256, truth)
    moved = first.under(truth)
    assert len(again.missed) == 1 and again.missed[0].label == "tumour"
    np.testing.assert_array_equal(moved.labels, again.labels)
    assert (moved.classes, moved.missed, moved.n_seeds) == (again.classes, again.missed, again.n_seeds)
