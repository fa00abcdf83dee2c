"""Format v1 against the obvious baselines, measured in the same run.

For one slide of N x D realistic embeddings (ReLU of low rank plus noise, like a
CNN's pooled features), prints:

- bytes per patch on disk, float16 and float32, against the raw .npy size;
- write and read time against numpy.save / numpy.load of the same matrix;
- peak extra memory of a read, against the size of what it returns;
- sign + verify time against plain sha256 of the same bytes.

Targets (issue 2): float16 file <= 1.05 x raw float16; read within 2 x numpy.load;
verify within 1.3 x hashing alone.

Usage: python benchmarks/format.py [--n 100000] [--dim 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sic_share.dataset import ModelInfo, Patching, SlideMetadata, read_slide, write_slide
from sic_share.signing import TrustStore, VersionRecord, generate_key, sign_dataset, verify_dataset


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def embeddings(n: int, dim: int, rank: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float16)
    basis = rng.standard_normal((rank, dim), dtype=np.float32) * 0.3
    for start in range(0, n, 10000):
        stop = min(n, start + 10000)
        block = rng.standard_normal((stop - start, rank), dtype=np.float32) @ basis
        block += rng.standard_normal(block.shape, dtype=np.float32) * 0.5
        np.maximum(block, 0, out=block)
        out[start:stop] = block
    return out


def grid(n: int) -> np.ndarray:
    side = int(np.ceil(np.sqrt(n)))
    xy = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
    return (xy * 128 + 128).astype(np.int32)


_PEAK = """
import sys, tracemalloc, numpy as np, pyarrow as pa
from sic_share.dataset import read_slide
tracemalloc.start()
s = read_slide(sys.argv[1], dtype=np.dtype(sys.argv[2]))
numpy_peak = tracemalloc.get_traced_memory()[1]
result = s.embeddings.nbytes + s.coords.nbytes + s.tissue.nbytes + s.labels.nbytes
print(numpy_peak + pa.default_memory_pool().max_memory(), result)
"""


def peak_memory(path: Path, dtype: str) -> tuple[int, int]:
    """Peak of numpy (tracemalloc) plus Arrow's pool during a read, in a fresh process.

    The sum of the two peaks bounds the real peak from above.
    """
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path), dtype], capture_output=True, text=True, check=True)
    peak, result = map(int, out.stdout.split())
    return peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, dim, repeat = args.n, args.dim, args.repeat
    x16 = embeddings(n, dim)
    x32 = x16.astype(np.float32)
    coords = grid(n)
    print(f"slide: {n} patches x {dim} dims, ReLU(low rank 32 + noise); best of {repeat}; "
          f"{os.cpu_count()} CPUs; numpy {np.__version__}")

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SIC_SHARE_HOME"] = str(tmp / "home")
        print("\n-- size on disk (bytes per patch) --")
        files = {}
        for dtype, matrix in (("float16", x16), ("float32", x32)):
            meta = SlideMetadata(ModelInfo("bench", dim, "bench"), Patching(256, 256, 0.5, 0.5, 128),
                                 embedding_dtype=dtype)
            root = tmp / dtype
            path = root / "slides" / "s.parquet"
            npy = tmp / f"{dtype}.npy"
            t_save = best_of(repeat, lambda: np.save(npy, matrix))
            t_write = best_of(repeat, lambda: write_slide(path, slide_id="s", metadata=meta, coords=coords,
                                                          embeddings=matrix))
            raw = matrix.nbytes
            size = path.stat().st_size
            files[dtype] = (root, path, npy, t_save, t_write)
            print(f"{dtype}: parquet {size / n:8.1f} B/patch, raw {raw / n:8.1f} B/patch -> "
                  f"{size / raw:.3f} x raw (target {'<= 1.05' if dtype == 'float16' else 'report'})")

        print("\n-- write and read time --")
        for dtype, (root, path, npy, t_save, t_write) in files.items():
            t_load = best_of(repeat, lambda: np.load(npy))
            t_read_same = best_of(repeat, lambda: read_slide(path, dtype=np.dtype(dtype)))
            print(f"{dtype}: write {t_write:.3f} s vs numpy.save {t_save:.3f} s -> {t_write / t_save:.1f} x")
            print(f"{dtype}: read as {dtype} {t_read_same:.3f} s vs numpy.load {t_load:.3f} s -> "
                  f"{t_read_same / t_load:.1f} x (target <= 2)")
            if dtype == "float16":
                t_load32 = best_of(repeat, lambda: np.load(npy).astype(np.float32))
                t_read32 = best_of(repeat, lambda: read_slide(path))
                print(f"float16: read as float32 {t_read32:.3f} s vs numpy.load + astype(float32) "
                      f"{t_load32:.3f} s -> {t_read32 / t_load32:.1f} x")

        print("\n-- memory of a read (fresh process: numpy peak + Arrow pool peak) --")
        for dtype, (_, path, *_rest) in files.items():
            for out_dtype in sorted({"float32", dtype}):
                peak, result = peak_memory(path, out_dtype)
                print(f"{dtype} file read as {out_dtype}: peak {peak / 2**20:.0f} MiB for a "
                      f"{result / 2**20:.0f} MiB result -> {peak / result:.2f} x the result (target < 2)")

        print("\n-- sign and verify --")
        private, public, _ = generate_key("bench", out_dir=tmp / "keys")
        trust = TrustStore(tmp / "trust.json")
        trust.add(public, "bench")
        for dtype, (root, path, *_rest) in files.items():
            data_bytes = path.stat().st_size

            def sha_only() -> None:
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
                digest.hexdigest()

            t_hash = best_of(repeat, sha_only)
            t_sign = best_of(1, lambda: sign_dataset(root, name="bench", key_path=private, version=1))
            t_verify = best_of(repeat, lambda: verify_dataset(root, trust=trust,
                                                              record=VersionRecord(tmp / "v.json")))
            print(f"{dtype}: sha256 alone {t_hash:.3f} s ({data_bytes / t_hash / 2**20:.0f} MiB/s); "
                  f"verify {t_verify:.3f} s -> {t_verify / t_hash:.2f} x (target <= 1.3); "
                  f"sign (includes a full validating read) {t_sign:.3f} s -> {t_sign / t_hash:.1f} x")


if __name__ == "__main__":
    main()
