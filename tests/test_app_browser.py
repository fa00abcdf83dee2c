"""The annotation app in a real browser: headless Chromium (Debian's) driven by Playwright.

Each test starts ``sic-share app`` as a user would (a subprocess on a free loopback
port), clicks in the page, and checks what the page shows against the library.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, LITE0, LOCAL_PUBLISHER, REPO, make_dataset, sign_local
from sic_share.dataset import ModelInfo, Patching, SlideMetadata, write_slide
from sic_share.signing import TrustStore

CHROMIUM = "/usr/bin/chromium"
DEMO_SEEDS = REPO / "demo" / "cmu_seeds.geojson"
pytest.importorskip("starlette")
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

# the app verifies a local folder before reading it: folders are signed by a key each test (and app) trusts
pytestmark = pytest.mark.usefixtures("trust_local")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


class App:
    """``sic-share app ...`` running in a subprocess; ``url`` once it listens."""

    def __init__(self, args: list[str], home: Path) -> None:
        env = {**os.environ, "SIC_SHARE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "sic_share.cli", "app", *map(str, args),
                                      "--port", "0", "--no-browser"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"the app did not start: {line!r} {self.proc.stderr.read()}")
        self.url = match.group(1)

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=20)
        return self.proc.returncode, out


def signed_for(home: Path, folder: Path, key) -> Path:
    """Sign ``folder`` with ``key``, trusted in the app's ``home``."""
    TrustStore(home / "config" / "trust.json").add(key.public, LOCAL_PUBLISHER)
    return sign_local(folder, key)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def pixel_free(tmp_path_factory, local_key):
    root = tmp_path_factory.mktemp("app")
    dataset = signed_for(root / "home", make_dataset(root / "crc", slides=2, n=400, dim=16), local_key)
    app = App([dataset, "--slide", "s0"], root / "home")
    yield app, dataset
    code, out = app.stop()
    assert code == 0 and "stopped" in out


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1300, "height": 760}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda r: errors.append(f"left loopback: {r.url}") if not r.url.startswith(
        ("http://127.0.0.1", "data:", "blob:")) else None)
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(url)
    page.wait_for_function("window.sicApp && sicApp.ready && sicApp.viewerOpen", timeout=20_000)
    return page, errors


def wait_revision(page, revision: int) -> None:
    page.wait_for_function(f"sicApp.revision >= {revision} && sicApp.overlayDraws > 0", timeout=20_000)
    page.wait_for_timeout(50)


def click_patch(page, index: int) -> None:
    x, y = page.evaluate(f"sicApp.slidePointOf({index})")
    page.mouse.click(x, y)


def pick_class(page, index: int) -> None:
    page.locator("#classes li").nth(index).locator(".name").click()


def download(page, selector: str, tmp_path: Path) -> Path:
    with page.expect_download() as info:
        page.click(selector)
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    return target


