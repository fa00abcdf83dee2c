"""Embedding maps (UMAP/PCA to RGB on the slide), their TissUUmaps CSV, and .h5ad files for DEPICTER."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, blobs, make_dataset, metadata, sign_local
from sic_share.dataset import write_slide
from sic_share.errors import SicShareError
from sic_share.viz import embedding_rgb, to_anndata, write_embedding_map, write_labels

HEX = re.compile(r"^#[0-9a-f]{6}$")
SIDE = 24  # the synthetic slide is a disc of tissue on a SIDE x SIDE grid of patches
STEP = 128  # grid step (stride) in level-0 pixels; patches are 256 wide

# umap and to-anndata verify a local folder before reading it: the folders here are signed by a key each test trusts
pytestmark = pytest.mark.usefixtures("trust_local")


def regions_slide(root: Path, *, dim: int = 16, seed: int = 0) -> Path:
    """One slide 's0': a disc of 'normal' tissue with a 'tumour' block on the right, glass around it.

    The two regions have embeddings from two Gaussian blobs, so a map that
    shows the embedding must show the block.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(SIDE), np.arange(SIDE)), -1).reshape(-1, 2)
    grid = grid[((grid - SIDE / 2 + 0.5) ** 2).sum(1) < (SIDE / 2) ** 2]
    labels = ((grid[:, 0] >= 14) & (np.abs(grid[:, 1] - SIDE / 2) < 6)).astype(np.int8)
    centres = rng.normal(0, 3, (2, dim))
    embeddings = (centres[labels] + rng.normal(0, 1, (len(grid), dim))).astype(np.float32)
    coords = (grid * STEP + STEP).astype(np.int32)
    write_slide(root / "slides" / "s0.parquet", slide_id="s0", metadata=metadata(dim), coords=coords,
                embeddings=embeddings, labels=labels)
    return root


@pytest.fixture(scope="module")
def regions(tmp_path_factory, local_key) -> Path:
    # A distinctive folder name, to prove that it leaks into no output.
    return sign_local(regions_slide(tmp_path_factory.mktemp("hospital-x-secret-folder")), local_key)


@pytest.fixture(scope="module")
def umap_colours():
    """One UMAP run, twice (the first compiles umap-learn's numba code: ~20 s per test session)."""
    pytest.importorskip("umap")
    _, X, y = blobs(400, 16, seed=3, n_classes=3)
    first = embedding_rgb(X, random_state=0, n_epochs=100)
    second = embedding_rgb(X, random_state=0, n_epochs=100)
    return X, y, first, second


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def hex_of(pixel: np.ndarray) -> str:
    return "#{:02x}{:02x}{:02x}".format(*pixel[:3])


# -- colours ---------------------------------------------------------------------------------------


def test_umap_colours_are_in_unit_cube_reproducible_and_separate_classes(umap_colours):
    X, y, (rgb, coords3), (rgb2, coords3b) = umap_colours
    assert rgb.shape == (len(X), 3) and coords3.shape == (len(X), 3)
    assert rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_array_equal(rgb, rgb2)  # same random_state, same colours
    np.testing.assert_array_equal(coords3, coords3b)
    means = np.array([rgb[y == k].mean(0) for k in range(3)])
    spread = max(rgb[y == k].std(0).max() for k in range(3))
    gaps = [np.abs(means[a] - means[b]).max() for a, b in ((0, 1), (0, 2), (1, 2))]
    assert min(gaps) > 2 * spread  # three blobs, three clearly different colours


def test_pca_colours_are_deterministic_whatever_the_row_order():
    _, X, _ = blobs(300, 12, seed=1, n_classes=3)
    rgb, coords3 = embedding_rgb(X, method="pca")
    assert rgb.shape == (300, 3) and rgb.min() >= 0 and rgb.max() <= 1
    perm = np.random.default_rng(0).permutation(300)
    rgb_perm, coords_perm = embedding_rgb(X[perm], method="pca")
    # The sign of each component is fixed by the data, not by the solver or the row order.
    np.testing.assert_allclose(coords_perm, coords3[perm], atol=1e-3)
    np.testing.assert_allclose(rgb_perm, rgb[perm], atol=1e-4)


