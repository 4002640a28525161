#!/usr/bin/env bash
# The prepared GPU session (device machine: python3 with CUDA torch; SimpleITK & co. carried as
# wheels in .whl/, the 2D datasets in benchmarks/data/nnUNet_raw). Results under $OUT/gpu/.
#   bash benchmarks/gpu_session.sh [STEPS]
# 1. fits a candidate protector on the training splits of Dataset001/002/003: ring codes with the generators bounded
#    around them, longer than the CPU allows (on the CPU, fitting weakened the rings; the shipped default is not fitted),
# 2. times protection of a 512x512x120 CT on the GPU (benchmarks/speed.py),
# 3. runs the unauthorised-training check at 6/255 on Dataset005 with the shipped default and with the candidate.
set -uo pipefail
STEPS="${1:-1000}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD/UMedProtect:/tmp/site" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
R="$OUT/gpu"; mkdir -p "$R"
D=benchmarks/data/nnUNet_raw
U="python3 -m UMedProtectLib.cli"
nvidia-smi -L
start=$SECONDS
$U fit $D/Dataset001_PyradiomicsLesions $D/Dataset002_TotalSegCT $D/Dataset003_TotalSegMR \
  -o "$R/candidate.safetensors" --device cuda --steps "$STEPS" --min-steps "$STEPS" --codes rings --code-period 6 \
  --texture-floor 1 --generator-gain 0.25 --band-radius 1 --batch-size 32 --patch-size 128 --history "$R/candidate_fit.json" \
  2>&1 | tr '\r' '\n' | grep -v '^fitting' | tail -n 2
echo "fit: $((SECONDS - start)) s"
python3 benchmarks/speed.py --device cuda --repeats 3 -o "$R/speed_gpu.json" | tail -n 12
echo "speed: $((SECONDS - start)) s"
D5=$D/Dataset005_TotalSegCTLiverBlocks
for protector in UMedProtect/UMedProtectLib/data/default_protector.safetensors "$R/candidate.safetensors"; do
  name=$(basename "$protector" .safetensors)
  $U protect-dataset "$D5" -o "/tmp/$name.protected" --protector "$protector" --epsilon 6 --device cuda --no-progress | tail -n 1
  $U evaluate "$D5" "/tmp/$name.protected" --victim unet --epochs 20 --iterations 50 --batch-size 16 --patch-size 128 \
    --seed 0 1 2 --device cuda -o "$R/eval_${name}_e6.json" 2>&1 | grep -v 'epoch' | tail -n 8
  echo "$name: $((SECONDS - start)) s"
done