def test_two_then_three_classes_undo_and_export(browser, pixel_free, tmp_path):
    import shapely.geometry

    from sic_share.sic import run_sic

    app, dataset = pixel_free
    page, errors = open_page(browser, app.url)
    truth = np.asarray(__import__("sic_share.dataset", fromlist=["read_slide"]).read_slide(
        dataset / "slides" / "s0.parquet").labels)
    normal, tumour = np.flatnonzero(truth == 0), np.flatnonzero(truth == 1)
    revision = page.evaluate("sicApp.revision")
    # two classes, seeded by clicks on the slide (the embedding map: no pixels)
    for cls, patch in ((0, normal[0]), (0, normal[1]), (1, tumour[0]), (1, tumour[1])):
        pick_class(page, cls)
        click_patch(page, int(patch))
        revision += 1
        wait_revision(page, revision)
    seeds_csv = download(page, "#save-seeds-csv", tmp_path)
    expected = run_sic(dataset, seeds_csv, slide_id="s0", classes=("normal", "tumour"))
    two = page.evaluate("sicApp.overlayCounts()")
    assert two == expected.counts and sum(two.values()) == 400

    # a third class: added in the page, one seed clicked in the scatter, one lassoed on the slide
    page.fill("#new-class", "stroma")
    page.click("#add-class")
    revision += 1
    wait_revision(page, revision)
    page.wait_for_function("document.querySelector('#classes li.current .name').textContent === 'stroma'")
    x, y = page.evaluate(f"sicApp.scatterPointOf({int(tumour[5])})")
    page.mouse.move(x, y)
    assert page.evaluate("!document.querySelector('.hover-mark').hidden")  # linked: the patch shows on the slide
    page.mouse.click(x, y)
    revision += 1
    wait_revision(page, revision)
    page.check("input[name=tool][value=lasso]")
    cx, cy = page.evaluate(f"sicApp.slidePointOf({int(tumour[9])})")
    r = page.evaluate("sicApp.slideCellPixels()") / 3
    page.mouse.move(cx - r, cy - r)
    page.mouse.down()
    for dx, dy in ((r, -r), (r, r), (-r, r), (-r, -r)):
        page.mouse.move(cx + dx, cy + dy, steps=3)
    page.mouse.up()
    revision += 1
    wait_revision(page, revision)
    seeds_csv = download(page, "#save-seeds-csv", tmp_path)
    assert seeds_csv.read_text().count("stroma") == 2
    expected3 = run_sic(dataset, seeds_csv, slide_id="s0", classes=("normal", "tumour", "stroma"))
    three = page.evaluate("sicApp.overlayCounts()")
    assert three == expected3.counts and three["stroma"] > 0

    # undo the two stroma seeds: the two-class annotation is back; redo brings the third class back
    page.click("#undo")
    page.click("#undo")
    wait_revision(page, revision + 2)
    assert page.evaluate("sicApp.overlayCounts()") == {**two, "stroma": 0}
    page.keyboard.press("Control+Shift+Z")
    page.click("#redo")
    wait_revision(page, revision + 4)
    assert page.evaluate("sicApp.overlayCounts()") == three

    # export QuPath GeoJSON through the sic writers: shapely reads every class
    geojson = download(page, "button[data-export=geojson]:not([data-tiles])", tmp_path)
    features = json.loads(geojson.read_text())["features"]
    shapes = {f["properties"]["classification"]["name"]: shapely.geometry.shape(f["geometry"]) for f in features}
    assert set(shapes) == {"normal", "tumour", "stroma"}
    assert all(s.is_valid and s.area > 0 for s in shapes.values())
    assert errors == []
    page.close()


def test_a_click_sends_the_session_token_and_a_change_without_it_changes_nothing(browser, pixel_free, tmp_path):
    app, _ = pixel_free
    page, errors = open_page(browser, app.url)
    token = page.evaluate("document.querySelector('meta[name=sic-token]').content")
    assert len(token) >= 40 and token != "__SIC_TOKEN__"
    revision = page.evaluate("sicApp.revision")
    free = page.evaluate("[...sicApp.seeds.keys()].filter(i => sicApp.seeds[i] === -1).slice(0, 2)")
    with page.expect_response(lambda r: r.url.endswith("/api/seeds")) as answer:
        pick_class(page, 0)
        click_patch(page, free[0])
    wait_revision(page, revision + 1)
    response = answer.value
    assert response.status == 200 and response.request.headers["x-sic-token"] == token
    assert page.evaluate(f"sicApp.seeds[{free[0]}]") == 0  # the click seeded the patch with the first class

    # the same change from the page's own origin, without the token or as text/plain: refused, nothing changes
    status = page.evaluate("""async () => {
        const body = JSON.stringify({op: "add", class: 1, indices: [%d]});
        const a = await fetch("/api/seeds", {method: "POST", headers: {"Content-Type": "application/json"}, body});
        const b = await fetch("/api/seeds", {method: "POST", headers: {"X-Sic-Token": "guess"}, body});
        const c = await fetch("/api/seeds", {method: "POST", body});
        return [a.status, (await a.json()).error, b.status, c.status];
    }""" % free[1])
    assert status[0] == 403 and "session token" in status[1] and status[2:] == [403, 403]
    with page.expect_response(lambda r: r.url.endswith("/api/undo")):
        page.click("#undo")  # the page's own changes still work: back to before the click
    wait_revision(page, revision + 2)
    assert page.evaluate(f"[sicApp.seeds[{free[0]}], sicApp.seeds[{free[1]}]]") == [-1, -1]

    # a seeds file goes as JSON text with the token too: its new class arrives, undo takes it away
    x, y = page.evaluate(f"[sicApp.coords[{2 * free[1]}], sicApp.coords[{2 * free[1]} + 1]]")
    seeds_file = tmp_path / "more.csv"
    seeds_file.write_text(f"x,y,label\n{x},{y},necrosis\n")
    page.set_input_files("#load-seeds", str(seeds_file))
    wait_revision(page, revision + 3)
    assert page.evaluate("sicApp.classes.map(c => c.name)")[-1] == "necrosis"
    page.click("#undo")
    wait_revision(page, revision + 4)
    assert "necrosis" not in page.evaluate("sicApp.classes.map(c => c.name)")
    assert errors == []
    page.close()


