#!/usr/bin/env bash
# Which space should the image<->GPS InfoNCE use in the concept variants: the paper's concept space
# (eq. 4, k = number of concepts) or GeoCLIP's 512-d embedding space? Measured on the VALIDATION
# split of the demo's data (never the test split), 3 seeds, with the CLI only.
#
#   make demo && experiments/contrastive_space.sh [DATA_ROOT] [OUT]
#
# Reuses the demo's trained runs (concept space, the default) and trains the same two concept
# variants again with `contrastive_space=embedding`; every run gets a gallery of the demo's gallery
# coordinates minus those within 10 m of a validation point, then both sets are evaluated on `val`.
set -euo pipefail
data=$(realpath "${1:-data}")
out=$(realpath -m "${2:-$data/experiments/contrastive_space}")
bin=$(dirname "$(realpath "$0")")/../.venv/bin
features="$data/features/sample/ViT-S-32-alt__none/train"
mkdir -p "$out/runs" "$out/galleries"

"$bin/python" - "$data" "$out/coords.csv" <<'PY'
import sys
import numpy as np
import pandas as pd
from geoconcept import haversine_km

data, out = sys.argv[1:]
gallery = pd.read_parquet(f"{data}/gallery/sample/geoclip/seed-0/rows.parquet")[["lat", "lon"]]
splits = pd.read_parquet(f"{data}/shards/sample/splits.parquet")
val = splits.loc[splits["split"] == "val", ["lat", "lon"]].to_numpy()
coords = gallery.to_numpy()
keep = np.array([haversine_km(np.broadcast_to(c, val.shape), val).min() > 0.01 for c in coords])
gallery[keep].to_csv(out, index=False)
print(f"gallery: {keep.sum():,} of {len(keep):,} coordinates (dropped those within 10 m of a val point)")
PY

evaluation() {  # name, then "checkpoint_folder gallery_name" pairs
  local name=$1; shift
  {
    echo "name: val, contrastive space $name"
    echo "out: $out/evaluation_$name"
    echo "features: [$features]"
    echo "labels: [$data/labels/sample/train]"
    echo "split: $data/shards/sample/splits.parquet"
    echo "split_name: val"
    echo "explain_images: 0"
    echo "concept_maps: []"
    echo "downstream: {enabled: false}"
    echo "runs:"
    while [ $# -gt 0 ]; do echo "  - {checkpoint: $1, gallery: $out/galleries/$2}"; shift 2; done
  } > "$out/evaluation_$name.yaml"
  "$bin/geoconcept" evaluate --config "$out/evaluation_$name.yaml" 2>/dev/null | grep '^|'
  grep -A6 '| variant | side | mean AUROC' "$out/evaluation_$name/report.md" | grep '^|'
}

gallery() { "$bin/geoconcept" gallery --checkpoint "$1/final.safetensors" --out "$out/galleries/$2" --coords "$out/coords.csv" >/dev/null; }

concept_space=() embedding_space=()
for seed in 0 1 2; do
  for variant in geoclip concept concept_supervised; do
    gallery "$data/runs/sample/$variant/seed-$seed" "$variant-$seed"
    concept_space+=("$data/runs/sample/$variant/seed-$seed" "$variant-$seed")
  done
  for variant in concept concept_supervised; do
    run="$out/runs/$variant-embedding-$seed"
    "$bin/geoconcept" train --config "$data/runs/sample/$variant/seed-$seed/config.yaml" \
      --set "output=$run" --set contrastive_space=embedding >/dev/null
    gallery "$run" "$variant-embedding-$seed"
    embedding_space+=("$run" "$variant-embedding-$seed")
  done
done
echo "== concept variants with InfoNCE in the concept space (the default; geoclip for reference)"
evaluation concept "${concept_space[@]}"
echo "== the same concept variants with InfoNCE in the 512-d embedding space"
evaluation embedding "${embedding_space[@]}"