def test_percentile_clipping_keeps_colour_spread_despite_one_outlier():
    _, X, _ = blobs(500, 8, seed=2, n_classes=3)
    X = X.copy()
    X[0] = 1e4  # one far-away patch (debris, a pen mark)
    clipped, _ = embedding_rgb(X, method="pca")
    minmax, _ = embedding_rgb(X, method="pca", clip=None)  # the authors' scaling
    rest = slice(1, None)
    # Min-max squeezes the other 499 patches into a sliver of the channel the outlier owns.
    assert minmax[rest].std(0).min() < 0.01
    assert clipped[rest].std(0).min() > 10 * minmax[rest].std(0).min()
    assert clipped[rest].std(0).min() > 0.1
    assert np.isin(clipped[0], (0.0, 1.0)).any()  # the outlier saturates instead


def test_bad_inputs_are_one_line_errors():
    _, X, _ = blobs(50, 4)
    for kwargs, fragment in (({"method": "tsne"}, "'umap' or 'pca'"), ({"clip": (99, 1)}, "percentiles"),
                             ({"method": "pca", "n_neighbors": 1}, "n_neighbors")):
        with pytest.raises(SicShareError, match=re.escape(fragment)) as err:
            embedding_rgb(X, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(SicShareError, match="NaN"):
        embedding_rgb(np.full((10, 3), np.nan), method="pca")
    with pytest.raises(SicShareError, match="at least 5 patches"):
        embedding_rgb(X[:4], method="umap")


# -- the map ---------------------------------------------------------------------------------------


def test_map_shows_the_regions_at_their_places_on_a_background(regions, tmp_path):
    out = tmp_path / "map.png"
    result = write_embedding_map(regions, out, method="pca", max_side=480, tissuumaps=tmp_path / "map.csv")
    assert result.path == out and result.size == (480, 480 + 24) and result.n_patches > 300
    image = read_png(out)
    assert image.shape == (504, 480, 4)  # the map, then a band with its title
    scale = result.level0_per_pixel
    assert float(Image.open(out).text["level0_per_pixel"]) == pytest.approx(scale)
    assert Image.open(out).text["overlay_height"] == "480"
    band = image[480:, :, :3]
    assert (band < 100).all(axis=2).sum() > 100  # the title's black text
    image = image[:480]
    assert len(np.unique(image.reshape(-1, 4), axis=0)) > 100  # not blank: a colour per patch
    assert tuple(image[2, 2]) == (255, 255, 255, 255)  # a corner of glass is background

    rows = read_csv(tmp_path / "map.csv")
    assert list(rows[0]) == ["x", "y", "color", "pca_1", "pca_2", "pca_3"]
    assert len(rows) == result.n_patches and all(HEX.match(r["color"]) for r in rows)
    # Each patch's centre pixel has the patch's colour, at its level-0 place.
    for row in rows[::37]:
        x, y = int(row["x"]), int(row["y"])
        assert hex_of(image[int(y / scale), int(x / scale)]) == row["color"]
    # The tumour block (right) and the normal tissue (left) look different.
    def mean_colour(gx: slice, gy: slice) -> np.ndarray:
        px = slice(int((gx.start * STEP + STEP) / scale), int((gx.stop * STEP + STEP) / scale))
        py = slice(int((gy.start * STEP + STEP) / scale), int((gy.stop * STEP + STEP) / scale))
        return image[py, px, :3].reshape(-1, 3).mean(0)

    tumour, normal = mean_colour(slice(16, 20), slice(9, 15)), mean_colour(slice(3, 8), slice(9, 15))
    assert np.abs(tumour - normal).max() > 60


def test_umap_map_and_csv(regions, tmp_path, umap_colours):
    out = tmp_path / "umap.png"
    result = write_embedding_map(regions, out, tissuumaps=tmp_path / "umap.csv", max_side=300, n_epochs=100)
    assert result.method == "umap" and out.is_file()
    rows = read_csv(tmp_path / "umap.csv")
    assert list(rows[0]) == ["x", "y", "color", "umap_1", "umap_2", "umap_3"]
    again = write_embedding_map(regions, tmp_path / "again.png", tissuumaps=tmp_path / "again.csv", max_side=300,
                                n_epochs=100)
    assert read_csv(again.tissuumaps) == rows  # reproducible colours
    assert (read_png(out) == read_png(again.path)).all()


def test_seeds_and_result_overlays_change_the_image(regions, tmp_path):
    plain = write_embedding_map(regions, tmp_path / "plain.png", method="pca", max_side=400)
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("x,y,label\n640,1664,normal\n2432,1664,tumour\n")
    marked = write_embedding_map(regions, tmp_path / "seeds.png", method="pca", max_side=400, seeds=seeds)
    assert marked.seeds.counts == {"normal": 1, "tumour": 1}
    a, b = read_png(plain.path), read_png(marked.path)
    assert b.shape[1] == a.shape[1] and b.shape[0] > a.shape[0]  # same map, a longer band below (the legend)
    h = int(Image.open(plain.path).text["overlay_height"])
    assert (a[:h] != b[:h]).any(axis=2).sum() > 50  # seed discs drawn
    scale = marked.level0_per_pixel
    # The disc at the tumour seed's patch centre (2432, 1664) is vermillion, the 'tumour' colour.
    assert hex_of(b[int(1664 / scale), int(2432 / scale)]) == "#d55e00"

    from sic_share.sic import load_slide

    slide, _ = load_slide(regions, "s0")
    labels_file = tmp_path / "result.parquet"
    write_labels(labels_file, slide_id="s0", coords=slide.coords, labels=slide.labels, classes=("normal", "tumour"))
    both = write_embedding_map(regions, tmp_path / "both.png", method="pca", max_side=400, seeds=seeds,
                               result=labels_file)
    c = read_png(both.path)
    assert c.shape[1] == 2 * a.shape[1] + 8  # map | result panel
    assert (c[:h, : a.shape[1]] == b[:h]).all()  # left panel is the seeded map
    # Right panel: a tumour patch away from the seeds is in the tumour colour, a normal one grey.
    right = c[:, a.shape[1] + 8:]
    assert hex_of(right[int(1408 / scale), int(2304 / scale)]) == "#d55e00"
    assert hex_of(right[int(1408 / scale), int(768 / scale)]) == "#999999"
    # A CSV result works the same.
    write_labels(tmp_path / "result.csv", slide_id="s0", coords=slide.coords, labels=slide.labels,
                 classes=("normal", "tumour"), fmt="csv")
    csv_both = write_embedding_map(regions, tmp_path / "both2.png", method="pca", max_side=400, seeds=seeds,
                                   result=tmp_path / "result.csv")
    assert (read_png(csv_both.path) == c).all()


def test_result_of_another_slide_or_grid_is_a_one_line_error(regions, tmp_path):
    from sic_share.sic import load_slide

    slide, _ = load_slide(regions, "s0")
    other = tmp_path / "other.csv"
    write_labels(other, slide_id="s9", coords=slide.coords, labels=slide.labels, classes=("normal", "tumour"),
                 fmt="csv")
    with pytest.raises(SicShareError, match="no rows of slide 's0'") as err:
        write_embedding_map(regions, tmp_path / "m.png", method="pca", result=other)
    assert "\n" not in str(err.value)
    shifted = tmp_path / "shifted.csv"
    write_labels(shifted, slide_id="s0", coords=slide.coords + 64, labels=slide.labels,
                 classes=("normal", "tumour"), fmt="csv")
    with pytest.raises(SicShareError, match="at no patch centre"):
        write_embedding_map(regions, tmp_path / "m.png", method="pca", result=shifted)
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*"))  # nothing half-written


def test_failed_run_keeps_the_previous_map(regions, tmp_path):
    out = tmp_path / "map.png"
    write_embedding_map(regions, out, method="pca", max_side=100)
    before = out.read_bytes()
    (tmp_path / "bad.csv").write_text("x,y,label\n99999,1664,tumour\n")  # far beyond the slide
    with pytest.raises(SicShareError):
        write_embedding_map(regions, out, method="pca", max_side=100, seeds=tmp_path / "bad.csv",
                            tissuumaps=tmp_path / "map.csv")
    assert out.read_bytes() == before and not (tmp_path / "map.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "map.png"]


def test_map_errors_are_one_line_and_come_before_the_work(regions, tmp_path, monkeypatch):
    import sic_share.viz._embedding_map as module

    def no_work(*args, **kwargs):
        raise AssertionError("the embedding was computed before the inputs were checked")

    monkeypatch.setattr(module, "embedding_rgb", no_work)
    cases = [
        ({"out_png": tmp_path / "nope" / "map.png"}, "does not exist"),
        ({"tissuumaps": tmp_path / "nope" / "map.csv"}, "does not exist"),
        ({"slide_id": "s7"}, "no slide 's7'"),
        ({"method": "tsne"}, "'umap' or 'pca'"),
    ]
    for kwargs, fragment in cases:
        args = {"out_png": tmp_path / "map.png", **kwargs}
        with pytest.raises(SicShareError) as err:
            write_embedding_map(regions, **args)
        assert fragment in str(err.value) and "\n" not in str(err.value)


def test_missing_umap_says_what_to_install(regions, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # 'import umap' now fails as if not installed
    with pytest.raises(SicShareError, match=re.escape("pip install 'sic-share[umap]'")) as err:
        write_embedding_map(regions, tmp_path / "map.png")
    assert "\n" not in str(err.value) and "method='pca'" in str(err.value)
    assert not (tmp_path / "map.png").exists()
    write_embedding_map(regions, tmp_path / "map.png", method="pca")  # PCA needs nothing more
    with pytest.raises(SicShareError, match="sic-share\\[umap\\]"):
        to_anndata(regions, tmp_path / "s.h5ad")


# -- AnnData for DEPICTER ----------------------------------------------------------------------------


def test_h5ad_has_depicters_layout_and_reads_back(regions, tmp_path):
    anndata = pytest.importorskip("anndata")
    h5py = pytest.importorskip("h5py")
    from sic_share.sic import load_slide

    slide, _ = load_slide(regions, "s0")
    out = to_anndata(regions, tmp_path / "s0.h5ad", method="pca")
    assert out == tmp_path / "s0.h5ad"
    adata = anndata.read_h5ad(out)
    n = len(slide)
    assert adata.n_obs == n
    np.testing.assert_array_equal(adata.obsm["spatial"], slide.coords)  # level-0 centres
    np.testing.assert_array_equal(adata.obsm["features"], slide.embeddings)
    assert adata.obsm["X_umap"].shape == (n, 2) and np.isfinite(adata.obsm["X_umap"]).all()
    colors = list(adata.obs["color"].astype(str))
    assert all(HEX.match(c) for c in colors)
    assert list(adata.obs["class"].astype(str)) == [("normal", "tumour")[k] for k in slide.labels]
    assert set(adata.obs["slide_id"]) == {"s0"}
    record = adata.uns["sic_share"]
    assert record["coordinates"] == "level-0 patch centres (x, y) in pixels"
    assert record["patch_size_level0"] == 256 and record["level0_mpp"] == 0.5 and record["model"] == "test-model"
    # The same colours as the map and its TissUUmaps CSV with the same settings.
    made = write_embedding_map(regions, tmp_path / "m.png", method="pca", tissuumaps=tmp_path / "m.csv")
    assert [r["color"] for r in read_csv(made.tissuumaps)] == colors
    # What the plugin reads: dense /obsm/features and /obsm/X_umap columns, /obsm/spatial.
    with h5py.File(out, "r") as f:
        assert isinstance(f["obsm/features"], h5py.Dataset) and f["obsm/features"].shape == slide.embeddings.shape
        assert f["obsm/X_umap"].shape == (n, 2) and f["obsm/spatial"].shape == (n, 2)
    # Privacy: no file name or path of the source anywhere in the file.
    raw = out.read_bytes()
    for secret in (str(regions), regions.name, "hospital-x", "s0.parquet"):
        assert secret.encode() not in raw
    assert not list(tmp_path.glob(".*"))  # the temporary file is gone


def test_h5ad_with_umap(regions, tmp_path, umap_colours):
    anndata = pytest.importorskip("anndata")
    out = to_anndata(regions, tmp_path / "u.h5ad", n_epochs=100)
    adata = anndata.read_h5ad(out)
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2) and adata.obsm["X_umap_3d"].shape == (adata.n_obs, 3)
    assert adata.uns["sic_share"]["method"] == "umap"
    made = write_embedding_map(regions, tmp_path / "m.png", tissuumaps=tmp_path / "m.csv", n_epochs=100)
    assert [r["color"] for r in read_csv(made.tissuumaps)] == list(adata.obs["color"].astype(str))


def test_h5ad_errors_are_one_line(regions, tmp_path, monkeypatch):
    for kwargs, fragment in (({"out_h5ad": tmp_path / "nope" / "s.h5ad"}, "does not exist"),
                             ({"slide_id": "s7"}, "no slide 's7'")):
        args = {"out_h5ad": tmp_path / "s.h5ad", "method": "pca", **kwargs}
        with pytest.raises(SicShareError) as err:
            to_anndata(regions, **args)
        assert fragment in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setitem(sys.modules, "anndata", None)
    with pytest.raises(SicShareError, match=re.escape("pip install 'sic-share[anndata]'")) as err:
        to_anndata(regions, tmp_path / "s.h5ad", method="pca")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_dataset_with_several_slides_needs_a_slide_id(tmp_path, local_key):
    root = sign_local(make_dataset(tmp_path / "ds", slides=2, n=64), local_key)
    with pytest.raises(SicShareError, match="--slide"):
        write_embedding_map(root, tmp_path / "m.png", method="pca")
    made = write_embedding_map(root, tmp_path / "m.png", method="pca", slide_id="s1", max_side=64)
    assert made.slide_id == "s1" and made.size[0] == 160  # a 64-px map, its caption band 160 px wide


# --- the commands ----------------------------------------------------------------------------------


def test_umap_command_writes_the_map_and_the_tissuumaps_csv(cli, regions, tmp_path):
    out, csv_path = tmp_path / "map.png", tmp_path / "map.csv"
    result = cli("umap", regions, "--method", "pca", "--out", out, "--tissuumaps", csv_path)
    assert result.code == 0, result.err
    assert "coloured by pca" in result.out
    assert read_png(out).shape[2] >= 3
    rows = read_csv(csv_path)
    assert set(rows[0]) >= {"x", "y", "color", "pca_1", "pca_2", "pca_3"}


def test_umap_command_errors_are_one_line(cli, regions, tmp_path):
    assert_one_line_error(cli("umap", regions, "--out", tmp_path / "no" / "map.png"), "does not exist")
    assert_one_line_error(cli("umap", regions, "--out", tmp_path / "map.csv"), "should end in .png")
    assert_one_line_error(cli("to-anndata", regions, "--out", tmp_path / "s.txt"), "should end in .h5ad")
    assert not (tmp_path / "map.csv").exists() and not (tmp_path / "s.txt").exists()
    assert_one_line_error(cli("umap", regions, "--method", "tsne", "--out", tmp_path / "m.png"), "'tsne'")
    assert not (tmp_path / "m.png").exists()


def test_to_anndata_command(cli, regions, tmp_path):
    anndata = pytest.importorskip("anndata")
    out = tmp_path / "slide.h5ad"
    result = cli("to-anndata", regions, "--method", "pca", "--out", out)
    assert result.code == 0, result.err
    adata = anndata.read_h5ad(out)
    assert {"spatial", "features", "X_umap"} <= set(adata.obsm)
    assert "color" in adata.obs
    assert_one_line_error(cli("to-anndata", regions, "--out", tmp_path / "no" / "s.h5ad"), "does not exist")


def test_seeds_named_in_other_words_than_the_dataset_are_still_drawn(cli, regions, tmp_path):
    # The map only draws seeds, so names the dataset's classes lack (here QuPath's) are not an error.
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("x,y,label\n1920,1664,Lesion\n640,1664,Background\n")
    result = cli("umap", regions, "--method", "pca", "--seeds", seeds, "--out", tmp_path / "m.png")
    assert result.code == 0, result.err


def test_the_map_reports_its_steps_for_a_progress_bar(regions, tmp_path):
    steps = []
    write_embedding_map(regions, tmp_path / "m.png", method="pca", max_side=64,
                        progress=lambda step, done, total: steps.append((step.split()[0], done, total)))
    assert steps == [("reading", 0, 3), ("PCA", 1, 3), ("drawing", 2, 3), ("done", 3, 3)]


def test_a_qupath_seeds_files_colours_are_the_maps_and_the_same_as_sics(cli, regions, tmp_path):
    """One class, one colour: umap draws a seeds file's QuPath colours as sic's PNG does (class names matched
    without regard to case); --classes orders the palette as sic's does; --classes with --result is one line."""
    import json

    from sic_share.dataset import read_slide

    data = read_slide(regions / "slides" / "s0.parquet")
    colours = {"Stroma": [10, 200, 30], "Lesion": [120, 20, 160]}
    picks = {"Stroma": np.flatnonzero(data.labels == 0)[:3], "Lesion": np.flatnonzero(data.labels == 1)[:3]}
    seeds = tmp_path / "seeds.geojson"
    seeds.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [int(data.coords[i, 0]), int(data.coords[i, 1])]},
         "properties": {"objectType": "annotation", "classification": {"name": name, "color": colours[name]}}}
        for name, rows in picks.items() for i in rows]}))

    def drawn(path: Path) -> set[tuple[int, int, int]]:
        return {rgb for _, rgb in Image.open(path).convert("RGB").getcolors(1 << 20)}

    result = cli("umap", regions, "--method", "pca", "--seeds", seeds, "--out", tmp_path / "map.png")
    assert result.code == 0, result.err
    assert {tuple(c) for c in colours.values()} <= drawn(tmp_path / "map.png")  # seeds and legend in QuPath's colours
    assert cli("sic", regions, "--seeds", seeds, "--classes", "stroma,lesion", "--out", tmp_path / "sic.png").code == 0
    assert {tuple(c) for c in colours.values()} <= drawn(tmp_path / "sic.png")

    # without a seeds file's colours, --classes gives the palette in the order sic gives it
    csv_seeds = tmp_path / "seeds.csv"
    csv_seeds.write_text("x,y,label\n" + "".join(f"{data.coords[i, 0]},{data.coords[i, 1]},{name}\n"
                                                 for name, rows in picks.items() for i in rows))
    by_order = {}
    for order in ("Stroma,Lesion", "Lesion,Stroma"):
        name = order.replace(",", "-")
        assert cli("umap", regions, "--method", "pca", "--seeds", csv_seeds, "--classes", order, "--out",
                   tmp_path / f"{name}-map.png").code == 0
        assert cli("sic", regions, "--seeds", csv_seeds, "--classes", order, "--out", tmp_path / f"{name}.png").code == 0
        image = Image.open(tmp_path / f"{name}.png")
        overlay = np.asarray(image.convert("RGBA"))[: int(image.text["overlay_height"])]
        sic_colours = {tuple(p[:3]) for p in overlay.reshape(-1, 4) if p[3] == 255}
        assert len(sic_colours) == 2 and sic_colours <= drawn(tmp_path / f"{name}-map.png"), order
        # at a seed, the map's disc has the colour sic gives that seed's class (seeds keep their class)
        scale = float(image.text["level0_per_pixel"])
        for rows in picks.values():
            x, y = (data.coords[rows[0]] / scale).astype(int)
            disc = Image.open(tmp_path / f"{name}-map.png").convert("RGB").getpixel((int(x), int(y)))
            assert disc == tuple(overlay[y, x, :3]), (order, disc)
        by_order[order] = {n: tuple(overlay[tuple((data.coords[r[0]] / scale).astype(int)[::-1])][:3])
                           for n, r in picks.items()}
    assert by_order["Stroma,Lesion"]["Stroma"] == by_order["Lesion,Stroma"]["Lesion"]  # the palette follows the order
    labels = tmp_path / "labels.csv"
    assert cli("sic", regions, "--seeds", csv_seeds, "--classes", "Stroma,Lesion", "--out", labels).code == 0
    assert_one_line_error(cli("umap", regions, "--method", "pca", "--result", labels, "--classes", "Stroma,Lesion",
                              "--out", tmp_path / "x.png"), "--classes", "--result")