@pytest.fixture(scope="module")
def with_image(tmp_path_factory, local_key):
    """A dataset on the grid of the real slide tests/data/cmu_small_region.svs (2220 x 2967 px)."""
    pytest.importorskip("openslide")
    root = tmp_path_factory.mktemp("app-image")
    xs, ys = np.arange(128, 2220 - 127, 128), np.arange(128, 2967 - 127, 128)
    coords = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.int32)
    rng = np.random.default_rng(0)
    truth = (coords[:, 0] > 1100).astype(np.int8)
    emb = rng.normal(0, 1, (len(coords), 16)) + truth[:, None] * 4
    meta = SlideMetadata(ModelInfo("test-model", 16, "test"), Patching(256, 256, 0.5, 0.5, 128), ("normal", "tumour"))
    write_slide(root / "cmu" / "slides" / "c0.parquet", slide_id="c0", metadata=meta, coords=coords,
                embeddings=emb, labels=truth)
    app = App([signed_for(root / "home", root / "cmu", local_key), "--image", DATA / "cmu_small_region.svs"],
              root / "home")
    yield app, truth
    code, _ = app.stop()
    assert code == 0


def test_image_mode_shows_real_tiles_under_the_annotation(browser, with_image):
    import urllib.request

    app, truth = with_image
    dzi = urllib.request.urlopen(f"{app.url}/tiles/slide.dzi").read().decode()
    assert 'Width="2220"' in dzi and 'Height="2967"' in dzi
    page, errors = open_page(browser, app.url)
    page.wait_for_function("sicApp.tilesLoaded > 0", timeout=20_000)
    assert page.locator(".displayregion").count() == 1  # with an image the navigator shows it
    tiles = [r for r in page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
             if "/tiles/slide_files/" in r]
    assert tiles
    body = urllib.request.urlopen(tiles[0]).read()
    assert body[:3] == b"\xff\xd8\xff"
    from PIL import Image
    import io

    assert Image.open(io.BytesIO(body)).format == "JPEG"
    revision = page.evaluate("sicApp.revision")
    for cls, patch in ((0, np.flatnonzero(truth == 0)[3]), (1, np.flatnonzero(truth == 1)[3])):
        pick_class(page, cls)
        click_patch(page, int(patch))
        revision += 1
        wait_revision(page, revision)
    counts = page.evaluate("sicApp.overlayCounts()")
    assert counts == {"normal": int((truth == 0).sum()), "tumour": int((truth == 1).sum())}
    assert errors == []
    page.close()


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory, local_key, real_cmu):
    """The app on the demo's dataset: the real slide embedded by EfficientNet-Lite0 (137 patches x 1280),
    exported once per test session (conftest's ``real_cmu``), opened as a new user opens it."""
    home = tmp_path_factory.mktemp("app-demo") / "home"
    TrustStore(home / "config" / "trust.json").add(local_key.public, LOCAL_PUBLISHER)
    dataset = real_cmu[LITE0]
    app = App([dataset], home)
    yield app, dataset, home
    code, _ = app.stop()
    assert code == 0


