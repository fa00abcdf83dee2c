"""Draw docs/figures/sic_cmu.png: the real slide and its seeds, SIC's result, and the approximate truth.

Run from the repository root: .venv/bin/python docs/figures/sic_cmu.py
(It exports the slide with EfficientNet-Lite0's ImageNet features — the imagenet extra — and the
epidermis mask into build/figures; pass another --model name as the first argument to compare.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import openslide  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

from sic_share.sic import run_sic  # noqa: E402
from sic_share.viz import render_overlay  # noqa: E402

OUT, SEEDS = "build/figures/cmu", "demo/cmu_seeds.geojson"
MODEL = sys.argv[1] if len(sys.argv) > 1 else "efficientnet_lite0.in1k"
shutil.rmtree(OUT, ignore_errors=True)
env = dict(os.environ, SIC_SHARE_HOME="build/figures/home")
subprocess.run(["sic-share", "export", "tests/data/cmu_small_region.svs", "--out", OUT, "--model", MODEL,
                "--no-sign", "--masks", "tests/data/cmu_small_region_epidermis.png", "--classes", "Dermis,Epidermis"],
               check=True, env=env, capture_output=True)
slide = openslide.OpenSlide("tests/data/cmu_small_region.svs")
W, H = slide.dimensions
thumb = slide.get_thumbnail((W // 4, H // 4))
colours = {"Epidermis": "#0072B2", "Dermis": "#D55E00"}
runs = {"spreading (default)": dict(method="spreading"), "sic": dict(method="sic"),
        "sic --rule paper": dict(method="sic", rule="paper")}
results = {name: run_sic(OUT, SEEDS, **kwargs) for name, kwargs in runs.items()}
r = results["spreading (default)"]
truth = r.slide.labels
scores = {name: f1_score(truth[truth >= 0], res.labels[truth >= 0]) for name, res in results.items()}
f1 = scores["spreading (default)"]
panels = [("the slide (stays in the hospital) and 6 seeds", None),
          (f"default method: {', '.join(f'{k} {v}' for k, v in r.counts.items())} (SIC: F1 {scores['sic']:.2f})",
           r.labels),
          (f"approximate truth (epidermis mask): F1 {f1:.2f}", truth)]
fig, axes = plt.subplots(1, 3, figsize=(12, 5.6))
for ax, (title, labels) in zip(axes, panels):
    ax.imshow(thumb, extent=(0, W, H, 0))
    if labels is not None:
        overlay = render_overlay(coords=r.slide.coords, labels=labels, classes=r.classes, patch_size=r.patch_size,
                                 max_side=max(W, H), slide_size=(W, H))
        ax.imshow(overlay, extent=(0, W, H, 0), alpha=0.55)
    ax.set_title(title, fontsize=9)
    for feature in json.load(open(SEEDS))["features"]:
        x, y = feature["geometry"]["coordinates"]
        ax.plot(x, y, marker="o", ms=8, mfc=colours[feature["properties"]["classification"]["name"]], mec="white",
                mew=1.5)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(f"cmu_small_region.svs, {MODEL} {r.slide.embeddings.shape[1]}-d embeddings, {len(r.labels)} patches: "
             "orange = Dermis, blue = Epidermis",
             fontsize=10)
fig.tight_layout()
fig.savefig("docs/figures/sic_cmu.png", dpi=80)
print(f"{MODEL}: F1 against the mask: " + ", ".join(f"{name} {score:.3f}" for name, score in scores.items()))
