#!/usr/bin/env bash
# Runs a ppdsim sweep as a Slurm job array: task I of N runs slice I/N of the grid into its own
# directory; a dependent job merges the slices into exactly the files one unsharded run writes.
#
#   sbatch --array=0-7 deploy/slurm/sweep-array.sh sweeps/default-load.toml
#   sbatch --dependency=afterok:<array job id> --wrap \
#     'ppdsim sweep merge output/sweep-default-load/shard-*-of-8 -o output/sweep-default-load/merged'
#
# Every node needs the ppdsim binary (cargo build --release) and the repository's files the sweep
# names (scenario, trace, calibration) at the same relative paths, e.g. on a shared filesystem.
#SBATCH --job-name=ppdsim-sweep
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=01:00:00
#SBATCH --output=ppdsim-sweep-%A_%a.log
set -euo pipefail
SWEEP=${1:?usage: sbatch --array=0-(N-1) sweep-array.sh SWEEP.toml}
: "${SLURM_ARRAY_TASK_ID:?run under sbatch --array}"
# Slurm's IDs count from 0 when the array is 0-(N-1); N is the array's size.
N=${SLURM_ARRAY_TASK_COUNT:?run under sbatch --array}
PPDSIM=${PPDSIM:-target/release/ppdsim}
export RAYON_NUM_THREADS=${SLURM_CPUS_PER_TASK:-2}
exec "$PPDSIM" sweep "$SWEEP" --shard "${SLURM_ARRAY_TASK_ID}/${N}" -q