def run_cli(home: Path, *args) -> str:
    env = {**os.environ, "SIC_SHARE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "sic_share.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def class_rgb(page) -> dict[str, tuple[int, int, int]]:
    return {c["name"]: tuple(c["rgb"]) for c in page.evaluate("sicApp.classes")}


def demo_seeds() -> list[tuple[str, int, int]]:
    """The demo's six clicks (demo/cmu_seeds.geojson, as QuPath exports them): (class, x, y) in level-0 pixels."""
    features = json.loads(DEMO_SEEDS.read_text())["features"]
    return [(f["properties"]["classification"]["name"], *f["geometry"]["coordinates"]) for f in features]


def png_colours(path: Path) -> set[tuple[int, int, int]]:
    """The colours of the part of a PNG that lies over the slide (not its legend band)."""
    from PIL import Image

    image = Image.open(path)
    top = int(image.text["overlay_height"])
    pixels = np.asarray(image.convert("RGBA"))[:top].reshape(-1, 4)
    return {tuple(int(v) for v in p[:3]) for p in np.unique(pixels[pixels[:, 3] == 255], axis=0)}


def test_first_use_loop_on_the_demos_dataset_with_real_mouse_events(browser, demo_app, tmp_path):
    """Open, rename, pick a class, click the demo's six seeds, read where to click next, undo, export: on the real
    slide's Lite0 embeddings, with the counts, the least certain places and the colours of 'sic-share sic'."""
    from sic_share.dataset import read_slide, slide_files

    app, dataset, home = demo_app
    coords = read_slide(slide_files(dataset)[0]).coords.astype(np.int64)
    page, errors = open_page(browser, app.url)
    # the dataset's classes, a first-use line, the keys listed; no image: no navigator box, no map switch
    assert page.locator("#classes li .name").all_text_contents() == ["other", "epidermis"]
    assert "Pick a class" in page.text_content("#hint") and "click the tissue" in page.text_content("#hint")
    assert "Ctrl" in page.text_content("#shortcuts") and "double-click" in page.text_content("#shortcuts")
    assert page.locator("#message").text_content() == ""
    assert not page.locator("#show-map").is_visible() and not page.locator("#map-toggle").is_visible()
    assert page.locator(".displayregion").count() == 0  # OpenSeadragon's navigator would be an empty dark box
    assert "the counts are those of 'sic-share sic'" in page.text_content("#about-counts")

    # rename both classes by a real double-click on the name
    revision = page.evaluate("sicApp.revision")
    for index, name in ((0, "Dermis"), (1, "Epidermis")):
        page.locator("#classes li").nth(index).locator(".name").dblclick()
        editor = page.locator("#classes input.rename")
        editor.wait_for(timeout=5_000)
        editor.fill(name)
        editor.press("Enter")
        revision += 1
        wait_revision(page, revision)
    assert page.locator("#classes li .name").all_text_contents() == ["Dermis", "Epidermis"]

    # pick a class, click the tissue: the demo's six seeds, each on the patch whose centre is nearest
    names = ["Dermis", "Epidermis"]
    clicked = []
    for name, x, y in demo_seeds():
        patch = int(np.argmin(((coords - (x, y)) ** 2).sum(axis=1)))
        pick_class(page, names.index(name))
        click_patch(page, patch)
        revision += 1
        wait_revision(page, revision)
        clicked.append((patch, names.index(name)))
    assert page.evaluate(f"[{', '.join(f'sicApp.seeds[{p}]' for p, _ in clicked)}]") == [c for _, c in clicked]

    # the CLI with the demo's own seeds file: the same counts (the app clusters the 1280-d embeddings of a
    # slide this small, as sic does), and the least certain place the hint names and the dashed box marks
    out = tmp_path / "cli"
    out.mkdir()
    report = json.loads(run_cli(home, "sic", dataset, "--seeds", DEMO_SEEDS, "--classes", "Dermis,Epidermis", "--out",
                                out / "qupath.png", "--json"))
    counts = page.evaluate("sicApp.overlayCounts()")
    assert counts == report["counts"] and sum(counts.values()) == 137
    assert {c["name"]: c["count"] for c in page.evaluate("sicApp.classes")} == counts
    first = report["least_certain"]["regions"][0]
    assert page.evaluate("sicApp.least.regions") == report["least_certain"]["regions"]
    hint = page.text_content("#hint")
    assert f"the ringed one is at x={first['x']}, y={first['y']}" in hint and "%" not in hint
    box, ring = page.locator(".next-mark").bounding_box(), page.locator(".next-spot").bounding_box()
    px, py = page.evaluate(f"sicApp.slidePointOf({first['patch']})")
    assert box["x"] <= px <= box["x"] + box["width"] and box["y"] <= py <= box["y"] + box["height"]
    assert abs(ring["x"] + ring["width"] / 2 - px) < 2 and abs(ring["y"] + ring["height"] / 2 - py) < 2

    # the confidence layer: the least certain fifth in yellow, a legend with its numbers; clear elsewhere
    page.check("#show-confidence")
    legend = page.text_content("#confidence-legend")
    assert "least certain 5% (7 patches): confidence" in legend and "toss-up" in legend
    assert page.evaluate(f"sicApp.layerPixel('confidence', {first['patch']})")[:3] == [255, 214, 0]
    marked = page.evaluate("[...Array(sicApp.n).keys()].filter((i) => sicApp.layerPixel('confidence', i)[3] > 0)")
    assert len(marked) == sum(report["least_certain"]["counts"]) <= 0.21 * 137  # not "almost entirely dark"
    page.click("#show-next")  # zooms to the box: larger, in the middle of the view
    page.wait_for_timeout(1200)
    zoomed, view = page.locator(".next-mark").bounding_box(), page.locator("#slide").bounding_box()
    assert zoomed["width"] > 1.3 * box["width"]
    assert abs(zoomed["x"] + zoomed["width"] / 2 - (view["x"] + view["width"] / 2)) < 0.1 * view["width"]

    # undo the last click (Ctrl+Z), redo it
    page.keyboard.press("Control+z")
    wait_revision(page, revision + 1)
    assert page.evaluate(f"sicApp.seeds[{clicked[-1][0]}]") == -1
    page.keyboard.press("Control+Shift+Z")
    wait_revision(page, revision + 2)
    revision += 2
    assert page.evaluate("sicApp.overlayCounts()") == counts

    # export from the page (named by the method) and the same seeds through the CLI: one colour per class
    colours = class_rgb(page)
    assert len(set(colours.values())) == 2
    method = page.evaluate("sicApp.info.methods[0].name")
    exported = download(page, "button[data-export=png]", tmp_path)
    assert exported.name == f"{page.evaluate('sicApp.info.slide_id')}-{method}.png"
    geojson = download(page, "button[data-export=geojson]:not([data-tiles])", tmp_path)
    seeds_csv = download(page, "#save-seeds-csv", tmp_path)
    run_cli(home, "sic", dataset, "--seeds", seeds_csv, "--classes", "Dermis,Epidermis", "--out", out / "k.png",
            "--out", out / "k.geojson", "--out", out / "k.tissuumaps.csv")
    assert png_colours(exported) == png_colours(out / "k.png") == set(colours.values())
    for path in (geojson, out / "k.geojson"):
        drawn = {f["properties"]["classification"]["name"]: tuple(f["properties"]["classification"]["color"])
                 for f in json.loads(path.read_text())["features"]}
        assert drawn == colours, path
    rows = (out / "k.tissuumaps.csv").read_text().splitlines()
    header = rows[0].split(",")
    tissuumaps = {r.split(",")[header.index("class")]: r.split(",")[header.index("color")] for r in rows[1:]}
    assert tissuumaps == {n: "#%02x%02x%02x" % c for n, c in colours.items()}
    assert tuple(page.evaluate(f"sicApp.layerPixel('overlay', {clicked[0][0]})")[:3]) == colours[demo_seeds()[0][0]]

    # the demo's QuPath seeds file, loaded in the page: its colours, which the CLI's PNG of that file has too
    page.set_input_files("#load-seeds", str(DEMO_SEEDS))
    revision += 1
    wait_revision(page, revision)
    qupath = {f["properties"]["classification"]["name"]: tuple(f["properties"]["classification"]["color"])
              for f in json.loads(DEMO_SEEDS.read_text())["features"]}
    assert class_rgb(page) == qupath and page.evaluate("sicApp.overlayCounts()") == counts
    assert png_colours(out / "qupath.png") == set(qupath.values())
    assert png_colours(download(page, "button[data-export=png]", tmp_path)) == set(qupath.values())

    # clear all seeds (one undo step); a reload says the session was kept
    page.click("#clear-seeds")
    revision += 1
    wait_revision(page, revision)
    assert page.evaluate("[...sicApp.seeds].every((c) => c === -1)") and "Pick a class" in page.text_content("#hint")
    assert page.locator(".next-mark").is_hidden()
    page.click("#undo")
    wait_revision(page, revision + 1)
    page.reload()
    page.wait_for_function("window.sicApp && sicApp.ready && sicApp.viewerOpen", timeout=20_000)
    assert "Session restored: 6 seeds" in page.text_content("#hint")
    assert errors == []
    page.close()
