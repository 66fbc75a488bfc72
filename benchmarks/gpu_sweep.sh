# Sourced by the GPU sweep scripts of this folder (real_gpu.sh, gpu_round2.sh, s1_table2_gpu.sh,
# real_disk_fraction_gpu.sh): one `crisp sweep` grid file per call, evaluated on test with a picker
# tuned per run on validation.
#
# gpu_sweep WORK NAME DATASET SEED SECONDS BODY
#   writes WORK/NAME.yaml (dataset, out NAME, seed, evaluate: test, picker: tune, then BODY) and runs
#   it under a wall-clock limit of SECONDS (0: none), its output in WORK/NAME.log; prints the start,
#   the end and the exit status with the time of day.
gpu_sweep() {
    local work=$1 name=$2 dataset=$3 seed=$4 seconds=$5 body=$6
    printf 'dataset: %s\nout: %s\nseed: %s\nevaluate: test\npicker: tune\n%s\n' "$dataset" "$name" "$seed" \
        "$body" > "$work/$name.yaml"
    echo "$(date +%T) sweep $name starts"
    timeout "$seconds" crisp sweep "$work/$name.yaml" > "$work/$name.log" 2>&1
    echo "$(date +%T) sweep $name exit $?"
}
