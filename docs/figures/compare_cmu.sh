#!/usr/bin/env bash
# The run shown in docs/compare.md: the real slide, two models, the paper's protocol.
# Run from the repository root after `make test` (or any install with the export extra).
set -euo pipefail
D=build/compare
rm -rf "$D" && mkdir -p "$D"
export SIC_SHARE_HOME="$PWD/$D/home" PATH="$PWD/.venv/bin:$PATH"
set -x
# A randomly initialised ResNet-18 (no pretrained weights offline): the "weak model".
python -c "import timm, torch; torch.manual_seed(0); torch.save(timm.create_model('resnet18', pretrained=False, num_classes=0).state_dict(), '$D/resnet18-random.pt')"
sic-share export tests/data/cmu_small_region.svs --out "$D/cmu" --no-sign \
    --model handcrafted --model resnet18="$D/resnet18-random.pt" \
    --patch-size 128 --stride 64 --masks tests/data/cmu_small_region_epidermis.png --classes other,epidermis
sic-share benchmark "$D/cmu/handcrafted" "$D/cmu/resnet18" --clicks 1,3,5 --folds 5 \
    --plot docs/figures/compare_cmu_box.png --csv "$D/folds.csv" --json "$D/benchmark.json"
sic-share benchmark "$D/cmu/handcrafted" "$D/cmu/resnet18" --clicks 1,3,5 --folds 5 --rule paper
sic-share similarity "$D/cmu/handcrafted" "$D/cmu/resnet18"
sic-share umap "$D/cmu/handcrafted" --out docs/figures/compare_cmu_umap.png --seeds demo/cmu_seeds.geojson \
    --tissuumaps "$D/umap.csv" --max-side 600
sic-share umap "$D/cmu/resnet18" --out docs/figures/compare_cmu_umap_resnet18.png --max-side 600
sic-share to-anndata "$D/cmu/handcrafted" --out "$D/cmu-handcrafted.h5ad"
# The figure in docs/compare.md: the slide beside the two maps.
python - <<'PY'
import openslide
from PIL import Image, ImageDraw
slide = openslide.OpenSlide("tests/data/cmu_small_region.svs")
panels = [slide.get_thumbnail((450, 600)).convert("RGB")] + [
    Image.open(f"docs/figures/{name}.png").convert("RGB") for name in ("compare_cmu_umap", "compare_cmu_umap_resnet18")]
h = 450
panels = [p.resize((round(p.width * h / p.height), h)) for p in panels]
out = Image.new("RGB", (sum(p.width for p in panels) + 20, h + 22), "white")
x = 0
for panel, title in zip(panels, ("the slide (never shared)", "handcrafted: UMAP to RGB", "random ResNet-18: UMAP to RGB")):
    out.paste(panel, (x, 22))
    ImageDraw.Draw(out).text((x + 4, 4), title, fill="black")
    x += panel.width + 10
out.save("docs/figures/compare_cmu_maps.png")
PY
