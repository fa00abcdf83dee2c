"""Publish with hub layout 1.1 against the protocol it replaced, in one run, on a local and an S3 hub.

Today's ``publish`` checks the folder (signature with the key the manifest names, expiry,
per-block digests in one pass that also yields the ``.blocks`` sidecars) and uploads under
``<version>/<sha256 of manifest.json>/`` with no symbolic link followed. The baseline is the
protocol before issue 19, run here inline: one sha256 pass per file, ``put_file`` of each file
under fixed names, ``manifest.json``, then the envelope created exclusively. Both publish the
same signed folder under fresh dataset names; best of ``--repeat``, alternating.

Target (issue 19): publish time <= 1.05 x the baseline.

Usage: python benchmarks/publish.py [--slides 8] [--patches 20000] [--dim 384] [--repeat 5] [--s3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from format import embeddings, grid  # noqa: E402  (the realistic embeddings of the format benchmark)


def make_folder(root: Path, slides: int, patches: int, dim: int, key: Path) -> Path:
    from sic_share.dataset import ModelInfo, Patching, SlideMetadata, write_slide
    from sic_share.signing import sign_dataset

    meta = SlideMetadata(
        model=ModelInfo(id="bench-model", dim=dim, source="benchmark"),
        patching=Patching(size_px=256, level0_size_px=256, level0_mpp=0.5, target_mpp=0.5, stride_px=128),
    )
    coords = grid(patches)
    for s in range(slides):
        write_slide(root / "slides" / f"s{s:02d}.parquet", slide_id=f"s{s:02d}", metadata=meta, coords=coords,
                    embeddings=embeddings(patches, dim, seed=s))
    sign_dataset(root, name="bench", key_path=key)
    return root


def old_publish(folder: Path, hub: str, name: str) -> None:
    """The protocol before hub layout 1.1: fixed names, data overwritten, envelope exclusive."""
    from sic_share._fsutil import is_local, join
    from sic_share.hub._hub import _create_exclusive, _open_hub
    from sic_share.signing import ENVELOPE, MANIFEST, parse_manifest, sha256_file

    manifest = parse_manifest((folder / MANIFEST).read_bytes(), "bench")
    for fname, (_, digest) in manifest.files.items():
        assert sha256_file(folder / fname) == digest
    fs, base, _ = _open_hub(hub, reading=False)
    dest = join(base, manifest.publisher, name, str(manifest.version))
    for fname in sorted(manifest.files):
        target = join(dest, fname)
        if is_local(fs):
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(folder / fname), target)
    fs.pipe_file(join(dest, MANIFEST), (folder / MANIFEST).read_bytes())
    _create_exclusive(fs, join(dest, ENVELOPE), (folder / ENVELOPE).read_bytes())


def new_publish(folder: Path, hub: str, name: str) -> None:
    """Today's publish of the same folder signed under ``name`` (signing is outside the timing)."""
    from sic_share.hub import publish

    publish(folder, hub)


def measure(folder: Path, hub: str, repeat: int, key: Path) -> tuple[float, float]:
    from sic_share.signing import sign_dataset

    times: dict[str, list[float]] = {"old": [], "new": []}
    for i in range(repeat):
        for label, run in (("old", old_publish), ("new", new_publish)):
            name = f"{label}{i}-{os.getpid()}"
            sign_dataset(folder, name=name, key_path=key, version=1)
            start = time.perf_counter()
            run(folder, hub, name)
            times[label].append(time.perf_counter() - start)
    return min(times["old"]), min(times["new"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=8)
    parser.add_argument("--patches", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--s3", action="store_true", help="also on the moto S3 dev hub (loopback)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["SIC_SHARE_HOME"] = str(tmp_path / "home")
        from sic_share.signing import generate_key

        key, _, _ = generate_key("lab-a", out_dir=tmp_path / "keys")
        folder = make_folder(tmp_path / "ds", args.slides, args.patches, args.dim, key)
        size = sum(p.stat().st_size for p in (folder / "slides").iterdir())
        print(f"{args.slides} slides x {args.patches} patches x {args.dim} float16: {size / 2**20:.1f} MiB")
        hubs = [("local folder", str(tmp_path / "hub"))]
        server = None
        if args.s3:
            sys.path.insert(0, str(REPO / "hub"))
            from dev_server import start_dev_hub

            server, endpoint, credentials = start_dev_hub(["lab-a"])
            os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-east-1")
            os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = credentials["lab-a"]
            hubs.append(("moto S3", "s3://sic-hub"))
        try:
            for label, hub in hubs:
                old, new = measure(folder, hub, args.repeat, key)
                ratio = new / old
                print(f"publish to a {label}: layout 1.1 {new:.3f} s, before {old:.3f} s (best of {args.repeat}): "
                      f"ratio {ratio:.2f} x (target <= 1.05 x: {'met' if ratio <= 1.05 else 'MISSED'})")
        finally:
            if server is not None:
                server.stop()
            shutil.rmtree(tmp_path / "hub", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
