#!/usr/bin/env bash
# Real set on one GPU: disk labels of 1, 0.67 and 0.5 times the particle radius (`crisp labels
# --disk-fraction`), U-Net++ ResNet-18 depth 4, 100 epochs, seeds 0 and 1; picking against the
# annotated centres (the particle diameter stays 108 px for the picker and the radius matching).
#
# Usage: benchmarks/real_disk_fraction_gpu.sh DATA WORK [SECONDS [FRACTIONS [SEEDS [BASE]]]]
#   FRACTIONS  default "1.0 0.67 0.5"; SEEDS default "0 1"
#   BASE       training settings (YAML flow mapping body), default
#              "threads: 2, epochs: 100, arch: unetplusplus" on top of the cpu preset
set -u
DATA=$1
mkdir -p "$2"
WORK=$(cd "$2" && pwd)
LIMIT=${3:-3000}
source "$(dirname "$0")/gpu_sweep.sh"
FRACTIONS=${4:-1.0 0.67 0.5}
SEEDS=${5:-0 1}
BASE=${6:-threads: 2, epochs: 100, arch: unetplusplus}
for fraction in $FRACTIONS; do
  ds="$WORK/labels-$fraction"
  crisp labels -m "$DATA/images" -c "$DATA/coordinates" -o "$ds" --method disk --radius 54 --pixel-size 1.77 \
      --disk-fraction "$fraction" --qc-count 1 --no-progress > "$WORK/labels-$fraction.log" 2>&1 || exit 1
  [ -f "$ds/split.yaml" ] || crisp split "$ds" --train 6 --val 2 --test 2 --seed 0 || exit 1
  for seed in $SEEDS; do
    gpu_sweep "$WORK" "fraction-$fraction-seed-$seed" "labels-$fraction" "$seed" "$LIMIT" "preset: cpu
base: {$BASE}
grid: {augment: [true]}" &
  done
done
wait
for f in "$WORK"/*/comparison.md; do echo "== $f"; cat "$f"; done
