"""``sic-share sic``: seeds in, labels out, on the real slide, on a hub, and every bad input in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from shapely.geometry import Point, shape

from conftest import DATA, assert_one_line_error, blobs, make_dataset, metadata, sign_local
from sic_share.dataset import arrow_schema, read_slide, slide_files, write_slide
from sic_share.hub import BlobCache
from sic_share.signing import sign_dataset

# sic verifies a local folder before reading it: the folders here are signed by a key each test trusts.
pytestmark = pytest.mark.usefixtures("trust_local")

CMU = DATA / "cmu_small_region.svs"
CMU_SIZE = (2220, 2967)  # level-0 width, height

# QuPath-style point seeds on the real slide (level-0 pixels), read off its thumbnail:
# epidermis is the dark purple band, dermis the pink collagen around it.
EPIDERMIS = [(1223, 1668), (1112, 2075), (667, 2742)]
DERMIS = [(852, 2224), (1742, 2224), (926, 2594)]


def qupath_points(path: Path, seeds: dict[str, list[tuple[int, int]]]) -> Path:
    colours = {"Epidermis": [150, 50, 150], "Dermis": [230, 130, 180]}
    features = [
        {"type": "Feature", "id": f"00000000-0000-4000-8000-{i:012d}",
         "geometry": {"type": "Point", "coordinates": [x, y]},
         "properties": {"objectType": "annotation", "classification": {"name": name, "color": colours[name]}}}
        for i, (name, points) in enumerate((n, p) for n, pts in seeds.items() for p in pts)
        for (x, y) in [points]
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def seed_csv(path: Path, rows: list[tuple[float, float, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "y", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cmu_export(tmp_path_factory, local_key) -> Path:
    """The real slide exported with the handcrafted encoder, signed."""
    pytest.importorskip("openslide")
    from sic_share.export import ExportOptions, export_slides

    out = tmp_path_factory.mktemp("cmu") / "cmu-hc"
    export_slides([CMU], out, ExportOptions(models=("handcrafted",), workers=0))
    return sign_local(out, local_key)


@pytest.fixture
def ds(tmp_path, local_key) -> Path:
    """Two slides (s0, s1) of 400 patches, two separable blobs, classes normal/tumour."""
    return sign_local(make_dataset(tmp_path / "ds", n=400), local_key)


def unlabelled(root: Path, n: int) -> Path:
    """A one-slide dataset ('u0') of n blob patches without ground-truth classes."""
    coords, emb, _ = blobs(n, 16)
    write_slide(root / "slides" / "u0.parquet", slide_id="u0", metadata=metadata(16, classes=()),
                coords=coords, embeddings=emb)
    return root


def truth_seeds(tmp_path: Path, ds: Path, per_class: int = 3, slide: str = "s0") -> Path:
    data = read_slide(ds / "slides" / f"{slide}.parquet")
    rows = []
    for k, name in enumerate(data.metadata.classes):
        for i in np.flatnonzero(data.labels == k)[:per_class]:
            rows.append((int(data.coords[i, 0]), int(data.coords[i, 1]), name))
    return seed_csv(tmp_path / "seeds.csv", rows)


# --- what a user sees ------------------------------------------------------------------------


def test_sic_on_the_real_slide_writes_a_qupath_geojson_of_epidermis_and_dermis(cli, tmp_path, cmu_export):
    seeds = qupath_points(tmp_path / "seeds.geojson", {"Epidermis": EPIDERMIS, "Dermis": DERMIS})
    out = tmp_path / "cmu.geojson"
    result = cli("sic", cmu_export, "--seeds", seeds, "--classes", "Dermis,Epidermis", "--out", out)
    assert result.code == 0, result.err
    assert "Dermis" in result.out and "Epidermis" in result.out

    collection = json.loads(out.read_text())
    assert collection["type"] == "FeatureCollection"
    by_class = {}
    for feature in collection["features"]:
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert set(props["classification"]) == {"name", "color"}
        geometry = shape(feature["geometry"])
        assert geometry.is_valid and not geometry.is_empty
        by_class[props["classification"]["name"]] = geometry
    assert set(by_class) == {"Dermis", "Epidermis"}
    slide_box = shapely.box(0, 0, *CMU_SIZE)
    for geometry in by_class.values():
        assert slide_box.buffer(1).contains(geometry)
    assert by_class["Dermis"].intersection(by_class["Epidermis"]).area == pytest.approx(0, abs=1)
    # SIC does not pin seeds to their class (neither does the paper), but with 40 colour and texture
    # features on 137 patches at least 5 of the 6 land in the region of their own class
    inside = [by_class[name].buffer(1).contains(Point(x, y))
              for name, points in (("Epidermis", EPIDERMIS), ("Dermis", DERMIS)) for x, y in points]
    assert sum(inside) >= 5, inside


@pytest.mark.parametrize("fmt, suffix", [("parquet", ".parquet"), ("csv", ".csv"), ("tissuumaps", ".csv"),
                                         ("png", ".png"), ("geojson", ".json")])
def test_every_output_format_is_written(cli, tmp_path, ds, fmt, suffix):
    out = tmp_path / f"out{suffix}"
    result = cli("sic", ds, "--slide", "s0", "--seeds", truth_seeds(tmp_path, ds), "--out", out, "--format", fmt)
    assert result.code == 0, result.err
    assert out.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_one_run_writes_several_formats_and_reports_them_as_json(cli, tmp_path, ds):
    from PIL import Image

    outs = [tmp_path / n for n in ("r.geojson", "r.parquet", "r.tissuumaps.csv", "r.csv", "r.png")]
    args = [a for o in outs for a in ("--out", o)]
    result = cli("sic", ds, "--slide", "s0", "--seeds", truth_seeds(tmp_path, ds), *args,
                 "--confidence-png", tmp_path / "conf.png", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert [(w["format"], Path(w["path"]).name) for w in report["written"]] == [
        ("geojson", "r.geojson"), ("parquet", "r.parquet"), ("tissuumaps", "r.tissuumaps.csv"), ("csv", "r.csv"),
        ("png", "r.png"), ("confidence-png", "conf.png")]
    assert report["slide_id"] == "s0" and report["patches"] == 400 and report["seeded_patches"] == 6
    assert sum(report["counts"].values()) == 400 and report["method"] == "spreading"
    # the same labels in every table; the TissUUmaps CSV has its own columns
    labels = pq.read_table(tmp_path / "r.parquet").column("label").to_pylist()
    assert [int(r["label"]) for r in csv.DictReader(open(tmp_path / "r.csv"))] == labels
    assert "color" in next(csv.DictReader(open(tmp_path / "r.tissuumaps.csv")))
    # each PNG: the overlay (or confidence layer), then a band with a title and its key
    for name in ("r.png", "conf.png"):
        image = Image.open(tmp_path / name)
        top = int(image.text["overlay_height"])
        band = np.asarray(image.convert("RGB"))[top:]
        assert image.height > top and band.shape[0] >= 2 * 16  # title + legend lines
        assert (band < 60).all(axis=2).sum() > 100  # black text
    bare = cli("sic", ds, "--slide", "s0", "--seeds", truth_seeds(tmp_path, ds), "--out", tmp_path / "bare.png",
               "--no-legend")
    assert bare.code == 0 and Image.open(tmp_path / "bare.png").height == top


def test_several_outputs_refuse_format_and_repeated_names(cli, tmp_path, ds):
    seeds = truth_seeds(tmp_path, ds)
    a, b = tmp_path / "a.csv", tmp_path / "b.png"
    assert_one_line_error(cli("sic", ds, "--slide", "s0", "--seeds", seeds, "--out", a, "--out", b, "--format", "csv"),
                          "--format applies to one --out")
    assert_one_line_error(cli("sic", ds, "--slide", "s0", "--seeds", seeds, "--out", a, "--out", a), "named twice")
    assert_one_line_error(cli("sic", ds, "--slide", "s0", "--seeds", seeds, "--out", a, "--out", b, "--confidence"),
                          "b.png", "--confidence-png")
    assert not a.exists() and not b.exists()


def test_sic_reaches_the_truth_on_separable_blobs_and_the_labels_file_says_so(cli, tmp_path, ds):
    out = tmp_path / "labels.parquet"
    assert cli("sic", ds, "--slide", "s0", "--seeds", truth_seeds(tmp_path, ds), "--out", out).code == 0
    table = pq.read_table(out)
    assert table.column_names == ["slide_id", "x", "y", "label", "class"]
    truth = read_slide(ds / "slides" / "s0.parquet")
    order = np.lexsort((truth.coords[:, 1], truth.coords[:, 0]))
    got = np.lexsort((table.column("y").to_numpy(), table.column("x").to_numpy()))
    np.testing.assert_array_equal(table.column("label").to_numpy()[got], truth.labels[order])
    assert set(table.column("class").to_pylist()) == {"normal", "tumour"}


def test_sic_of_a_hub_dataset_fetches_only_that_slide(cli, tmp_path, ds, publisher):
    sign_dataset(ds, name="crc", key_path=publisher.private)
    hub = tmp_path / "hub"
    assert cli("publish", ds, "--hub", hub).code == 0
    out = tmp_path / "s1.csv"
    seeds = truth_seeds(tmp_path, ds, slide="s1")
    result = cli("sic", "lab-a/crc", "--slide", "s1", "--seeds", seeds, "--out", out, "--hub", hub)
    assert result.code == 0, result.err
    assert "lab-a/crc@1" in result.out
    assert [e.source for e in BlobCache().entries()] == ["slides/s1.parquet of lab-a/crc@1"]


def test_a_single_slide_dataset_needs_no_slide_option(cli, tmp_path, local_key):
    one = sign_local(make_dataset(tmp_path / "one", slides=1), local_key)
    result = cli("sic", one, "--seeds", truth_seeds(tmp_path, one), "--out", tmp_path / "o.csv")
    assert result.code == 0, result.err


@pytest.fixture
def holed(tmp_path, local_key) -> Path:
    """One slide of 400 blob patches whose bottom-right quadrant has no tissue (no patches)."""
    coords, emb, labels = blobs(400, 16)
    keep = ~((coords[:, 0] > 1400) & (coords[:, 1] > 1400))
    write_slide(tmp_path / "holed" / "slides" / "h0.parquet", slide_id="h0", metadata=metadata(16),
                coords=coords[keep], embeddings=emb[keep], labels=labels[keep])
    return sign_local(tmp_path / "holed", local_key)


def test_seeds_that_miss_are_reported_and_the_rest_are_used(cli, tmp_path, holed):
    data = read_slide(slide_files(holed)[0])
    rows = [(int(data.coords[i, 0]), int(data.coords[i, 1]), data.metadata.classes[data.labels[i]])
            for k in (0, 1) for i in np.flatnonzero(data.labels == k)[:2]]
    rows.append((2000, 2000, "tumour"))  # on the slide, on no tissue
    out = tmp_path / "o.csv"
    result = cli("sic", holed, "--seeds", seed_csv(tmp_path / "s.csv", rows), "--out", out)
    assert result.code == 0, result.err
    assert "1 of 5 seeds hit no patch (tumour at (2000, 2000))" in result.err
    assert out.exists()


def test_a_class_without_seeds_in_multi_class_sic(cli, tmp_path, ds):
    seeds = truth_seeds(tmp_path, ds)
    result = run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds, "--classes", "normal,tumour,stroma")
    assert_one_line_error(result, "'stroma'", "seeds of every class")


def test_seeds_all_outside_tissue(cli, tmp_path, holed):
    seeds = seed_csv(tmp_path / "s.csv", [(2000, 2000, "tumour"), (2200, 1800, "normal")])
    assert_one_line_error(run_bad(cli, tmp_path, holed, "--seeds", seeds), "none of the 2 seeds")


# --- bad input: one line, exit 1, nothing written --------------------------------------------------


def run_bad(cli, tmp_path, ds, *args, out_name="out.geojson"):
    out = tmp_path / out_name
    result = cli("sic", ds, *args, "--out", out)
    assert not out.exists()
    return result


def test_seeds_of_only_one_class_for_binary_sic(cli, tmp_path, ds):
    data = read_slide(ds / "slides" / "s0.parquet")
    i = np.flatnonzero(data.labels == 1)[:2]
    seeds = seed_csv(tmp_path / "s.csv", [(int(x), int(y), "tumour") for x, y in data.coords[i]])
    result = run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds, "--classes", "normal,tumour")
    assert_one_line_error(result, "only 'tumour'", "add at least one seed on 'normal'")


def test_coordinates_beyond_the_slide(cli, tmp_path, ds):
    seeds = seed_csv(tmp_path / "s.csv", [(90000, 90000, "tumour"), (128, 128, "normal")])
    assert_one_line_error(run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds), "(90000, 90000)",
                          "beyond the slide", "level-0")


def test_a_class_the_dataset_does_not_have(cli, tmp_path, ds):
    # Without --classes, seed names must be the dataset's ground-truth classes (so indices match).
    seeds = seed_csv(tmp_path / "s.csv", [(512, 128, "normal"), (128, 128, "cancer")])
    assert_one_line_error(run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds), "'cancer'",
                          "['normal', 'tumour']", "--classes")


def test_binary_sic_on_an_unlabelled_dataset_asks_which_class_is_positive(cli, tmp_path, local_key):
    bare = sign_local(unlabelled(tmp_path / "bare", 100), local_key)
    seeds = seed_csv(tmp_path / "s.csv", [(128, 128, "lesion"), (256, 128, "normal")])
    assert_one_line_error(run_bad(cli, tmp_path, bare, "--seeds", seeds), "'lesion' and 'normal'",
                          "--classes lesion,normal")
    result = cli("sic", bare, "--seeds", seeds, "--classes", "normal,lesion", "--out", tmp_path / "ok.csv")
    assert result.code == 0, result.err


def test_a_dataset_that_is_neither_a_folder_nor_a_reference(cli, tmp_path):
    assert_one_line_error(run_bad(cli, tmp_path, tmp_path / "no" / "such", "--seeds", "1:a,2:b"),
                          "neither a dataset folder", "hub reference")


def test_a_negative_seed_is_a_usage_error_not_a_traceback(cli, tmp_path, ds):
    result = cli("sic", ds, "--slide", "s0", "--seeds", truth_seeds(tmp_path, ds), "--out", tmp_path / "o.csv",
                 "--random-state", "-1")
    assert result.code == 2 and "Traceback" not in result.err and "--random-state" in result.err


def test_an_unknown_class_name(cli, tmp_path, ds):
    seeds = seed_csv(tmp_path / "s.csv", [(128, 128, "tumor"), (256, 128, "normal")])
    result = run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds, "--classes", "normal,tumour")
    assert_one_line_error(result, "'tumor'", "normal", "tumour")


def test_geojson_that_is_not_geojson(cli, tmp_path, ds):
    seeds = tmp_path / "s.geojson"
    seeds.write_text(json.dumps({"hello": "world"}))
    assert_one_line_error(run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds), "GeoJSON")
    seeds.write_text("{not json")
    assert_one_line_error(run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds), str(seeds.name))


def test_a_slide_id_not_in_the_dataset_lists_near_matches(cli, tmp_path, ds):
    seeds = truth_seeds(tmp_path, ds)
    assert_one_line_error(run_bad(cli, tmp_path, ds, "--slide", "s7", "--seeds", seeds), "no slide 's7'",
                          "did you mean", "s0")


def test_a_slide_with_fewer_patches_than_classes(cli, tmp_path, local_key):
    tiny = sign_local(unlabelled(tmp_path / "tiny", 2), local_key)
    seeds = seed_csv(tmp_path / "s.csv", [(128, 128, "a"), (256, 128, "b")])
    result = run_bad(cli, tmp_path, tiny, "--seeds", seeds, "--classes", "a,b,c")
    assert_one_line_error(result, "2 patches", "3 classes")


def test_embeddings_with_nan(cli, tmp_path):
    bad = tmp_path / "nan" / "slides"
    bad.mkdir(parents=True)
    coords, emb, labels = blobs(50, 16)
    emb[7, 3] = np.nan
    schema = arrow_schema(16, "float32", metadata(16, dtype="float32"))
    table = pa.table({
        "slide_id": pa.array(["n0"] * 50), "x": pa.array(coords[:, 0]), "y": pa.array(coords[:, 1]),
        "tissue": pa.array(np.ones(50, np.float32)), "label": pa.array(labels.astype(np.int8)),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 16),
    }).cast(schema)
    pq.write_table(table, bad / "n0.parquet")
    seeds = seed_csv(tmp_path / "s.csv", [(128, 128, "normal"), (256, 128, "tumour")])
    # 'sign' refuses such a file, so only an unsigned folder can hold one: the unsigned note, then the error
    result = run_bad(cli, tmp_path, tmp_path / "nan", "--seeds", seeds, "--unsigned")
    note, error = result.err.strip().splitlines()
    assert result.code == 1 and note.startswith("note: ") and "unsigned" in note
    assert error.startswith("error: ") and "non-finite" in error


def test_an_output_folder_that_does_not_exist(cli, tmp_path, ds):
    result = cli("sic", ds, "--slide", "s0", "--seeds", truth_seeds(tmp_path, ds), "--out", tmp_path / "no" / "o.csv")
    assert_one_line_error(result, "does not exist")


def test_unknown_rule_score_and_format(cli, tmp_path, ds):
    seeds = truth_seeds(tmp_path, ds)
    assert_one_line_error(run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds, "--rule", "magic"), "--rule")
    assert_one_line_error(run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds, "--score", "auc"), "--score")
    assert_one_line_error(run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", seeds, out_name="o.txt"),
                          "o.txt", ".geojson")


def test_a_missing_seed_file(cli, tmp_path, ds):
    assert_one_line_error(run_bad(cli, tmp_path, ds, "--slide", "s0", "--seeds", str(tmp_path / "nope.csv")),
                          "nope.csv")


def test_a_qupath_seeds_files_colours_are_the_outputs_colours(cli, tmp_path, ds):
    """QuPath's class colours in the seeds file come back in the GeoJSON and the TissUUmaps CSV (as in the app)."""
    data = read_slide(ds / "slides" / "s0.parquet")
    picks = {name: [tuple(int(v) for v in data.coords[i]) for i in np.flatnonzero(data.labels == k)[:3]]
             for k, name in enumerate(data.metadata.classes)}
    seeds = tmp_path / "seeds.geojson"
    colours = {"normal": [12, 34, 56], "tumour": [200, 100, 0]}
    seeds.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
         "properties": {"objectType": "annotation", "classification": {"name": name, "color": colours[name]}}}
        for name, points in picks.items() for x, y in points]}))
    out, csv_out = tmp_path / "r.geojson", tmp_path / "r.tissuumaps.csv"
    result = cli("sic", ds, "--slide", "s0", "--seeds", seeds, "--out", out, "--out", csv_out)
    assert result.code == 0, result.err
    written = {f["properties"]["classification"]["name"]: f["properties"]["classification"]["color"]
               for f in json.loads(out.read_text())["features"]}
    assert written == colours
    with open(csv_out) as handle:
        rows = {r["class"]: r["color"] for r in csv.DictReader(handle)}
    assert rows == {"normal": "#0c2238", "tumour": "#c86400"}


