#!/usr/bin/env bash
# The paper's Table 2 on S1 with U-Net++ on one GPU: U-Net++ alone, then fine-tuned with CRF and
# CD-CRF, each with mean-field and Frank-Wolfe (paper defaults), evaluated on the 10 test micrographs.
#
# Usage: benchmarks/s1_table2_gpu.sh S1_BINNED WORK [CRF_EPOCHS]
#   S1_BINNED  the S1 dataset binned by 4 beforehand (see benchmarks/gpu_round2.sh): trained with
#              bin 1 and the CRF lengths divided by 4 by hand (theta_alpha 40, theta_gamma 0.75)
#   CRF_EPOCHS fine-tuning epochs of each CRF run (default 50; 20 fits a 10-minute GPU slot)
set -u
S1=$(cd "$1" && pwd)
mkdir -p "$2"
WORK=$(cd "$2" && pwd)
EPOCHS=${3:-50}
source "$(dirname "$0")/gpu_sweep.sh"
sweep() {  # sweep NAME YAML-BODY (no time limit)
    gpu_sweep "$WORK" "$1" "$S1" 0 0 "$2"
}
S1BASE='crf.theta_alpha: 40.0, crf.theta_gamma: 0.75'
sweep s1-base "preset: cpu
base: {threads: 4, bin: 1, epochs: 40, $S1BASE}
grid: {arch: [unetplusplus]}"
for kind in crf cd-crf; do
  for solver in mean-field frank-wolfe; do
    sweep "s1-$kind-$solver" "preset: cpu
base: {threads: 3, bin: 1, arch: unetplusplus, epochs: $EPOCHS, init: $WORK/s1-base/run, $S1BASE}
grid: {crf.kind: [$kind], crf.solver: [$solver]}" &
  done
done
wait
for f in "$WORK"/*/comparison.md; do echo "== $f"; cat "$f"; done
