"""Make tests/data/cmu_small_region_epidermis.png: an approximate epidermis mask of the real slide.

Not a pathologist's annotation: the hematoxylin channel (scikit-image's colour
deconvolution) of a 1/8 thumbnail, smoothed, thresholded with Otsu inside the
tissue, small pieces removed. It covers the dense, nucleus-rich epidermis and
leaves the pink dermis out, which is enough ground truth to compare embeddings
with the paper's protocol (docs/compare.md).

Run: .venv/bin/python docs/figures/epidermis_mask.py
"""

from __future__ import annotations

import numpy as np
import openslide
from PIL import Image
from skimage.color import rgb2hed
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects

slide = openslide.OpenSlide("tests/data/cmu_small_region.svs")
width, height = slide.dimensions
thumb = np.asarray(slide.get_thumbnail((width // 8, height // 8)).convert("RGB"))
hematoxylin = gaussian(rgb2hed(thumb)[..., 0], sigma=4)
tissue = gaussian(thumb.mean(-1), sigma=2) < 215
mask = (hematoxylin > threshold_otsu(hematoxylin[tissue])) & tissue
mask = remove_small_holes(remove_small_objects(mask, max_size=400), max_size=400)
Image.fromarray((mask * 255).astype(np.uint8)).save("tests/data/cmu_small_region_epidermis.png")
print(f"epidermis: {mask.sum() / tissue.sum():.0%} of the tissue")
