"""`sic-share export` of plain images (JPEG, PNG, flat TIFF) with --mpp, on real H&E from tests/data.

Neither image carries a resolution (the JPEG's JFIF density is 1:1 without a unit, the
PNG has no pHYs chunk), so every export passes ``--mpp``: 0.5 µm/px for the JPEG (a
plausible guess: its tumour nuclei are 15-17 px across, 7-9 µm at 0.5), 0.25 µm/px for
the PNG (40x; its lymphocyte nuclei are 20-22 px across, 5-6 µm). See tests/data/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import DATA, assert_one_line_error  # noqa: E402
from sic_share.dataset import read_slide, slide_files  # noqa: E402

JPEG = DATA / "stardist_histo.jpg"  # 500 x 300
PNG = DATA / "tiatoolbox_target_image.png"  # 1000 x 1000


def export(cli, image: Path, out: Path, *args: str):
    return cli("export", image, "--out", out, "--model", "handcrafted", "--no-sign", "--workers", "0", *args)


def full_grid(width: int, height: int, mpp: float) -> np.ndarray:
    """Level-0 centres of every 256 px, stride 128 patch at 0.5 µm/px that fits in the image, row-major."""
    size, stride = round(256 * 0.5 / mpp), 128 * 0.5 / mpp
    xs = np.arange(0, width - size + 1, stride) + size // 2
    ys = np.arange(0, height - size + 1, stride) + size // 2
    return np.array([(x, y) for y in ys for x in xs], dtype=np.int32)


def row_major(coords: np.ndarray) -> np.ndarray:
    return coords[np.lexsort((coords[:, 0], coords[:, 1]))]


@pytest.mark.parametrize(
    "image, mpp, size",
    [(JPEG, 0.5, (500, 300)), (PNG, 0.25, (1000, 1000))],
    ids=["jpeg", "png"],
)
def test_plain_image_exports_with_mpp(tmp_path, cli, image, mpp, size):
    out = tmp_path / "ds"
    result = export(cli, image, out, "--mpp", str(mpp))
    assert result.code == 0, result.err
    assert "exported 1 slides" in result.out

    [path] = slide_files(out)
    slide = read_slide(path)
    # Both crops are tissue edge to edge: every grid position that fits is kept, centred inside the image.
    np.testing.assert_array_equal(row_major(slide.coords), full_grid(*size, mpp))
    half = slide.metadata.patching.level0_size_px // 2
    assert (slide.coords >= half).all() and (slide.coords <= np.array(size) - half).all()
    assert slide.metadata.patching.level0_mpp == pytest.approx(mpp)
    assert np.isfinite(slide.embeddings).all() and np.ptp(slide.embeddings, axis=0).max() > 0

    import duckdb

    dim = slide.embeddings.shape[1]
    vector = f"embedding::FLOAT[{dim}]"
    count, x_max, y_max, norm = duckdb.connect().execute(
        f"SELECT count(*), max(x), max(y), min(array_inner_product({vector}, {vector})) "
        f"FROM read_parquet('{out}/slides/*.parquet')"
    ).fetchone()
    assert count == len(slide.coords) and (x_max, y_max) == tuple(slide.coords.max(axis=0))
    assert norm > 0

    audit = cli("audit", out, "--forbid", image.stem)
    assert audit.code == 0, audit.err


def test_flat_tiff_gives_the_same_rows_as_its_png(tmp_path, cli):
    import tifffile
    from PIL import Image

    pixels = np.asarray(Image.open(PNG).convert("RGB"))
    flat = tmp_path / "carcinoma.tif"
    tifffile.imwrite(flat, pixels, photometric="rgb", metadata=None)  # one page, in strips, no pyramid
    with tifffile.TiffFile(flat) as tiff:
        assert len(tiff.pages) == 1 and not tiff.pages[0].is_tiled
        assert tiff.pages[0].tags["ResolutionUnit"].value == 1  # NONE: no physical size
    assert export(cli, flat, tmp_path / "tif", "--mpp", "0.25").code == 0
    assert export(cli, PNG, tmp_path / "png", "--mpp", "0.25").code == 0

    # Same pixels, same grid, same embeddings; only the pseudonym differs (it keys on the file name).
    [tif_file], [png_file] = slide_files(tmp_path / "tif"), slide_files(tmp_path / "png")
    tif_slide, png_slide = read_slide(tif_file), read_slide(png_file)
    assert tif_slide.slide_id != png_slide.slide_id
    tif_order, png_order = (np.lexsort((s.coords[:, 0], s.coords[:, 1])) for s in (tif_slide, png_slide))
    np.testing.assert_array_equal(tif_slide.coords[tif_order], png_slide.coords[png_order])
    np.testing.assert_array_equal(tif_slide.embeddings[tif_order], png_slide.embeddings[png_order])
    assert cli("audit", tmp_path / "tif", "--forbid", "carcinoma").code == 0


# --- bad input: a clear line, exit 1, no traceback, no dataset folder -------------------------


@pytest.fixture(params=["jpeg", "tiff"])
def unresolved(request, tmp_path) -> Path:
    """A plain image without a usable resolution: the JPEG as shipped, or a flat TIFF from tifffile."""
    if request.param == "jpeg":
        return JPEG
    import tifffile
    from PIL import Image

    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, np.asarray(Image.open(JPEG)), photometric="rgb", metadata=None)
    return path


def test_plain_image_without_mpp_is_refused(tmp_path, cli, unresolved):
    out = tmp_path / "ds"
    result = export(cli, unresolved, out, "--fail-fast")
    assert_one_line_error(result, unresolved.name, "has no µm/px", "--mpp")
    assert not out.exists()

    # Without --fail-fast the run names the failed slide, says nothing was written, and prints no
    # "exported 0 slides" or dataset folder that does not exist.
    result = export(cli, unresolved, out)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"failed: {unresolved.name}:") and "--mpp" in lines[0]
    assert lines[1] == "error: none of the 1 slide(s) could be exported; nothing was written"
    assert result.out.strip() == ""
    assert not out.exists()


def test_image_smaller_than_a_patch_says_so(tmp_path, cli):
    # 500 x 300 px at 0.25 µm/px is 250 x 150 px at the 0.5 µm/px the network sees: no 256 px patch fits.
    result = export(cli, JPEG, tmp_path / "ds", "--mpp", "0.25")
    assert result.code == 0
    assert "smaller than one 256 px patch at 0.5 µm/px" in result.err and "--patch-size" in result.err
    assert "no tissue" not in result.err
    assert not (tmp_path / "ds").exists()


def test_sixteen_bit_grayscale_is_refused_not_read_as_white(tmp_path, cli):
    from PIL import Image

    path = tmp_path / "fluorescence.png"
    Image.fromarray(np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)).save(path)
    result = export(cli, path, tmp_path / "ds", "--mpp", "0.5", "--fail-fast")
    assert_one_line_error(result, "fluorescence.png", "16-bit", "8-bit RGB")
    assert not (tmp_path / "ds").exists()
