#!/usr/bin/env bash
# The prepared GPU session (device machine: python3 with CUDA torch; SimpleITK & co. carried as
# wheels in .whl/, the 2D datasets in benchmarks/data/nnUNet_raw). Results under $OUT/gpu/.
#   bash benchmarks/gpu_session.sh [SEEDS]
# 1. times protection of a 512x512x120 CT on the GPU (benchmarks/speed.py),
# 2. the first-epoch race on Dataset005 (benchmarks/first_epoch_race.py) with SEEDS victim seeds (default 50; 20 ran on
#    the CPU, BENCHMARKS.md "Twenty victim seeds" and "Inside the first epoch"): the clean victim, the shipped default
#    at 6.3 and 8/255, and at 6.3 with nnU-Net's 250-iteration epochs through all five -- how often the rings win,
#    with a tighter interval than 20 seeds give,
# 3. the unauthorised-training check at 6.3/255 (50.1 dB per slice) with the larger `unet` victim, three seeds.
set -uo pipefail
SEEDS="${1:-50}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD/UMedProtect:/tmp/site" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
R="$OUT/gpu"; mkdir -p "$R"
D=benchmarks/data/nnUNet_raw
U="python3 -m umedprotect.cli"
nvidia-smi -L
start=$SECONDS
python3 benchmarks/speed.py --device cuda --repeats 3 -o "$R/speed_gpu.json" | tail -n 12
echo "speed: $((SECONDS - start)) s"
D5=$D/Dataset005_TotalSegCTLiverBlocks
race() { python3 benchmarks/first_epoch_race.py "$D5" "$@" --device cuda --seeds $(seq 0 $((SEEDS - 1))) >> "$R/race.jsonl"; }
race "$D5"
for e in 6.3 8; do
  $U protect-dataset "$D5" -o "/tmp/default_e$e" --epsilon "$e" --device cuda --no-progress | tail -n 1
  race "/tmp/default_e$e"
  echo "race at $e: $((SECONDS - start)) s"
done
race /tmp/default_e6.3 --iterations 250 --epochs 5
echo "race at 6.3, 250-iteration epochs: $((SECONDS - start)) s"
$U evaluate "$D5" /tmp/default_e6.3 --victim unet --epochs 20 --iterations 50 --batch-size 16 --patch-size 128 \
  --seed 0 1 2 --device cuda -o "$R/eval_default_e6.3.json" 2>&1 | grep -v 'epoch' | tail -n 8
echo "evaluate: $((SECONDS - start)) s"
