"""Benchmark of ``sic-share app``: click to overlay, start to first view, warm re-reads.

Run: ``.venv/bin/python benchmarks/app.py [--sizes 100000,1000000] [--dim 1024]``

For each size: a synthetic float16 slide (Gaussian clusters on a square patch grid), then

- warm re-read of the embedding matrix from the app's cache (memory map, every page
  touched) against ``numpy.load`` of the same matrix, and the Parquet read it replaces;
- click to overlay, server side: one seed added, the method re-run on the cached
  working matrix and the page's answer made (``Session.add_seeds`` + ``response``: labels,
  counts, the confidence tiers and the places to seed next), p50/p95 over 30 clicks;
- at sizes with a Parquet file (``--browser-max``): app start (warm cache) to the first
  interactive view in headless Chromium, and click to overlay end to end (mouse click
  on the slide to the redrawn overlay, the page's own measure), p95 over 20 clicks.

Every number is printed with the baseline measured in the same run. Needs the
``app`` extra, Playwright and /usr/bin/chromium for the browser part.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sic_share.app import Session, locate_slide, open_cached
from sic_share.app._slide import CachedSlide
from sic_share.dataset import ModelInfo, Patching, SlideMetadata, read_slide, write_slide

CHROMIUM = "/usr/bin/chromium"


def synthetic(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
    # three tissues in bands, a lesion disc in the middle
    truth = np.minimum(grid[:, 0] * 3 // side, 2)
    lesion = ((grid - side / 2) ** 2).sum(1) < (side / 6) ** 2
    truth[lesion] = 3
    centres = rng.normal(0, 1.5, (4, dim)).astype(np.float32)
    emb = np.empty((n, dim), np.float16)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        emb[start:stop] = centres[truth[start:stop]] + rng.standard_normal((stop - start, dim), np.float32)
    return (grid * 128 + 128).astype(np.int32), emb, truth.astype(np.int8)


def p(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def server_clicks(session: Session, truth: np.ndarray, clicks: int, method: str) -> list[float]:
    session.set_method(method)
    rng = np.random.default_rng(1)
    seeds = {c: np.flatnonzero(truth == c) for c in (0, 3)}
    session.add_seeds(rng.choice(seeds[0], 2), 0)
    session.add_seeds(rng.choice(seeds[3], 2), 1)
    times = []
    for i in range(clicks):
        c = (0, 3)[i % 2]
        t = time.perf_counter()
        session.add_seeds([int(rng.choice(seeds[c]))], 0 if c == 0 else 1)
        session.response()  # what the server sends: labels, counts, the confidence tiers and places to seed next
        times.append(time.perf_counter() - t)
    return times


def browser_part(dataset: Path, home: Path, truth: np.ndarray, clicks: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "SIC_SHARE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "sic_share.cli", "app", str(dataset), "--port", "0", "--no-browser"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 760})
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = proc.stdout.readline()
            url = re.search(r"(http://127\.0\.0\.1:\d+/)", line).group(1)
            t_listen = time.perf_counter() - t0
            page.goto(url)
            page.wait_for_function("window.sicApp && sicApp.ready && sicApp.viewerOpen", timeout=120_000, polling=20)
            t_view = time.perf_counter() - t0
            rng = np.random.default_rng(2)
            latencies, stages = [], []
            revision = page.evaluate("sicApp.revision")
            # distinct patches (a repeated seed changes nothing), none under the navigator (bottom right)
            side = int(np.ceil(np.sqrt(len(truth))))
            grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:len(truth)]
            free = ~((grid[:, 0] > 0.6 * side) & (grid[:, 1] > 0.6 * side))
            pools = {c: iter(rng.permutation(np.flatnonzero((truth == c) & free))) for c in (0, 3)}
            for i in range(clicks + 4):
                cls = i % 2
                patch = int(next(pools[0 if cls == 0 else 3]))
                page.locator("#classes li").nth(cls).locator(".name").click()
                x, y = page.evaluate(f"sicApp.slidePointOf({patch})")
                page.mouse.click(x, y)
                revision += 1
                page.wait_for_function(f"sicApp.revision >= {revision}", timeout=60_000, polling=50)
                page.wait_for_timeout(30)
                if i >= 4:  # the first four make both classes seeded
                    latencies.append(page.evaluate("sicApp.lastLatency") / 1000)
                    stages.append(page.evaluate("({...sicApp.timings, server: sicApp.lastServer * 1000})"))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
            browser.close()
    breakdown = {k: float(np.median([s[k] for s in stages if k in s])) for k in stages[0]} if stages else {}
    return {"listen": t_listen, "view": t_view, "p50": p(latencies, 50), "p95": p(latencies, 95),
            "stages": breakdown}


def run(n: int, dim: int, browser_max: int, root: Path) -> None:
    print(f"\n== {n:,} patches x {dim} (float16) ==")
    coords, emb, truth = synthetic(n, dim)
    home = root / f"home-{n}"
    cache = home / "cache"
    os.environ["SIC_SHARE_HOME"] = str(home)
    raw = root / f"raw-{n}.npy"
    np.save(raw, emb)
    meta = SlideMetadata(ModelInfo("synthetic", dim, "test"), Patching(256, 256, 0.5, 0.5, 128),
                         ("a", "b", "c", "lesion"), "float16")
    with_parquet = n <= browser_max
    if with_parquet:
        dataset = root / f"ds-{n}"
        t = time.perf_counter()
        write_slide(dataset / "slides" / "s0.parquet", slide_id="s0", metadata=meta, coords=coords, embeddings=emb,
                    labels=truth)
        print(f"  (dataset written in {time.perf_counter() - t:.1f} s)")
        from sic_share.signing import TrustStore, generate_key, sign_dataset

        # signed by a key this benchmark's home trusts: the app verifies a local folder (one sha256) on start
        private, public, _ = generate_key("bench", out_dir=home / "keys")
        TrustStore().add(public, "bench")
        sign_dataset(dataset, name="bench", key_path=private)
        located = locate_slide(dataset, "s0")
        t_parquet = best(lambda: read_slide(located.path, dtype=np.float16), 3)
        t = time.perf_counter()
        slide = open_cached(located)
        t_cold = time.perf_counter() - t
        print(f"cold decode into the cache (Parquet -> .npy): {t_cold:.2f} s")
    else:  # a million rows: the cache folder made directly (a 2 GB Parquet file is not the point here)
        folder = cache / "sha256" / "00" / ".bench.app"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "coords.npy", coords)
        np.save(folder / "truth.npy", truth)
        os.link(raw, folder / "embeddings.npy") if not (folder / "embeddings.npy").exists() else None
        (folder / "slide.json").write_text(json.dumps({"version": 1, "slide_id": "s0",
                                                       "metadata": meta.to_json().decode()}))
        slide = CachedSlide(folder, "bench", "synthetic")
        t_parquet = None

    t_np = best(lambda: np.load(raw).sum(dtype=np.float32), 3)
    t_warm = best(lambda: np.asarray(open_cached(located).embeddings if with_parquet else
                                     CachedSlide(slide.folder, "bench", "x").embeddings).sum(dtype=np.float32), 3)
    print(f"warm re-read (open + every value read): {t_warm:.3f} s = {t_warm / t_np:.2f} x numpy.load of the "
          f"same matrix ({t_np:.3f} s; target <= 2 x)")
    if t_parquet is not None:
        print(f"  the Parquet read it replaces: {t_parquet:.3f} s = {t_parquet / t_np:.2f} x numpy.load")

    t = time.perf_counter()
    session = Session(slide)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    Session(slide)
    t_again = time.perf_counter() - t
    print(f"per-slide work (working matrix {session._X.shape[1]}-d): first {t_first:.2f} s, cached {t_again:.3f} s")
    from sic_share.app._server import Views

    t = time.perf_counter()
    views = Views(slide, "pca")
    views.map_png()
    t_views = time.perf_counter() - t
    t = time.perf_counter()
    views = Views(slide, "pca")
    views.map_png()
    print(f"map colours, scatter layout (PCA) and map PNG: first {t_views:.2f} s, cached {time.perf_counter() - t:.2f} s")

    budget = 0.1 if n <= 100_000 else 1.0
    session = Session(slide)
    t = time.perf_counter()
    server_clicks(session, truth, 0, "spreading")  # the first fit builds the slide's spreading graph, once
    print(f"first fit of spreading on the slide (builds its anchor graph, kept for the session): "
          f"{time.perf_counter() - t:.2f} s")
    for method, count in (("spreading", 30), ("sic", 10)):
        times = server_clicks(session if method == "spreading" else Session(slide), truth, count, method)
        print(f"click to overlay, server, {method}: p50 {p(times, 50) * 1000:.0f} ms, p95 {p(times, 95) * 1000:.0f} ms "
              f"(target < {budget * 1000:.0f} ms) = {p(times, 95) / t_np:.2f} x numpy.load of the matrix")
    if with_parquet and Path(CHROMIUM).exists():
        got = browser_part(root / f"ds-{n}", home, truth, 20)
        start_target = "target < 3 s" if n <= 100_000 else "the issue sets no start target at this size"
        print(f"app start (warm cache) to listening {got['listen']:.2f} s, to first interactive view in Chromium "
              f"{got['view']:.2f} s ({start_target}) = {got['view'] / t_np:.1f} x numpy.load of the matrix")
        print(f"click to overlay, end to end in Chromium (spreading, the default): p50 {got['p50'] * 1000:.0f} ms, "
              f"p95 {got['p95'] * 1000:.0f} ms (target < {250 if n <= 100_000 else 1000} ms)")
        print("  median per stage (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in got["stages"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--browser-max", type=int, default=100_000,
                        help="largest size written as Parquet and timed in the browser")
    args = parser.parse_args()
    print(f"sic-share app benchmark: {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="sic-app-bench-") as tmp:
        for n in (int(v) for v in args.sizes.split(",")):
            run(n, args.dim, args.browser_max, Path(tmp))


if __name__ == "__main__":
    main()
