"""Every consumer command on datasets made by ``sic-share import`` (.npy pairs, CLAM and TRIDENT .h5).

Imports leave empty what only an export knows: the target µm/px and the grid stride
(.npy, CLAM), the slide's level-0 size (always), the level-0 µm/px (without --mpp),
ground-truth labels and class names (CLAM, TRIDENT). Each command either works on
what an import holds or refuses in one line naming what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import DATA, assert_one_line_error, blobs, sign_local
from sic_share.dataset import read_slide

# consumer commands verify a local folder before reading it: the imports here are signed by a key each test trusts
pytestmark = pytest.mark.usefixtures("trust_local")

FORMATS = ("npy", "clam", "trident")
N, DIM = 300, 24  # patches per slide, feature dim
PATCH = 256  # level-0 patch side; blobs() puts centres 128 px apart (a 50 % overlap grid)
CLASSES = ("benign", "tumour")


def write_source(folder: Path, fmt: str, stem: str = "PATIENT-3_HE", *, seed: int = 0,
                 dim: int = DIM) -> tuple[Path, np.ndarray]:
    """One slide's embeddings as the other tool writes them; returns (input path, labels)."""
    centres, emb, labels = blobs(N, dim, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        np.save(folder / f"{stem}.coords.npy", centres)
        np.save(folder / f"{stem}.features.npy", emb)
        np.save(folder / f"{stem}.labels.npy", labels)
        return folder, labels
    corners = centres - PATCH // 2
    with h5py.File(folder / f"{stem}.h5", "w") as f:
        dset = f.create_dataset("coords", data=corners)
        if fmt == "clam":
            dset.attrs.update({"patch_size": PATCH, "patch_level": 0, "name": stem,
                               "save_path": f"/mnt/hospital/{stem}"})
            f.create_dataset("features", data=emb)
        else:
            dset.attrs.update({"patch_size": PATCH, "patch_size_level0": PATCH, "target_magnification": 20,
                               "level0_magnification": 20, "overlap": PATCH // 2, "name": stem})
            f.create_dataset("features", data=emb[None])
    return folder / f"{stem}.h5", labels


def do_import(cli, source: Path, out: Path, fmt: str, *extra: str) -> Path:
    args = ["import", source, "--out", out, "--format", fmt, "--model-id", f"model-{out.name}", *extra]
    if fmt == "npy":
        args += ["--patch-size", str(PATCH), "--mpp", "0.5", "--classes", ",".join(CLASSES)]
    result = cli(*args)
    assert result.code == 0, result.err
    return out


@pytest.fixture(params=FORMATS)
def imported(request, tmp_path, cli, local_key) -> tuple[str, Path]:
    """(format, a signed one-slide dataset imported from that format)."""
    fmt = request.param
    source, _ = write_source(tmp_path / "in", fmt)
    return fmt, sign_local(do_import(cli, source, tmp_path / "ds", fmt), local_key)


def slide_of(ds: Path):
    [path] = (ds / "slides").glob("*.parquet")
    return read_slide(path)


def qupath_seeds(path: Path, ds: Path, per_class: int = 3) -> Path:
    """QuPath annotations over patch centres: points of class 'a' on the first patches, small squares
    of class 'b' on the last."""
    slide = slide_of(ds)
    colours = {"a": [200, 0, 0], "b": [0, 0, 200]}
    picks = {"a": slide.coords[:per_class], "b": slide.coords[-per_class:]}

    def geometry(name: str, x: int, y: int) -> dict:
        if name == "a":
            return {"type": "Point", "coordinates": [x, y]}
        ring = [[x - 20, y - 20], [x + 20, y - 20], [x + 20, y + 20], [x - 20, y + 20], [x - 20, y - 20]]
        return {"type": "Polygon", "coordinates": [ring]}

    features = [
        {"type": "Feature", "id": f"00000000-0000-4000-8000-{i:012d}", "geometry": geometry(name, int(x), int(y)),
         "properties": {"objectType": "annotation", "classification": {"name": name, "color": colours[name]}}}
        for i, (name, (x, y)) in enumerate((n, p) for n, pts in picks.items() for p in pts)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


# --- reading: info, verify, audit -----------------------------------------------------------------


def test_info_and_verify_read_an_import(cli, imported):
    fmt, ds = imported
    result = cli("verify", ds)
    assert result.code == 0, result.err
    assert "lab-local/local@1" in result.out
    result = cli("info", ds)
    assert result.code == 0, result.err
    assert "model-ds" in result.out and f"import:{fmt}" in result.out
    assert f"1, {N} patches" in result.out
    assert "None" not in result.out  # what an import leaves empty reads 'unknown'


def test_audit_finds_nothing_in_an_import(cli, imported):
    fmt, ds = imported
    result = cli("audit", ds, "--forbid", "PATIENT-3")
    assert result.code == 0, (result.out, result.err)


# --- clustering and maps: sic, umap, to-anndata, app ------------------------------------------------


def test_sic_labels_every_patch_of_an_import(cli, imported, tmp_path):
    fmt, ds = imported
    seeds = qupath_seeds(tmp_path / "seeds.geojson", ds)
    outs = [tmp_path / "out.parquet", tmp_path / "out.geojson", tmp_path / "out.png"]
    result = cli("sic", ds, "--seeds", seeds, "--classes", "a,b", *[x for o in outs for x in ("--out", o)])
    assert result.code == 0, result.err
    assert "from 6 seeded patches" in result.out
    assert pq.read_table(outs[0]).num_rows == N
    assert json.loads(outs[1].read_text())["features"]
    assert outs[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_umap_pca_maps_an_import(cli, imported, tmp_path):
    fmt, ds = imported
    out, csv = tmp_path / "map.png", tmp_path / "map.csv"
    result = cli("umap", ds, "--out", out, "--method", "pca", "--tissuumaps", csv)
    assert result.code == 0, result.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(csv.read_text().splitlines()) == N + 1


def test_to_anndata_writes_every_patch_of_an_import(cli, imported, tmp_path):
    anndata = pytest.importorskip("anndata")
    fmt, ds = imported
    out = tmp_path / "slide.h5ad"
    result = cli("to-anndata", ds, "--out", out, "--method", "pca")
    assert result.code == 0, result.err
    adata = anndata.read_h5ad(out)
    assert adata.n_obs == N
    assert adata.obsm["features"].shape == (N, DIM)
    np.testing.assert_array_equal(adata.obsm["spatial"], slide_of(ds).coords)


def test_app_serves_an_import(imported):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    import asyncio

    from sic_share.app import build, prepare
    from sic_share.app._binary import unpack

    fmt, ds = imported
    application = build(prepare(ds))

    def call(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        sent, got = {"done": False}, {"status": 0, "body": b""}

        async def receive():
            if sent["done"]:
                return {"type": "http.disconnect"}
            sent["done"] = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                got["status"] = message["status"]
            elif message["type"] == "http.response.body":
                got["body"] += message.get("body", b"")

        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": b"", "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
                 "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "http_version": "1.1"}
        asyncio.run(application(scope, receive, send))
        return got["status"], got["body"]

    status, page = call("GET", "/")
    assert status == 200 and b"<html" in page.lower()
    status, body = call("GET", "/api/arrays.bin")
    assert status == 200
    _, arrays = unpack(body)
    assert arrays["coords"].shape == (N, 2)


# --- comparing: benchmark, similarity ----------------------------------------------------------------


def test_benchmark_runs_on_labelled_imports_and_refuses_unlabelled_ones_in_one_line(cli, imported, tmp_path):
    fmt, ds = imported
    out = tmp_path / "folds.csv"
    result = cli("benchmark", ds, "--clicks", "1,3", "--folds", "2", "--out", out)
    if fmt == "npy":  # .labels.npy and --classes carry the ground truth
        assert result.code == 0, result.err
        assert len(out.read_text().splitlines()) == 1 + 2 * 2
    else:  # CLAM and TRIDENT files hold no labels
        assert_one_line_error(result, "no ground-truth", "labels.npy", "--classes")
        assert not out.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_similarity_of_two_models_imported_on_one_grid(cli, tmp_path, local_key, fmt):
    # the same slide (so the same pseudonym) and grid, features of two "models"
    source_a, _ = write_source(tmp_path / "in-a", fmt, seed=0)
    source_b, _ = write_source(tmp_path / "in-b", fmt, seed=0, dim=DIM // 2)
    a = sign_local(do_import(cli, source_a, tmp_path / "a", fmt), local_key, "a")
    b = sign_local(do_import(cli, source_b, tmp_path / "b", fmt), local_key, "b")
    result = cli("similarity", a, b, "--json")
    assert result.code == 0, result.err
    body = json.loads(result.out)
    assert body["n_matched"] == N and body["model_a"] == "model-a" and body["model_b"] == "model-b"
    assert 0 < body["cka"] <= 1
    if fmt == "npy":
        assert body["agreement"] is not None  # labels were imported: SIC agreement ran


def test_similarity_refuses_imports_on_different_grids_in_one_line(cli, tmp_path, local_key):
    source, _ = write_source(tmp_path / "in", "npy")
    a = sign_local(do_import(cli, source, tmp_path / "a", "npy"), local_key, "a")
    b_in = tmp_path / "in-b"
    b_in.mkdir()
    for part in ("coords", "features", "labels"):
        data = np.load(source / f"PATIENT-3_HE.{part}.npy")
        np.save(b_in / f"PATIENT-3_HE.{part}.npy", data * 3 if part == "coords" else data)
    b = cli("import", b_in, "--out", tmp_path / "b", "--format", "npy", "--patch-size", "512", "--mpp", "0.5",
            "--classes", ",".join(CLASSES), "--model-id", "model-b")
    assert b.code == 0, b.err
    sign_local(tmp_path / "b", local_key, "b")
    assert_one_line_error(cli("similarity", a, tmp_path / "b"), "different grids")


# --- an export and an import of the same slide: sic-share's own model against one run elsewhere -------


@pytest.fixture(scope="module")
def cmu_export(tmp_path_factory, local_key) -> tuple[Path, Path]:
    """(signed export of the real slide with the handcrafted encoder, the holder secret it used)."""
    pytest.importorskip("openslide")
    from sic_share.export import ExportOptions, export_slides

    root = tmp_path_factory.mktemp("cmu")
    secret = root / "holder.secret"
    export_slides([DATA / "cmu_small_region.svs"], root / "cmu-hc",
                  ExportOptions(models=("handcrafted",), workers=0, secret_path=str(secret)))
    return sign_local(root / "cmu-hc", local_key, "cmu-hc"), secret


def h5_from_export(path: Path, export: Path, fmt: str, *, level0_size: int | None = None) -> Path:
    """The exported slide's patches as another tool would store them: corners, and other features."""
    slide = slide_of(export)
    size = slide.metadata.patching.level0_size_px if level0_size is None else level0_size
    rng = np.random.default_rng(1)
    features = np.tanh(slide.embeddings @ rng.normal(size=(slide.embeddings.shape[1], 32)))  # "another model"
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("coords", data=slide.coords - size // 2)
        if fmt == "clam":
            dset.attrs.update({"patch_size": size, "patch_level": 0})
        else:
            dset.attrs.update({"patch_size": 256, "patch_size_level0": size, "target_magnification": 20,
                               "level0_magnification": 20, "overlap": 128})
        f.create_dataset("features", data=features.astype(np.float32))
    return path


@pytest.mark.parametrize("fmt", ["clam", "trident"])
def test_similarity_of_an_export_and_an_import_of_the_same_slide(cli, tmp_path, local_key, cmu_export, fmt):
    export, secret = cmu_export
    source = h5_from_export(tmp_path / "cmu_small_region.h5", export, fmt)  # same stem: the same pseudonym
    imported = do_import(cli, source, tmp_path / "other", fmt, "--secret", secret, "--mpp", "0.499")
    sign_local(imported, local_key, "other")
    result = cli("similarity", export, imported, "--json")
    assert result.code == 0, result.err
    body = json.loads(result.out)
    n = len(slide_of(export).coords)
    assert body["n_matched"] == n == body["n_a"] == body["n_b"]
    assert 0 < body["cka"] <= 1 and body["model_b"] == "model-other"


def test_similarity_refuses_an_import_cut_into_other_patches_than_the_export(cli, tmp_path, local_key, cmu_export):
    export, secret = cmu_export
    source = h5_from_export(tmp_path / "cmu_small_region.h5", export, "clam", level0_size=512)
    imported = sign_local(do_import(cli, source, tmp_path / "other", "clam", "--secret", secret), local_key, "o")
    assert_one_line_error(cli("similarity", export, imported), "different grids", "257 vs 512 level-0 px",
                          "--patch-size")
