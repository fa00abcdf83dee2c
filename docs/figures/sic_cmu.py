"""Draw docs/figures/sic_cmu.png: the real slide, its seeds, and SIC under both rules.

Run after `make demo` (it reads build/demo/pulled): .venv/bin/python docs/figures/sic_cmu.py
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import openslide  # noqa: E402

from sic_share.sic import run_sic  # noqa: E402
from sic_share.viz import render_overlay  # noqa: E402

DATASET, SEEDS = "build/demo/pulled", "demo/cmu_seeds.geojson"
slide = openslide.OpenSlide("tests/data/cmu_small_region.svs")
W, H = slide.dimensions
thumb = slide.get_thumbnail((W // 4, H // 4))
colours = {"Epidermis": "#0072B2", "Dermis": "#D55E00"}
fig, axes = plt.subplots(1, 3, figsize=(12, 5.6))
axes[0].imshow(thumb, extent=(0, W, H, 0))
axes[0].set_title("the slide (stays in the hospital), 6 seeds", fontsize=9)
for ax, rule, title in [(axes[1], "paper", "SIC, --rule paper"), (axes[2], "structure", "SIC, --rule structure (default)")]:
    r = run_sic(DATASET, SEEDS, classes=("Dermis", "Epidermis"), rule=rule)
    overlay = render_overlay(coords=r.slide.coords, labels=r.labels, classes=r.classes, patch_size=r.patch_size,
                             max_side=max(W, H), slide_size=(W, H))
    ax.imshow(thumb, extent=(0, W, H, 0))
    ax.imshow(overlay, extent=(0, W, H, 0), alpha=0.55)
    ax.set_title(f"{title}: " + ", ".join(f"{k} {v}" for k, v in r.counts.items()), fontsize=9)
for ax in axes:
    for feature in json.load(open(SEEDS))["features"]:
        x, y = feature["geometry"]["coordinates"]
        ax.plot(x, y, marker="o", ms=8, mfc=colours[feature["properties"]["classification"]["name"]], mec="white", mew=1.5)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("cmu_small_region.svs, handcrafted 40-d embeddings, 137 patches: orange = Dermis, blue = Epidermis",
             fontsize=10)
fig.tight_layout()
fig.savefig("docs/figures/sic_cmu.png", dpi=80)