def test_the_summary_says_where_to_seed_next_not_a_share_that_alarms(cli, tmp_path, cmu_export):
    """The last line names the least certain places (patch centres), largest first; --json and the PNG agree."""
    from PIL import Image

    seeds = qupath_points(tmp_path / "seeds.geojson", {"Epidermis": EPIDERMIS, "Dermis": DERMIS})
    table, layer = tmp_path / "r.parquet", tmp_path / "conf.png"
    result = cli("sic", cmu_export, "--seeds", seeds, "--classes", "Dermis,Epidermis", "--out", table, "--confidence",
                 "--confidence-png", layer)
    assert result.code == 0, result.err
    summary, hint = result.out.strip().splitlines()
    assert "%" not in result.out and "confidence <" not in result.out
    assert hint.startswith(f"least sure (numbered in {layer}), where a seed helps most: around x=")
    places = [(int(x), int(y), int(n)) for x, y, n in
              __import__("re").findall(r"x=(\d+) y=(\d+) \((\d+) patch(?:es)?\)", hint)]
    assert 1 <= len(places) <= 3 and [n for *_, n in places] == sorted((n for *_, n in places), reverse=True)
    rows = pq.read_table(table).to_pydict()
    conf = np.array(rows["confidence"])
    cut = np.sort(conf)[int(np.ceil(0.2 * len(conf))) - 1]
    at = {(x, y): c for x, y, c in zip(rows["x"], rows["y"], conf)}
    for x, y, _ in places:  # each is a patch centre among the least certain fifth
        assert at[(x, y)] <= cut
    report = json.loads(cli("sic", cmu_export, "--seeds", seeds, "--classes", "Dermis,Epidermis", "--out",
                            tmp_path / "j.csv", "--json").out)
    least = report["least_certain"]
    assert "unsure_fraction" not in report and least["shares"] == [0.05, 0.2]
    assert [(r["x"], r["y"], r["patches"]) for r in least["regions"]] == places
    assert sum(least["counts"]) <= np.ceil(0.2 * len(conf)) + 2 and least["limits"][1] == pytest.approx(cut, abs=1e-4)
    image = Image.open(layer)
    text = np.asarray(image.convert("RGB"))[int(image.text["overlay_height"]):]
    assert (text < 60).all(axis=2).sum() > 100
