#!/usr/bin/env bash
# Real-data sweeps on one GPU: training recipes, and the paper's Table 2 (U-Net++ alone, + CRF,
# + CD-CRF, each with both solvers) on the EMPIAR-10017 development set.
#
# Usage: benchmarks/real_gpu.sh DATA WORK [SECONDS]
#   DATA     the empiar10017-dev folder (images/, coordinates/, masks/)
#   WORK     output folder (labels, one sweep folder per recipe, table2/)
#   SECONDS  wall-clock limit of each sweep (default 3000)
#
# Every sweep is a `crisp sweep` grid file written into WORK; the sweeps run at the same time (the
# GPU has room for all of them), three CPU threads each. Each run is evaluated on the two test
# micrographs (pixel metrics against the disk labels, picking against the annotated centres with a
# picker tuned on the two validation micrographs). Resumable: finished runs are skipped.
set -u
DATA=$1
mkdir -p "$2"
WORK=$(cd "$2" && pwd)
LIMIT=${3:-3000}
DS="$WORK/labels-disk"
crisp labels -m "$DATA/images" -c "$DATA/coordinates" -o "$DS" --method disk --radius 54 --pixel-size 1.77 \
    || exit 1
[ -f "$DS/split.yaml" ] || crisp split "$DS" --train 6 --val 2 --test 2 --seed 0 || exit 1
cat "$DS/split.yaml"

source "$(dirname "$0")/gpu_sweep.sh"
sweep() {  # sweep NAME YAML-BODY [SECONDS]
    gpu_sweep "$WORK" "$1" labels-disk 0 "${3:-$LIMIT}" "$2"
}

# Training recipes around the cpu preset (U-Net, ResNet-18 depth 4, bin 4, 256 px patches).
sweep recipe-cpu 'preset: cpu
base: {threads: 3}
grid: {epochs: [12, 100]}' &
sweep recipe-bin2 'preset: cpu
base: {threads: 3, bin: 2, patch_px: 512}
grid: {epochs: [100]}' &
sweep recipe-repeats 'preset: cpu
base: {threads: 3, epochs: 100}
grid: {repeats: [8]}' &
sweep recipe-r34 'preset: cpu
base: {threads: 3, epochs: 100, encoder_depth: 5}
grid: {encoder: [resnet34]}' &

# Table 2: U-Net++ (ResNet-18, depth 4, otherwise the cpu preset) alone, then fine-tuned with each
# CRF variant and solver from its best checkpoint (50 epochs, the CNN at lr_cnn, the CRF at lr_crf).
( sweep table2-base 'preset: cpu
base: {threads: 3, epochs: 100}
grid: {arch: [unetplusplus]}' $((LIMIT * 2 / 5))
  for kind in crf cd-crf; do
    for solver in mean-field frank-wolfe; do
      sweep "table2-$kind-$solver" "preset: cpu
base: {threads: 2, arch: unetplusplus, epochs: 50, init: $WORK/table2-base/run}
grid: {crf.kind: [$kind], crf.solver: [$solver]}" $((LIMIT * 3 / 5)) &
    done
  done
  wait ) &
wait
for f in "$WORK"/*/comparison.md; do echo "== $f"; cat "$f"; done
