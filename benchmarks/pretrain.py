"""SimCLR pretraining: the whole pipeline against the training step alone, and memory against slide count.

(a) Throughput. A child process runs ``pretrain`` for one epoch (read random
    patches from the slides in DataLoader workers, augment two views each, train)
    and then times the same training step (same model, same batch size, views
    already in memory) in the same process; the two alternate ``--repeat`` times
    (the machine's load changes between runs) and the medians are compared (target
    >= 0.8). The best runs are compared, as timeit does: on a shared machine other
    processes only ever slow a run down; medians are printed too. Both leave out
    their first step (worker start-up and one-off kernel set-up).
(b) Memory. The same run on the real slide copied 1x and Nx into a folder, same
    samples per epoch: peak RSS of the training process and of its largest loader
    worker (target: flat in the number of slides).

Usage: python benchmarks/pretrain.py [--model efficientnet_lite0.in1k] [--batch-size 16] [--steps 4]
       [--repeat 5] [--workers N] [--copies 1,8] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLIDE = REPO / "tests" / "data" / "cmu_small_region.svs"

_CHILD = r"""
import json, resource, statistics, sys, time
from pathlib import Path
import torch
from sic_share.pretrain import PretrainOptions, pretrain
from sic_share.pretrain._data import SlidePatches, PatchSampler, TwoViews
from sic_share.pretrain._train import SimCLRTrainer, _create_backbone, _plan

folder, out, model, batch, steps, workers, device, repeat, with_step = sys.argv[1:10]
batch, steps, workers, repeat, with_step = int(batch), int(steps), int(workers), int(repeat), with_step == "1"
options = PretrainOptions(model=model, epochs=1, batch_size=batch, max_patches=batch * steps, workers=workers,
                          device=device)

def pipeline(path):
    marks = []
    def progress(state):
        if state.stage == "training":
            marks.append(time.perf_counter())
    report = pretrain([folder], path, options, progress=progress)
    return report, (len(marks) - 1) * batch / (marks[-1] - marks[0])

trainer = None
def step_only():
    # the same step on one batch of real views already in memory
    global trainer, view0, view1
    if trainer is None:
        encoder = _create_backbone(options, random_init=False, device=device)
        trainer = SimCLRTrainer(encoder, options, total_steps=repeat * steps + 1)
        trainer.train()
        sources, coords, offsets, _, _ = _plan(sorted(Path(folder).iterdir()), options, None)
        data = SlidePatches(sources, coords, offsets, TwoViews(encoder.input_size, options.augmentations))
        pairs = [data[item] for item, _ in zip(PatchSampler(offsets, batch, seed=0), range(batch))]
        view0, view1 = (torch.stack(v) for v in zip(*pairs))
        if device.startswith("cuda"):
            view0, view1 = view0.pin_memory(), view1.pin_memory()
    float(trainer.step(view0, view1))  # warm-up, as the pipeline's first step is left out
    start = time.perf_counter()
    for _ in range(steps - 1):
        loss = trainer.step(view0, view1)
    float(loss)
    return (steps - 1) * batch / (time.perf_counter() - start)

# alternate the two measures: on a shared machine the load changes between runs
pipes, alone = [], []
for r in range(repeat):
    report, rate = pipeline(f"{out}.{r}")
    pipes.append(rate)
    if with_step:
        alone.append(step_only())
result = {
    "slides": report.slides, "whole_epoch": report.samples_per_second, "loader_wait": report.loader_wait_fraction,
    "pipeline": statistics.median(pipes), "pipelines": pipes,
    "step_only": statistics.median(alone) if alone else None, "steps_only": alone,
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork+exec
    "peak_rss": next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")),
    "worker_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
}
print(json.dumps(result))
"""


def run_child(folder: Path, out: Path, args: argparse.Namespace, with_step: bool, env: dict) -> dict:
    repeat = args.repeat if with_step else 1
    cmd = [sys.executable, "-c", _CHILD, str(folder), str(out), args.model, str(args.batch_size), str(args.steps),
           str(args.workers), args.device, str(repeat), "1" if with_step else "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        print(done.stderr[-3000:])
        raise SystemExit(f"the run on {folder.name} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0.in1k")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="training steps per run (one epoch)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    parser.add_argument("--workers", type=int, default=max(1, min(16, cores - 1)))
    parser.add_argument("--copies", default="1,8", help="slide counts for the memory comparison")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5, help="alternating pipeline / step-alone runs (medians)")
    args = parser.parse_args()
    copies = [int(c) for c in args.copies.split(",")]
    import torch

    print(f"load average {os.getloadavg()[0]:.1f}; {cores} cores, torch {torch.__version__}, device {args.device}, "
          f"model {args.model}, batch {args.batch_size} (x2 views), {args.steps} steps, {args.workers} loader "
          "workers; real H&E slide, 256 px patches at 0.5 µm/px")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "SIC_SHARE_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1"}
        folders = {}
        for n in copies:
            folders[n] = tmp / f"slides{n}"
            folders[n].mkdir()
            for i in range(n):
                shutil.copy(SLIDE, folders[n] / f"slide{i:02d}.svs")
        base = run_child(folders[copies[0]], tmp / "speed.pt", args, True, env)
        pipes, alone = base["pipelines"], base["steps_only"]
        print(f"(a) {base['slides']} slide, best of {args.repeat} alternating runs: pipeline {max(pipes):.2f} samples/s "
              f"vs training step alone {max(alone):.2f} samples/s -> {max(pipes) / max(alone):.2f} x (target >= 0.8); "
              f"medians {base['pipeline']:.2f} vs {base['step_only']:.2f} -> {base['pipeline'] / base['step_only']:.2f} x; "
              f"loader wait {base['loader_wait']:.0%}")
        print(f"    runs: pipeline {' '.join(f'{v:.2f}' for v in pipes)}; step alone {' '.join(f'{v:.2f}' for v in alone)}; "
              f"load average now {os.getloadavg()[0]:.1f}")
        # memory: one plain run per folder, nothing else in the process
        results = {n: run_child(folders[n], tmp / f"mem{n}.pt", args, False, env) for n in copies}
        first = results[copies[0]]
        for n in copies:
            r = results[n]
            print(f"(b) {r['slides']:2d} slide(s): peak RSS {r['peak_rss'] / 2**20:6.0f} MiB "
                  f"({r['peak_rss'] / first['peak_rss']:.2f} x), largest worker {r['worker_rss'] / 2**20:6.0f} MiB "
                  f"({r['worker_rss'] / max(first['worker_rss'], 1):.2f} x); pipeline {r['pipeline']:.2f} samples/s")


if __name__ == "__main__":
    main()
