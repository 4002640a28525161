#!/usr/bin/env bash
# Protect an nnU-Net v2 raw dataset with a SLURM job array: one shard per array task, then one verify.
#
#   scripts/slurm_protect_dataset.sh IN_DIR OUT_DIR N_SHARDS [protect-dataset options...]
#
# submits `sbatch --array=0-(N_SHARDS-1)` running
#   umedprotect protect-dataset IN_DIR -o OUT_DIR --shard $SLURM_ARRAY_TASK_ID/N_SHARDS [options]
# and a verify job that starts once every array task has ended (afterany: it reports failed shards too).
# OUT_DIR must be on a file system every node sees under the same path. A failed or cancelled task is
# resumed by resubmitting it alone: sbatch --array=K ... (finished cases are skipped).
# Set SBATCH_* variables (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT, ...) or edit the options below;
# UMEDPROTECT_CPUS and UMEDPROTECT_GRES size each task, UMEDPROTECT_LOGS names the log folder (not inside
# OUT_DIR: verify reports files the manifests do not list).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 IN_DIR OUT_DIR N_SHARDS [protect-dataset options...]" >&2
  exit 2
fi
in_dir=$1 out_dir=$2 shards=$3
shift 3
if ! [[ $shards =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: N_SHARDS must be a positive integer, not '$shards'" >&2
  exit 2
fi
logs=${UMEDPROTECT_LOGS:-slurm-logs}
mkdir -p "$logs"
options=$(printf ' %q' "$@")

array_job=$(sbatch --parsable \
  --job-name=umedprotect-shards \
  --array="0-$((shards - 1))" \
  --cpus-per-task="${UMEDPROTECT_CPUS:-8}" \
  --gres="${UMEDPROTECT_GRES:-gpu:1}" \
  --output="$logs/shard-%a.log" \
  --wrap="umedprotect protect-dataset $(printf '%q' "$in_dir") -o $(printf '%q' "$out_dir") \
--shard \$SLURM_ARRAY_TASK_ID/$shards --no-progress$options")

verify_job=$(sbatch --parsable \
  --job-name=umedprotect-verify \
  --dependency="afterany:$array_job" \
  --cpus-per-task=2 \
  --output="$logs/verify.log" \
  --wrap="umedprotect verify $(printf '%q' "$out_dir")")

echo "submitted shards as job array $array_job (0-$((shards - 1))) and verify as job $verify_job"
