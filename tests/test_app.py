"""The annotation app without a browser: its cache, its loop, its HTTP API, and every way it refuses to start.

The browser tests are in test_app_browser.py.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import BUCKET, DATA, assert_one_line_error, make_dataset, make_publisher, sign_local
from sic_share.app import Session, SessionError, WORK_DIMS, locate_slide, open_cached, prepare
from sic_share.app._slide import FULL_DIMS_VALUES
from sic_share.app._binary import pack, unpack
from sic_share.dataset import ModelInfo, Patching, SlideMetadata, read_slide, write_slide
from sic_share.signing import sign_dataset

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

# the app verifies a local folder before reading it: the folders here are signed by a key each test trusts
pytestmark = pytest.mark.usefixtures("trust_local")


@pytest.fixture
def dataset(tmp_path, local_key) -> Path:
    return sign_local(make_dataset(tmp_path / "crc", slides=2, n=400, dim=16), local_key)


def test_binary_bodies_round_trip_typed_arrays():
    arrays = {"a": np.arange(5, dtype=np.int8), "b": np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2),
              "c": np.array([7, 8], np.int32)}
    body = pack({"x": 1}, arrays)
    meta, got = unpack(body)
    assert meta == {"x": 1}
    for name, value in arrays.items():
        np.testing.assert_array_equal(got[name], value)
    header = int.from_bytes(body[:4], "little")
    start = 4 + header
    assert start % 8 == 0  # every array can be viewed in place as a typed array
    assert all((start + spec["offset"]) % 8 == 0 for spec in json.loads(body[4:start])["arrays"].values())


def test_cache_is_keyed_by_sha256_and_warm_opens_do_not_read_parquet(dataset, tmp_path, monkeypatch):
    located = locate_slide(dataset, "s1")
    cold = open_cached(located)
    truth = read_slide(located.path, dtype=np.float16)
    np.testing.assert_array_equal(cold.embeddings, truth.embeddings)
    np.testing.assert_array_equal(cold.coords, truth.coords)
    assert cold.embeddings.dtype == np.float16 and isinstance(cold.embeddings, np.memmap)
    from sic_share.signing import sha256_file

    assert cold.digest == sha256_file(located.path)
    assert cold.folder.name == f".{cold.digest}.app"

    import sic_share.app._slide as slide_module

    monkeypatch.setattr(slide_module, "read_slide", lambda *a, **k: pytest.fail("warm open read the Parquet file"))
    monkeypatch.setattr("sic_share.signing.sha256_file", lambda *a: pytest.fail("warm open hashed the file"))
    warm = open_cached(located)
    assert warm.folder == cold.folder
    np.testing.assert_array_equal(warm.embeddings, truth.embeddings)


def test_a_changed_slide_file_gets_a_new_cache(dataset, local_key):
    located = locate_slide(dataset, "s0")
    first = open_cached(located)
    make_dataset(dataset, slides=1, n=300, dim=16, seed=7)  # rewrites s0 with other patches
    sign_local(dataset, local_key)  # as version 2: the rewritten file is what is signed now
    second = open_cached(locate_slide(dataset, "s0"))
    assert second.digest != first.digest and len(second) == 300


def test_wide_embeddings_are_clustered_in_a_cached_principal_subspace(tmp_path, local_key):
    rng = np.random.default_rng(0)
    n, dim = 600, 1024  # 614,400 values: more than FULL_DIMS_VALUES
    side = int(np.ceil(np.sqrt(n)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
    truth = (grid[:, 0] > side // 2).astype(np.int8)
    emb = rng.normal(0, 1, (n, dim)) + truth[:, None] * rng.normal(0, 3, dim)
    meta = SlideMetadata(ModelInfo("wide", dim, "test"), Patching(256, 256, 0.5, 0.5, 128), ("normal", "tumour"))
    write_slide(tmp_path / "w" / "slides" / "w.parquet", slide_id="w", metadata=meta,
                coords=(grid * 128 + 128).astype(np.int32), embeddings=emb, labels=truth)
    slide = open_cached(locate_slide(sign_local(tmp_path / "w", local_key), None))
    work = slide.work_matrix()
    assert work.shape == (n, WORK_DIMS) and (slide.folder / f"work{WORK_DIMS}.npy").exists()
    session = Session(slide)
    session.add_seeds(np.flatnonzero(truth == 0)[:3], 0)
    session.add_seeds(np.flatnonzero(truth == 1)[:3], 1)
    labels = session.outcome().labels
    assert (labels == truth).mean() > 0.95


def test_a_small_slide_of_wide_embeddings_gets_exactly_the_clis_labels_and_where_to_seed_next(tmp_path, local_key):
    """Below FULL_DIMS_VALUES the app clusters the embeddings themselves, as 'sic-share sic' does: the same counts;
    the response carries the confidence layer's tiers and the places the CLI names."""
    from sic_share.sic import run_sic
    from sic_share.viz import confidence_scale, uncertain_regions

    rng = np.random.default_rng(3)
    n, dim = 300, 1280
    side = int(np.ceil(np.sqrt(n)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
    truth = (grid[:, 0] + rng.integers(-2, 3, n) > side // 2).astype(np.int8)  # a ragged border
    emb = rng.normal(0, 1, (n, dim)) + truth[:, None] * rng.normal(0, 0.4, dim)
    assert n * dim <= FULL_DIMS_VALUES
    meta = SlideMetadata(ModelInfo("wide", dim, "test"), Patching(256, 256, 0.5, 0.5, 128), ("Dermis", "Epidermis"))
    write_slide(tmp_path / "w" / "slides" / "w.parquet", slide_id="w", metadata=meta,
                coords=(grid * 128 + 128).astype(np.int32), embeddings=emb, labels=truth)
    dataset = sign_local(tmp_path / "w", local_key)
    slide = open_cached(locate_slide(dataset, None))
    session = Session(slide)
    assert session.work_dim == dim
    session.add_seeds(np.flatnonzero(truth == 0)[[0, 40, 80]], 0)
    session.add_seeds(np.flatnonzero(truth == 1)[[0, 40, 80]], 1)
    meta_out, arrays = session.response()
    data, name, _ = session.save_seeds("csv")
    (tmp_path / name).write_bytes(data)
    expected = run_sic(dataset, tmp_path / name, classes=("Dermis", "Epidermis"))
    np.testing.assert_array_equal(arrays["labels"], expected.labels)
    assert {c["name"]: c["count"] for c in meta_out["classes"]} == expected.counts
    scale = confidence_scale(expected.confidence)
    np.testing.assert_array_equal(arrays["unsure"], scale.tier)
    regions = [r.to_json() for r in uncertain_regions(expected.slide.coords, scale, expected.confidence)]
    assert meta_out["confidence"]["regions"] == regions and regions
    assert meta_out["confidence"]["legend"][0].startswith("least certain 5% (")


def test_session_loop_matches_run_sic_and_undoes(dataset, tmp_path):
    from sic_share.sic import run_sic

    slide = open_cached(locate_slide(dataset, "s0"))
    session = Session(slide)
    assert session.classes == ("normal", "tumour")  # the dataset's classes
    meta, arrays = session.response()
    assert "at least two classes" in meta["message"] and (arrays["labels"] == -1).all()
    truth = slide.truth
    session.add_seeds(np.flatnonzero(truth == 0)[:2], 0)
    session.add_seeds(np.flatnonzero(truth == 1)[:2], 1)
    two = session.outcome().labels.copy()
    data, name, _ = session.save_seeds("csv")
    (tmp_path / name).write_bytes(data)
    expected = run_sic(dataset, tmp_path / name, slide_id="s0", classes=("normal", "tumour"))
    np.testing.assert_array_equal(two, expected.labels)

    session.add_class("stroma")
    session.add_seeds([int(np.flatnonzero(truth == 1)[5])], 2)
    assert session.response()[0]["classes"][2]["seeds"] == 1
    session.undo()
    session.undo()
    assert session.classes == ("normal", "tumour")
    np.testing.assert_array_equal(session.outcome().labels, two)
    session.redo()
    assert session.classes == ("normal", "tumour", "stroma")
    meta, _ = session.response()
    assert "'stroma' has no seed yet" in meta["message"]

    with pytest.raises(SessionError, match="already a class"):
        session.add_class("Normal")
    with pytest.raises(SessionError, match="already a class"):
        session.rename_class(1, "NORMAL")
    session.rename_class(0, "Normal")  # a class may change only the case of its own name
    assert session.classes[0] == "Normal"
    session.undo()
    with pytest.raises(SessionError, match="not on this slide"):
        session.add_seeds([10_000], 0)
    with pytest.raises(SessionError, match="not one of"):
        session.set_method("nope")


def test_seeds_load_back_and_exports_use_the_sic_writers(dataset, tmp_path):
    import shapely.geometry

    slide = open_cached(locate_slide(dataset, "s0"))
    session = Session(slide)
    with pytest.raises(SessionError, match="nothing to export"):
        session.export("geojson")
    session.add_seeds([0, 5], 0)
    session.add_seeds([1, 7], 1)
    geo, name, _ = session.save_seeds("geojson")
    assert name.endswith(".geojson")
    fresh = Session(slide)
    assert fresh.load_seeds(geo, name) is None
    np.testing.assert_array_equal(fresh.seed_labels(), session.seed_labels())
    fresh.load_seeds(b"x,y,label\n128,128,stroma\n", "more.csv")
    assert fresh.classes == ("normal", "tumour", "stroma")
    with pytest.raises(SessionError, match="GeoJSON"):
        fresh.load_seeds(b"", "seeds.txt")

    labels = session.outcome().labels
    body, name, _ = session.export("geojson")
    doc = json.loads(body)
    names = {f["properties"]["classification"]["name"] for f in doc["features"]}
    assert names == {"normal", "tumour"}
    assert all(shapely.geometry.shape(f["geometry"]).is_valid for f in doc["features"])
    for fmt in ("tissuumaps", "csv"):
        text = session.export(fmt)[0].decode()
        assert len(text.strip().splitlines()) == len(labels) + 1
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(session.export("parquet")[0]))
    np.testing.assert_array_equal(table.column("label").to_numpy(), labels)
    assert session.export("png")[0][:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def api(dataset):
    """The Starlette app over a prepared slide, called in-process through ASGI."""
    import asyncio

    from sic_share.app import build

    application = build(prepare(dataset, slide_id="s0"))
    # as the page sends them: its own Host (port 80 of scope["server"]: no port), the token of the page it loaded
    sent_headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"x-sic-token", application.state.token.encode())]

    def call(method: str, path: str, body: bytes = b"", query: str = "") -> tuple[int, dict, bytes]:
        sent = {"body": body, "done": False}
        got: dict = {"status": 0, "headers": {}, "body": b""}

        async def receive():
            if sent["done"]:
                return {"type": "http.disconnect"}
            sent["done"] = True
            return {"type": "http.request", "body": sent["body"], "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                got["status"] = message["status"]
                got["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                got["body"] += message.get("body", b"")

        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": query.encode(), "headers": sent_headers,
                 "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "http_version": "1.1"}
        asyncio.run(application(scope, receive, send))
        return got["status"], got["headers"], got["body"]

    return call


def test_api_arrays_state_and_errors(api):
    status, headers, body = api("GET", "/api/arrays.bin")
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    meta, arrays = unpack(body)
    assert arrays["coords"].dtype == np.int32 and arrays["coords"].shape == (400, 2)
    assert arrays["rgb"].dtype == np.uint8 and arrays["layout"].dtype == np.float32
    status, _, body = api("POST", "/api/seeds", json.dumps({"class": 0, "indices": [0, 5]}).encode())
    status, _, body = api("POST", "/api/seeds", json.dumps({"class": 1, "indices": [1, 7]}).encode())
    meta, arrays = unpack(body)
    assert status == 200 and meta["can_undo"] and (arrays["labels"] >= 0).all()
    assert sum(c["count"] for c in meta["classes"]) == 400
    status, _, body = api("POST", "/api/seeds", json.dumps({"class": 5, "indices": [0]}).encode())
    assert status == 400 and json.loads(body) == {"error": "class 5 is not one of the 2 classes"}
    status, _, body = api("POST", "/api/seeds", b"not json")
    assert status == 400 and "not JSON" in json.loads(body)["error"]
    status, headers, body = api("GET", "/api/export", query="format=geojson")
    assert status == 200 and 'filename="s0-spreading.geojson"' in headers["content-disposition"]
    status, _, body = api("GET", "/map.png")
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    status, _, _ = api("GET", "/tiles/slide.dzi")
    assert status == 404  # no --image
    status, _, body = api("GET", "/")
    assert b"/static/openseadragon/openseadragon.min.js" in body
    assert b"http://" not in body and b"https://" not in body  # nothing from the internet


def test_image_tiles_are_deep_zoom_jpegs_of_the_slide(tmp_path):
    pytest.importorskip("openslide")
    from sic_share.app._tiles import SlideTiles

    tiles = SlideTiles(DATA / "cmu_small_region.svs")
    try:
        assert tiles.dimensions == (2220, 2967)
        assert 'Width="2220"' in tiles.dzi() and 'Height="2967"' in tiles.dzi()
        assert tiles.tile(12, 0, 0)[:3] == b"\xff\xd8\xff"
        with pytest.raises(ValueError):
            tiles.tile(12, 99, 99)
    finally:
        tiles.close()


# -- refusing to start: one line, exit 1, nothing left running ---------------------------------------


def _nothing_started(before: int) -> None:
    assert threading.active_count() == before


def test_missing_dataset_or_slide_is_one_line(cli, dataset, tmp_path):
    before = threading.active_count()
    assert_one_line_error(cli("app", tmp_path / "nowhere", "--no-browser", "--port", "0"),
                          "neither a dataset folder")
    assert_one_line_error(cli("app", dataset, "--slide", "s9", "--no-browser", "--port", "0"), "has no slide 's9'")
    assert_one_line_error(cli("app", dataset, "--no-browser", "--port", "0"), "has 2 slides: choose one with --slide")
    (tmp_path / "empty").mkdir()  # found the way 'sic' finds a slide: an empty folder is named, not a crash
    assert_one_line_error(cli("app", tmp_path / "empty", "--no-browser", "--port", "0"), "has no slides/*.parquet files")
    _nothing_started(before)


def test_port_in_use_is_one_line(cli, dataset):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    before = threading.active_count()
    try:
        assert_one_line_error(cli("app", dataset, "--slide", "s0", "--no-browser", "--port", port),
                              f"port {port} on 127.0.0.1 is in use")
    finally:
        holder.close()
    _nothing_started(before)


def test_remote_host_needs_allow_remote(cli, dataset):
    assert_one_line_error(cli("app", dataset, "--slide", "s0", "--no-browser", "--host", "0.0.0.0"),
                          "--allow-remote NAME")
    for name in ("http://workstation.lab/", "*.lab", "a b", "host:99999"):
        assert_one_line_error(cli("app", dataset, "--slide", "s0", "--no-browser", "--allow-remote", name),
                              f"--allow-remote {name!r} is not a host name or address")


def test_image_of_another_size_is_one_line(cli, dataset):
    pytest.importorskip("openslide")
    before = threading.active_count()
    assert_one_line_error(
        cli("app", dataset, "--slide", "s0", "--no-browser", "--port", "0", "--image", DATA / "stardist_histo.jpg"),
        "is 500 x 300 px at level 0", "give the slide this dataset was exported from")
    assert_one_line_error(
        cli("app", dataset, "--slide", "s0", "--no-browser", "--port", "0", "--image", DATA / "missing.svs"),
        "does not exist")
    _nothing_started(before)


def test_hub_dataset_opens_from_verified_cache_and_refusal_is_one_line(cli, tmp_path, as_user):
    from sic_share.hub import BlobCache

    name = f"crc{secrets.token_hex(4)}"
    hub = f"s3://{BUCKET}/"
    lab_b = make_publisher("lab-b", tmp_path / "keys-b")
    root = make_dataset(tmp_path / "crc-b", slides=1, n=100)
    sign_dataset(root, name=name, key_path=lab_b.private)
    as_user("lab-b")
    assert cli("publish", root, "--hub", hub).code == 0
    as_user("lab-a")  # lab-a's policy reads only lab-a/*
    assert_one_line_error(cli("app", f"lab-b/{name}", "--hub", hub, "--no-browser", "--port", "0"),
                          "refused", "AccessDenied")
    as_user("reader")
    prepared = prepare(f"lab-b/{name}", hub=hub)
    blob = BlobCache().path(prepared.slide.digest)
    assert blob.exists() and prepared.slide.folder == blob.with_name(f".{prepared.slide.digest}.app")
    assert prepared.slide.source == f"lab-b/{name}@1" and len(prepared.slide) == 100


def test_slide_size_round_trips_and_a_recorded_size_must_match_the_image(tmp_path, cli, local_key):
    pytest.importorskip("openslide")
    from sic_share.dataset import read_slide_metadata

    coords = np.array([[128, 128], [256, 128]], np.int32)
    meta = SlideMetadata(ModelInfo("m", 4, "test"), Patching(256, 256, 0.5, 0.5, 128), (), slide_size=(501, 300))
    path = write_slide(tmp_path / "d" / "slides" / "a.parquet", slide_id="a", metadata=meta, coords=coords,
                       embeddings=np.ones((2, 4)))
    assert read_slide_metadata(path)[0].slide_size == (501, 300)
    assert SlideMetadata.from_json(meta.to_json(), "x") == meta
    plain = SlideMetadata(ModelInfo("m", 4, "test"), Patching(256, 256, 0.5, 0.5, 128))
    assert b"slide_size" not in plain.to_json() and plain.slide_size is None
    assert_one_line_error(cli("app", sign_local(tmp_path / "d", local_key), "--no-browser", "--port", "0", "--image",
                              DATA / "stardist_histo.jpg"), "is 500 x 300 px", "slide is 501 x 300 px")


def test_the_app_starts_without_importing_scikit_learn():
    """Listing methods and finding a slide must not pay scikit-learn's import (over a second here):
    the app listens first and loads it in the background (Session.warm)."""
    import subprocess
    import sys

    code = ("import sys, sic_share.app, sic_share.cli; from sic_share.app import available_methods; "
            "assert available_methods()['spreading'].rules == (); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_warm_builds_the_first_click_graph_and_changes_no_label(tmp_path, local_key):
    from sic_share.sic import FAMILIES, draw_seeds
    from sic_share.sic._methods import GRAPH_SAMPLE

    slide_data = FAMILIES["shapes"](3, n_patches=GRAPH_SAMPLE + 500)
    meta = SlideMetadata(ModelInfo("synthetic", slide_data.X.shape[1], "test"), Patching(256, 256, 0.5, 0.5, 128),
                         ("normal", "lesion"))
    write_slide(tmp_path / "big" / "slides" / "b.parquet", slide_id="b", metadata=meta,
                coords=slide_data.coords.astype(np.int32), embeddings=slide_data.X, labels=slide_data.y)
    slide = open_cached(locate_slide(sign_local(tmp_path / "big", local_key), None))
    seeds = draw_seeds(slide_data.y, 3, random_state=0)
    results = []
    for warm in (True, False):
        session = Session(slide)
        if warm:
            session.warm()
            assert len(session._prepared) == 1  # the default method's anchor graph, before any click
        for c in (0, 1):
            session.add_seeds(np.flatnonzero(seeds == c), c)
        results.append(session.outcome().labels.copy())
    np.testing.assert_array_equal(results[0], results[1])
    assert 0 < (results[0] == 1).sum() < len(results[0])


def test_a_second_click_where_the_regional_step_runs_reuses_the_slides_regional_graph(tmp_path, local_key,
                                                                                      monkeypatch):
    """Where the default spreads again on the slide's regional structure (issue 23), that structure is built by the
    first click that needs it and kept with the slide's prepared graph: a later click only spreads."""
    import sic_share.sic._anchors as anchors
    import sic_share.sic._methods as methods
    from sic_share.sic import FAMILIES, create_method, draw_seeds
    from sic_share.sic._methods import GRAPH_SAMPLE

    data = FAMILIES["faint_shift"](5, n_patches=GRAPH_SAMPLE + 1500)
    emb = data.X[:, :64]  # at most WORK_DIMS: the loop works on the embeddings themselves, as the library fit below
    meta = SlideMetadata(ModelInfo("synthetic", 64, "test"), Patching(256, 256, 0.5, 0.5, 128), ("normal", "lesion"))
    write_slide(tmp_path / "faint" / "slides" / "f.parquet", slide_id="f", metadata=meta,
                coords=data.coords.astype(np.int32), embeddings=emb, labels=data.y)
    slide = open_cached(locate_slide(sign_local(tmp_path / "faint", local_key), None))
    calls = {"regional": 0, "graph": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(methods, "regional_projection", counted("regional", methods.regional_projection))
    monkeypatch.setattr(anchors, "_nearest_anchors", counted("graph", anchors._nearest_anchors))
    session = Session(slide)
    seeds = draw_seeds(data.y, 3, random_state=0)
    session.add_seeds(np.flatnonzero(seeds == 0), 0)
    session.add_seeds(np.flatnonzero(seeds == 1), 1)
    assert calls == {"regional": 1, "graph": 2}  # the first click: the slide's graph, then the regional step's
    more = seeds.copy()
    more[np.flatnonzero((data.y == 1) & (seeds < 0))[:2]] = 1
    session.add_seeds(np.flatnonzero(more == 1), 1)
    assert calls == {"regional": 1, "graph": 2}  # the second click built neither again
    fresh = create_method("spreading", random_state=0).fit(slide.work_matrix(), more, slide.coords)
    assert fresh.regional_  # the second click took the regional step too, and gave the library's labels
    np.testing.assert_array_equal(session.outcome().labels, fresh.labels_)


def test_a_change_answers_its_server_time(api):
    status, headers, _ = api("POST", "/api/seeds", json.dumps({"class": 0, "indices": [0]}).encode())
    assert status == 200 and headers["server-timing"].startswith("app;dur=")
    assert float(headers["server-timing"].split("=")[1]) > 0


def test_a_class_has_the_colour_every_output_gives_it(tmp_path, local_key):
    """Colours follow the class names through the palette of the CLI's writers, unless chosen or in the seeds file;
    a seeds file loaded first replaces the app's placeholder classes."""
    from sic_share.viz import class_colors, hex_color

    xs = np.arange(64, 64 * 11, 64)
    coords = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2).astype(np.int32)
    emb = np.random.default_rng(0).normal(size=(len(coords), 8)) + (coords[:, 1:] > 320) * 4
    meta = SlideMetadata(ModelInfo("m", 8, "test"), Patching(64, 64, 0.5, 0.5, 64), ())
    write_slide(tmp_path / "d" / "slides" / "a.parquet", slide_id="a", metadata=meta, coords=coords, embeddings=emb)
    slide = open_cached(locate_slide(sign_local(tmp_path / "d", local_key), "a"))
    session = Session(slide)
    assert session.classes == ("background", "lesion")
    palette = lambda *names: tuple(hex_color(c) for c in class_colors(names))  # noqa: E731
    assert session.colors == palette("background", "lesion")
    session.rename_class(0, "Dermis")
    session.rename_class(1, "Epidermis")  # renamed classes take the colours the CLI gives those names
    assert session.colors == palette("Dermis", "Epidermis")
    session.rename_class(1, "Epidermis", "#123456")  # a colour chosen in the page stays
    session.rename_class(0, "background")
    assert session.colors == (palette("background", "x")[0], "#123456")

    fresh = Session(slide)
    text = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [int(x), int(y)]},
         "properties": {"classification": {"name": name, **({"color": [150, 50, 150]} if name == "Epidermis" else {})}}}
        for (x, y), name in ((coords[0], "Epidermis"), (coords[-1], "Dermis"))]})
    fresh.load_seeds(text.encode(), "seeds.geojson")
    assert fresh.classes == ("Dermis", "Epidermis")  # the file's classes, not background/lesion
    assert fresh.colors == (palette("Dermis", "Epidermis")[0], "#963296")
    meta, _ = fresh.response()
    assert meta["n_seeds"] == 2
    fresh.clear_seeds()
    assert fresh.response()[0]["n_seeds"] == 0
    fresh.undo()
    assert fresh.response()[0]["n_seeds"] == 2
    assert fresh.export("csv")[1] == f"a-{fresh.response()[0]['method']}.csv"
