"""Screenshots of ``sic-share app`` for docs/app.md: the pixel-free mode (with and without the confidence
layer) and the --image mode.

Run: ``.venv/bin/python docs/figures/app_screenshots.py`` (needs the app extra, Playwright,
/usr/bin/chromium and OpenSlide). The dataset is made here from the real slide
tests/data/cmu_small_region.svs: per patch, colour statistics of its pixels (mean and
spread of RGB over a 4 x 4 grid of blocks) stand in for a network's embedding, so the
map and the annotation follow real tissue without torch.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SLIDE = REPO / "tests" / "data" / "cmu_small_region.svs"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


def colour_features(path: Path, size: int = 128, stride: int = 64) -> tuple[np.ndarray, np.ndarray]:
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        width, height = slide.dimensions
        image = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB"), np.float32) / 255
    coords, feats = [], []
    for y in range(size // 2, height - size // 2 + 1, stride):
        for x in range(size // 2, width - size // 2 + 1, stride):
            patch = image[y - size // 2 : y + size // 2, x - size // 2 : x + size // 2]
            if patch.mean() > 0.85:  # glass
                continue
            blocks = patch.reshape(4, size // 4, 4, size // 4, 3)
            feats.append(np.concatenate([blocks.mean((1, 3)).ravel(), blocks.std((1, 3)).ravel()]))
            coords.append((x, y))
    return np.array(coords, np.int32), np.array(feats, np.float32)


def main() -> None:
    from playwright.sync_api import sync_playwright

    from sic_share.dataset import ModelInfo, Patching, SlideMetadata, write_slide

    out = REPO / "docs" / "figures"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        coords, feats = colour_features(SLIDE)
        meta = SlideMetadata(ModelInfo("colour-statistics", feats.shape[1], "handcrafted"),
                             Patching(128, 128, 0.5, 0.5, 64), ("Dermis", "Epidermis"), "float32", slide_size=(2220, 2967))
        write_slide(root / "cmu" / "slides" / "cmu.parquet", slide_id="cmu", metadata=meta, coords=coords,
                    embeddings=feats)
        env = {**os.environ, "SIC_SHARE_HOME": str(root / "home"), "PYTHONUNBUFFERED": "1"}
        for name, extra in (("app_pixel_free.png", []), ("app_image.png", ["--image", str(SLIDE)])):
            proc = subprocess.Popen([sys.executable, "-m", "sic_share.cli", "app", str(root / "cmu"), "--port", "0",
                                     "--no-browser", "--unsigned", *extra], stdout=subprocess.PIPE, text=True, env=env)
            url = re.search(r"(http://127\.0\.0\.1:\d+/)", proc.stdout.readline()).group(1)
            try:
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                    page = browser.new_page(viewport={"width": 1400, "height": 820})
                    page.goto(url)
                    page.wait_for_function("sicApp.ready && sicApp.viewerOpen", timeout=60_000)
                    page.wait_for_timeout(1500)
                    # seeds: two on glass-free pale tissue (Dermis), three on the dark epidermis band
                    brightness = feats[:, :48].mean(1)
                    away = (coords[:, 0] < 1600) & (coords[:, 1] < 2200)  # not under the navigator
                    dark = np.flatnonzero(away)[np.argsort(brightness[away])[:3]]
                    pale = np.flatnonzero(away)[np.argsort(-brightness[away])[[0, 40]]]
                    for cls, patches in ((0, pale), (1, dark)):
                        page.locator("#classes li").nth(cls).locator(".name").click()
                        for i in patches:
                            x, y = page.evaluate(f"sicApp.slidePointOf({int(i)})")
                            page.mouse.click(x, y)
                    page.wait_for_function("sicApp.revision >= 5", timeout=60_000)
                    page.wait_for_load_state("networkidle")
                    page.wait_for_timeout(800)
                    x, y = page.evaluate(f"sicApp.scatterPointOf({int(dark[0])})")
                    page.mouse.move(x, y)
                    page.wait_for_timeout(300)
                    page.screenshot(path=str(out / name))
                    print(f"wrote {out / name}")
                    if not extra:  # the confidence layer, its legend and the place to click next
                        page.mouse.move(5, 5)
                        page.check("#show-confidence")
                        page.wait_for_timeout(500)
                        page.screenshot(path=str(out / "app_confidence.png"))
                        print(f"wrote {out / 'app_confidence.png'}")
                    browser.close()
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
