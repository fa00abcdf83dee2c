"""Synthetic embeddings on the patch grid of tests/data/cmu_small_region.svs.

Until the exporter lands (issue 3), the demo cannot embed the real slide, so it
builds what an exporter would write for it: patch centres on the paper's grid
(256 px at 0.5 µm/px, stride 128) over the slide's 2220 x 2967 px, and 64-d
ReLU features of low rank plus noise, with a round "lesion" whose patches come
from a shifted distribution and carry label 1.

Usage: python demo/make_embeddings.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 2220, 2967  # level-0 size of cmu_small_region.svs
PATCH, STRIDE, DIM, RANK = 256, 128, 64, 8


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    xs = np.arange(PATCH // 2, WIDTH - PATCH // 2 + 1, STRIDE)
    ys = np.arange(PATCH // 2, HEIGHT - PATCH // 2 + 1, STRIDE)
    gx, gy = np.meshgrid(xs, ys)
    coords = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.int32)
    lesion = np.hypot(coords[:, 0] - 1300, coords[:, 1] - 1200) < 500
    basis = rng.standard_normal((RANK, DIM))
    latent = rng.standard_normal((len(coords), RANK)) + np.where(lesion[:, None], 2.0, 0.0)
    features = np.maximum(latent @ basis + 0.5 * rng.standard_normal((len(coords), DIM)), 0).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / "cmu_small_region"
    np.save(f"{stem}.coords.npy", coords)
    np.save(f"{stem}.features.npy", features)
    np.save(f"{stem}.labels.npy", lesion.astype(np.int64))
    print(f"wrote {len(coords)} patches ({int(lesion.sum())} in the lesion) to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
