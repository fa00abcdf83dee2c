"""Slides: readers (OpenSlide, Pillow), µm/px, tissue mask and the patch grid.

Real parts: the Aperio slide in tests/data, read through OpenSlide. Synthetic data: tiled
pyramidal TIFFs written with tifffile (OpenSlide reads them as generic tiled TIFF), with
a known tissue rectangle, and plain JPEG/PNG/TIFF images for Pillow.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openslide")
pytest.importorskip("skimage")
tifffile = pytest.importorskip("tifffile")
from PIL import Image  # noqa: E402

from conftest import PINK, slide_image, write_pyramid  # noqa: E402
from sic_share.errors import SlideError  # noqa: E402
from sic_share.slides import (  # noqa: E402
    PatchGrid,
    SlideReader,
    list_readers,
    make_grid,
    open_slide,
    register_reader,
    tissue_mask,
)
from sic_share.slides import _pil, _registry  # noqa: E402
from sic_share.slides._mpp import mpp_from_openslide, mpp_from_resolution  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
CMU = DATA / "cmu_small_region.svs"
CMU_SIZE = (2220, 2967)

# Synthetic pyramid: 1536 x 2048 px at 0.25 µm/px, levels 1, 2, 4, 8, with a tissue
# rectangle whose edges fall at quarter patches of a 1.0 µm/px grid of 128 px patches
# (512 level-0 px, every 256).
PYRAMID_SIZE = (1536, 2048)
PYRAMID_MPP = 0.25
TISSUE = (384, 384, 1408, 1664)  # x0, y0, x1, y1 in level-0 px


def _saturation(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    high, low = rgb.max(-1), rgb.min(-1)
    return (high - low) / np.maximum(high, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="module")
def pyramid(files) -> Path:
    return write_pyramid(files / "pyramid.tif", slide_image(PYRAMID_SIZE, TISSUE), mpp=PYRAMID_MPP)


@pytest.fixture(scope="module")
def pyramid_grid(pyramid) -> PatchGrid:
    with open_slide(pyramid) as slide:
        return make_grid(slide, target_mpp=1.0, size_px=128, thumbnail_size=1024)


@pytest.fixture(scope="module")
def cmu():
    with open_slide(CMU) as slide:
        yield slide


@pytest.fixture(scope="module")
def cmu_grid(cmu) -> PatchGrid:
    return make_grid(cmu)


@pytest.fixture(scope="module")
def cmu_candidates(cmu) -> PatchGrid:
    return make_grid(cmu, min_tissue=0.0)


# -- the real Aperio slide -------------------------------------------------------------


def test_real_svs_geometry_and_mpp(cmu):
    assert cmu.dimensions == CMU_SIZE
    assert cmu.level_dimensions == (CMU_SIZE,)
    assert cmu.level_downsamples == (1.0,)
    assert cmu.mpp == pytest.approx(0.499)
    assert "openslide" in list_readers() and "pil" in list_readers()


def test_real_svs_exposes_no_metadata(cmu):
    public = {name for name in dir(cmu) if not name.startswith("_")}
    assert public == {"dimensions", "level_dimensions", "level_downsamples", "mpp", "read_region",
                      "thumbnail", "best_level_for_downsample", "close"}
    assert not hasattr(cmu, "properties") and not hasattr(cmu, "associated_images")
    assert "CMU-1" not in repr(cmu)


def test_real_svs_read_region(cmu):
    region = cmu.read_region((1000, 1500), 0, (64, 48))
    assert region.shape == (48, 64, 3) and region.dtype == np.uint8
    # Half outside the slide: that half is white, the rest is the slide.
    edge = cmu.read_region((CMU_SIZE[0] - 20, 1500), 0, (40, 10))
    assert (edge[:, 20:] == 255).all()
    np.testing.assert_array_equal(edge[:, :20], cmu.read_region((CMU_SIZE[0] - 20, 1500), 0, (20, 10)))


def test_real_svs_thumbnail_keeps_aspect(cmu):
    thumb = cmu.thumbnail(512)
    assert thumb.dtype == np.uint8 and thumb.shape[2] == 3
    assert max(thumb.shape[:2]) == 512
    assert thumb.shape[1] / thumb.shape[0] == pytest.approx(CMU_SIZE[0] / CMU_SIZE[1], abs=2 / 512)


def test_real_svs_grid_geometry(cmu_grid):
    grid = cmu_grid
    scale = 0.5 / 0.499
    assert grid.level0_size == math.floor(256 * scale + 0.5) == 257
    assert (grid.level, grid.level_size, grid.size_px, grid.stride_px) == (0, 257, 256, 128)
    assert grid.target_mpp == 0.5 and grid.level0_mpp == pytest.approx(0.499)
    assert grid.coords.dtype == np.int32 and grid.coords.shape == (len(grid), 2)
    assert grid.tissue.dtype == np.float32 and grid.tissue.shape == (len(grid),)
    top_left = grid.top_left
    assert (top_left >= 0).all()
    assert (top_left + grid.level0_size <= np.array(CMU_SIZE)).all()
    order = np.lexsort((grid.coords[:, 0], grid.coords[:, 1]))
    np.testing.assert_array_equal(order, np.arange(len(grid)))  # row-major: y, then x
    # Candidates every stride * scale level-0 px; whole patch inside: floor((W - 257) / 128.256) + 1.
    n_x = math.floor((CMU_SIZE[0] - 257) / (128 * scale)) + 1
    n_y = math.floor((CMU_SIZE[1] - 257) / (128 * scale)) + 1
    assert grid.n_candidates == n_x * n_y


def test_real_svs_grid_keeps_exactly_the_tissue_candidates(cmu_grid, cmu_candidates):
    assert len(cmu_candidates) == cmu_candidates.n_candidates == cmu_grid.n_candidates
    on_tissue = cmu_candidates.tissue >= 0.5
    assert 0 < len(cmu_grid) == on_tissue.sum() < cmu_grid.n_candidates
    np.testing.assert_array_equal(cmu_grid.coords, cmu_candidates.coords[on_tissue])
    np.testing.assert_allclose(cmu_grid.tissue, cmu_candidates.tissue[on_tissue])
    assert ((cmu_candidates.tissue >= 0) & (cmu_candidates.tissue <= 1)).all()


def test_real_svs_kept_patches_are_on_tissue(cmu, cmu_grid, cmu_candidates):
    thumb = cmu.thumbnail(1024)
    saturation = _saturation(thumb)
    scale = thumb.shape[0] / CMU_SIZE[1]
    size = round(cmu_grid.level0_size * scale)

    def mean_saturation(top_left: np.ndarray) -> float:
        corners = np.round(top_left * scale).astype(int)
        return float(np.mean([saturation[y:y + size, x:x + size].mean() for x, y in corners]))

    dropped = cmu_candidates.top_left[cmu_candidates.tissue < 0.5]
    assert mean_saturation(cmu_grid.top_left) > 2.5 * mean_saturation(dropped)


def test_grid_parameters(cmu):
    grid = make_grid(cmu, size_px=128, stride_px=128, min_tissue=0.9, thumbnail_size=512)
    assert grid.stride_px == 128 and grid.level0_size == 128
    assert (grid.tissue >= 0.9).all()


# -- synthetic pyramids ------------------------------------------------------------------


def test_pyramid_levels_and_mpp_from_tiff_tags(pyramid):
    with open_slide(pyramid) as slide:
        assert slide.dimensions == PYRAMID_SIZE
        assert slide.level_dimensions == ((1536, 2048), (768, 1024), (384, 512), (192, 256))
        assert slide.level_downsamples == (1.0, 2.0, 4.0, 8.0)
        assert slide.mpp == pytest.approx(PYRAMID_MPP)


def test_best_level_for_downsample(pyramid):
    with open_slide(pyramid) as slide:
        assert slide.best_level_for_downsample(1.0 / PYRAMID_MPP) == 2  # 1 µm/px on 0.25
        assert slide.best_level_for_downsample(3.9) == 1
        assert slide.best_level_for_downsample(3.97) == 2  # within the 1 % slack
        assert slide.best_level_for_downsample(0.5) == 0
        assert slide.best_level_for_downsample(100.0) == 3


def test_pyramid_read_region_is_level0_located(pyramid):
    x0, y0, x1, y1 = TISSUE
    with open_slide(pyramid) as slide:
        inside = slide.read_region((x0 + 64, y0 + 64), 2, (16, 16))
        assert inside.shape == (16, 16, 3) and inside.dtype == np.uint8
        assert _saturation(inside).mean() > 0.3
        corner = slide.read_region((-64, -64), 2, (32, 32))  # 16 level-2 px outside each way
        assert (corner[:16] == 255).all() and (corner[:, :16] == 255).all()
        assert (corner[16:, 16:] < 255).all()
        thumb = slide.thumbnail(500)  # from level 2 (4.096 x smaller), resized
        assert thumb.shape == (500, 375, 3)
        assert slide.thumbnail(4096).shape == (2048, 1536, 3)  # never upsampled


def test_pyramid_grid_keeps_only_the_tissue_rectangle(pyramid_grid):
    grid = pyramid_grid
    assert (grid.level, grid.level0_size, grid.level_size) == (2, 512, 128)
    assert (grid.level0_mpp, grid.target_mpp) == (PYRAMID_MPP, 1.0)
    # 512 px patches every 256 px: 5 columns x 7 rows of candidates.
    assert grid.n_candidates == 35
    x0, y0, x1, y1 = TISSUE
    starts_x, starts_y = np.arange(0, 1025, 256), np.arange(0, 1537, 256)
    frac_x = (np.clip(starts_x + 512, x0, x1) - np.clip(starts_x, x0, x1)) / 512
    frac_y = (np.clip(starts_y + 512, y0, y1) - np.clip(starts_y, y0, y1)) / 512
    expected = np.outer(frac_y, frac_x).ravel()  # products of 1/4, 3/4 and 1: never near 0.5
    centres = np.stack(np.meshgrid(starts_x + 256, starts_y + 256), -1).reshape(-1, 2)
    keep = expected >= 0.5
    np.testing.assert_array_equal(grid.coords, centres[keep])
    np.testing.assert_allclose(grid.tissue, expected[keep], atol=0.03)


def test_mpp_override(pyramid):
    with open_slide(pyramid, mpp=0.5) as slide:
        assert slide.mpp == 0.5
        grid = make_grid(slide, target_mpp=1.0, thumbnail_size=256)
        assert grid.level0_size == 512 and grid.level == 1 and grid.level_size == 256
        assert grid.level0_mpp == 0.5


def test_missing_mpp_makes_grid_refuse(files):
    path = write_pyramid(files / "no-mpp.tif", slide_image((1024, 1024), (256, 256, 768, 768)), levels=2)
    with open_slide(path) as slide:
        assert slide.mpp is None  # opening does not refuse: export decides
        with pytest.raises(SlideError, match=r"no-mpp\.tif has no µm/px: pass --mpp X or --mpp-csv FILE"):
            make_grid(slide)
    with open_slide(path, mpp=0.5) as slide:
        assert len(make_grid(slide, thumbnail_size=256)) > 0


def test_anisotropic_mpp_is_refused_with_the_reason(files):
    image = slide_image((512, 512), (0, 0, 256, 256))
    path = write_pyramid(files / "aniso.tif", image, levels=1, mpp=0.25, mpp_y=0.5)
    with open_slide(path) as slide:
        assert slide.mpp is None
        with pytest.raises(SlideError, match=r"differ between x \(0.25\) and y \(0.5\).*pass --mpp"):
            make_grid(slide)


@pytest.mark.parametrize(("mpp", "unit", "expected"), [
    (0.5, "INCH", 0.5),
    (0.25, "CENTIMETER", 0.25),
    (25_400 / 300, "INCH", None),  # 300 dpi: a library default, not a scan
    (25_400 / 72, "INCH", None),  # 72 dpi: out of range
])
def test_tiff_resolution_units(files, mpp, unit, expected):
    image = slide_image((512, 512), (0, 0, 256, 256))
    path = write_pyramid(files / f"res-{unit}-{mpp:.3f}.tif", image, levels=1, mpp=mpp, unit=unit)
    with open_slide(path) as slide:
        assert slide.mpp == (None if expected is None else pytest.approx(expected))


def test_mpp_rules_on_properties():
    assert mpp_from_openslide({"openslide.mpp-x": "0.499", "openslide.mpp-y": "0.499"}) == (0.499, None)
    # No openslide.mpp-*: fall back to the TIFF resolution tags, units as OpenSlide spells them.
    tags = {"tiff.XResolution": "40000", "tiff.YResolution": "40000", "tiff.ResolutionUnit": "centimeter"}
    assert mpp_from_openslide(tags) == (0.25, None)
    assert mpp_from_openslide({**tags, "tiff.ResolutionUnit": "none"}) == (None, None)
    assert mpp_from_openslide({"openslide.mpp-x": "250"}) == (None, None)  # out of range: silent
    assert mpp_from_openslide({"openslide.mpp-x": "nan"}) == (None, None)
    assert mpp_from_resolution(50_800, 50_800, "inch") == (0.5, None)


# -- plain images through Pillow -------------------------------------------------------------


def test_jpeg_and_png(files):
    image = slide_image((600, 400), (100, 100, 400, 300))
    jpeg, png = files / "plain.jpg", files / "plain.png"
    Image.fromarray(image).save(jpeg, quality=95, dpi=(50_800, 50_800))  # 0.5 µm/px
    Image.fromarray(image).save(png)
    with open_slide(jpeg) as slide:
        assert (slide.dimensions, slide.level_dimensions, slide.level_downsamples) == ((600, 400), ((600, 400),), (1.0,))
        assert slide.mpp == pytest.approx(0.5)
        region = slide.read_region((150, 150), 0, (50, 40))
        assert region.shape == (40, 50, 3) and region.dtype == np.uint8
        assert _saturation(region).mean() > 0.3
        assert slide.thumbnail(300).shape == (200, 300, 3)
        grid = make_grid(slide, size_px=64, thumbnail_size=300)
        assert len(grid) > 0 and (grid.top_left >= 100 - 32).all()
    with open_slide(png) as slide:
        assert slide.mpp is None
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (600, 400)), image)
        edge = slide.read_region((590, 390), 0, (20, 20))
        assert (edge[10:] == 255).all() and (edge[:, 10:] == 255).all()
        np.testing.assert_array_equal(edge[:10, :10], image[390:, 590:])


def test_jpeg_placeholder_dpi_is_ignored(files):
    path = files / "72dpi.jpg"
    Image.fromarray(slide_image((64, 64), (0, 0, 32, 32))).save(path, dpi=(300, 300))
    with open_slide(path) as slide:
        assert slide.mpp is None


def test_png_transparency_becomes_white(files):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = PINK
    rgba[:, 15:, 3] = 255  # left half transparent
    path = files / "alpha.png"
    Image.fromarray(rgba).save(path)
    with open_slide(path) as slide:
        region = slide.read_region((0, 0), 0, (30, 20))
    assert (region[:, :15] == 255).all() and (region[:, 15:] == PINK).all()


def test_flat_tiff_falls_back_to_pillow(files):
    image = slide_image((300, 200), (50, 50, 250, 150))
    path = files / "flat.tif"
    tifffile.imwrite(path, image, photometric="rgb", resolution=(40_000, 40_000),
                     resolutionunit="CENTIMETER", metadata=None)
    with open_slide(path) as slide:
        assert type(slide).__name__ == "PilReader"
        assert slide.dimensions == (300, 200) and slide.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(slide.read_region((10, 20), 0, (30, 40)), image[20:60, 10:40])


# -- bad inputs: one clear SlideError each ------------------------------------------------------


def test_missing_file(files):
    with pytest.raises(SlideError, match=r"nope\.svs does not exist: check the path"):
        open_slide(files / "nope.svs")


@pytest.mark.parametrize("name", ["notes.svs", "notes.tif", "notes.jpg"])
def test_text_file_is_not_an_image(files, name):
    path = files / name
    path.write_text("patient: Jane Doe\n")
    with pytest.raises(SlideError, match=rf"{name} is not an image (OpenSlide|Pillow) can read"):
        open_slide(path)


def test_truncated_svs(files):
    path = files / "half.svs"
    data = CMU.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match=r"half\.svs looks like a TIFF file .* truncated, corrupt or not a slide"):
        open_slide(path)


def test_corrupt_tiles_fail_at_read_time(files):
    path = files / "corrupt.svs"
    shutil.copyfile(CMU, path)
    with tifffile.TiffFile(CMU) as tiff:
        page = tiff.pages[0]
        tiles = list(zip(page.dataoffsets, page.databytecounts))
    with open(path, "r+b") as handle:
        for offset, count in tiles:
            handle.seek(offset + 2)
            handle.write(b"\xff" * (count - 2))
    with open_slide(path) as slide:  # the header is intact
        with pytest.raises(SlideError, match=r"corrupt\.svs could not be read at level 0 .* truncated or corrupt"):
            slide.read_region((0, 0), 0, (64, 64))
        with pytest.raises(SlideError, match="truncated or corrupt"):
            make_grid(slide)


def test_truncated_jpeg_fails_at_read_time(files):
    whole = files / "whole.jpg"
    Image.fromarray(slide_image((400, 400), (100, 100, 300, 300))).save(whole)
    cut = files / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(SlideError, match=r"cut\.jpg .*truncated or corrupt"):
        with open_slide(cut) as slide:
            slide.thumbnail(64)


def test_renamed_jpeg(files):
    path = files / "renamed.svs"
    Image.fromarray(slide_image((64, 64), (0, 0, 32, 32))).save(path, format="JPEG")
    with pytest.raises(SlideError, match=r"renamed\.svs is a plain JPEG image.*\.jpeg suffix"):
        open_slide(path)


def test_large_plain_images_pass_pillows_bomb_check_up_to_our_limit(files, monkeypatch):
    path = files / "big.png"
    Image.fromarray(slide_image((100, 100), (0, 0, 50, 50))).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 10k px
    with open_slide(path) as slide:
        assert slide.read_region((0, 0), 0, (100, 100)).shape == (100, 100, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # the check is restored, not disabled
    monkeypatch.setattr(_pil, "MAX_PIXELS", 5000)
    with pytest.raises(SlideError, match=r"big\.png has 100 x 100 pixels.*tiled pyramidal TIFF"):
        open_slide(path)


def test_unsupported_suffix(files):
    path = files / "slide.xyz"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(SlideError, match=r"suffix '\.xyz'.*use one of .*\.ndpi.*\.svs.*DICOM folder"):
        open_slide(path)


def test_folder_without_dicom(files):
    folder = files / "empty-series"
    folder.mkdir()
    with pytest.raises(SlideError, match="folder without .dcm files"):
        open_slide(folder)


@pytest.mark.parametrize("mpp", [0.01, 500.0, -0.5, float("nan"), float("inf"), True, "0.5x"])
def test_mpp_override_out_of_range(mpp):
    with pytest.raises(SlideError, match=r"mpp=.* is outside 0.05-100 µm/px: pass the level-0 resolution"):
        open_slide(CMU, mpp=mpp)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size_px": 0}, r"size_px=0 should be a positive integer"),
    ({"size_px": 25.5}, r"size_px=25.5 should be a positive integer"),
    ({"stride_px": -1}, r"stride_px=-1 should be a positive integer"),
    ({"min_tissue": 1.5}, r"min_tissue=1.5 should be a fraction in \[0, 1\]"),
    ({"target_mpp": 0.0}, r"target_mpp=0.0 should be a number of µm/px within 0.05-100"),
    ({"thumbnail_size": 16}, r"thumbnail_size=16 should be at least 64"),
])
def test_make_grid_rejects_bad_parameters(cmu, kwargs, message):
    with pytest.raises(SlideError, match=message):
        make_grid(cmu, **kwargs)


def test_closed_reader(pyramid):
    with open_slide(pyramid) as slide:
        pass
    with pytest.raises(ValueError, match="closed"):
        slide.read_region((0, 0), 0, (4, 4))
    slide.close()  # idempotent


# -- tissue mask -----------------------------------------------------------------------------


def test_tissue_mask_constant_images_have_no_tissue():
    for value in (255, 245, 200):
        mask = tissue_mask(np.full((120, 90, 3), value, np.uint8))
        assert mask.dtype == bool and mask.shape == (120, 90) and not mask.any()


def test_tissue_mask_finds_the_rectangle():
    image = slide_image((400, 300), (100, 80, 300, 220), seed=3)
    mask = tissue_mask(image)
    truth = np.zeros((300, 400), bool)
    truth[80:220, 100:300] = True
    assert (mask & truth).sum() / (mask | truth).sum() > 0.95


def test_tissue_mask_keeps_pale_tissue_on_an_all_tissue_crop():
    # Half eosin-pink, half pale stroma: plain Otsu would drop the pale half.
    image = slide_image((200, 200), (0, 0, 200, 200), seed=4)
    image[:, 100:] = np.clip(image[:, 100:].astype(int) + 35, 0, 255)
    assert tissue_mask(image).mean() > 0.95


def test_tissue_mask_rejects_bad_input():
    with pytest.raises(ValueError, match=r"should be \(h, w, 3\) uint8"):
        tissue_mask(np.zeros((10, 10), np.uint8))


# -- registry ------------------------------------------------------------------------------------


def test_register_a_reader(files, monkeypatch):
    monkeypatch.setattr(_registry, "_READERS", dict(_registry._READERS))

    @register_reader("blank", ("fake",))
    class BlankReader(SlideReader):
        def __init__(self, path, *, mpp=None):
            super().__init__(path, level_dimensions=((40, 30), (20, 15)), level_downsamples=(1.0, 2.0),
                             file_mpp=1.0, mpp=mpp)

        def _read(self, location, level, size):
            return np.full((size[1], size[0], 3), 128, np.uint8)

        def _close(self):
            pass

    assert list_readers()[-1] == "blank"
    path = files / "x.FAKE"
    path.touch()
    with open_slide(path) as slide:
        assert isinstance(slide, BlankReader) and slide.mpp == 1.0
        assert slide.thumbnail(10).shape == (8, 10, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_reader("blank", (".other",))
