#!/usr/bin/env bash
# Second round of GPU sweeps (after benchmarks/real_gpu.sh): Table 2 on S1 with U-Net++, stronger
# CRF settings on the real set, and larger training recipes on the real set.
#
# Usage: benchmarks/gpu_round2.sh REAL_DATA S1_BINNED WORK [SECONDS]
#   REAL_DATA  the empiar10017-dev folder
#   S1_BINNED  the S1 dataset folder binned by 4 beforehand (micrographs quantised to uint8 after a
#              z-score, masks binned on the same grid, coordinates and diameter_px divided by 4), so
#              that it fits the GPU machine's transfer limit; trained with bin 1 and the CRF lengths
#              divided by 4 by hand (theta_alpha 40, theta_gamma 0.75), which is what bin 4 does
#   WORK       output folder
#   SECONDS    wall-clock limit of the longest sweeps (default 3000)
set -u
DATA=$1
S1=$(cd "$2" && pwd)
mkdir -p "$3"
WORK=$(cd "$3" && pwd)
LIMIT=${4:-3000}
DS="$WORK/labels-disk"
crisp labels -m "$DATA/images" -c "$DATA/coordinates" -o "$DS" --method disk --radius 54 --pixel-size 1.77 \
    > "$WORK/labels.log" 2>&1 || exit 1
[ -f "$DS/split.yaml" ] || crisp split "$DS" --train 6 --val 2 --test 2 --seed 0 || exit 1

source "$(dirname "$0")/gpu_sweep.sh"
sweep() {  # sweep NAME DATASET YAML-BODY SECONDS
    gpu_sweep "$WORK" "$1" "$2" 0 "$4" "$3"
}
STRONG='lr_crf: 0.05, crf.w_appearance: 5.0, crf.w_smoothness: 5.0'

# 1. Real set, larger recipes (picking F1 target 0.90).
sweep real-recipe-upp-r34 "$DS" 'preset: cpu
base: {threads: 2, arch: unetplusplus, encoder: resnet34, encoder_depth: 5, repeats: 8}
grid: {epochs: [120]}' "$LIMIT" &
sweep real-recipe-upp-r18 "$DS" 'preset: cpu
base: {threads: 2, arch: unetplusplus, repeats: 8}
grid: {epochs: [120]}' "$LIMIT" &
sweep real-recipe-unet-r34 "$DS" 'preset: cpu
base: {threads: 2, encoder: resnet34, encoder_depth: 5, repeats: 8}
grid: {epochs: [120]}' "$LIMIT" &

# 2. Real set: U-Net++ base, then CRF variants with stronger initial weights and a 50x CRF rate.
( sweep real-base "$DS" 'preset: cpu
base: {threads: 2, epochs: 100}
grid: {arch: [unetplusplus]}' $((LIMIT * 2 / 5))
  for variant in "crf|crf.kind: [crf]" "cd-crf|crf.kind: [cd-crf]" \
                 "cd-crf-decoder|crf.kind: [cd-crf], crf.feature_source: [decoder]" \
                 "crf-fw-l2|crf.kind: [crf], crf.solver: [frank-wolfe], crf.regulariser: [l2]"; do
    sweep "real-strong-${variant%%|*}" "$DS" "preset: cpu
base: {threads: 1, arch: unetplusplus, epochs: 50, init: $WORK/real-base/run, $STRONG}
grid: {${variant#*|}}" $((LIMIT * 3 / 5)) &
  done
  wait ) &

# 3. S1 (binned by 4 beforehand): U-Net++ alone, + CRF, + CD-CRF, each solver, paper defaults;
#    and one CD-CRF with the stronger setting.
S1BASE='crf.theta_alpha: 40.0, crf.theta_gamma: 0.75'
( sweep s1-base "$S1" "preset: cpu
base: {threads: 2, bin: 1, epochs: 40, $S1BASE}
grid: {arch: [unetplusplus]}" $((LIMIT * 2 / 5))
  for kind in crf cd-crf; do
    for solver in mean-field frank-wolfe; do
      sweep "s1-$kind-$solver" "$S1" "preset: cpu
base: {threads: 1, bin: 1, arch: unetplusplus, epochs: 50, init: $WORK/s1-base/run, $S1BASE}
grid: {crf.kind: [$kind], crf.solver: [$solver]}" $((LIMIT * 3 / 5)) &
    done
  done
  sweep s1-strong-cd-crf "$S1" "preset: cpu
base: {threads: 1, bin: 1, arch: unetplusplus, epochs: 50, init: $WORK/s1-base/run, $S1BASE, $STRONG}
grid: {crf.kind: [cd-crf]}" $((LIMIT * 3 / 5)) &
  wait ) &
wait
for f in "$WORK"/*/comparison.md; do echo "== $f"; cat "$f"; done
