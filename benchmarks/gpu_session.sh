#!/usr/bin/env bash
# The prepared GPU session (device machine: python3 with CUDA torch; SimpleITK & co. carried as
# wheels in .whl/, the 2D datasets in benchmarks/data/nnUNet_raw). Results under $OUT/gpu/.
#   bash benchmarks/gpu_session.sh [STEPS]
# 1. fits the default protector on the training splits of Dataset001/002/003 (the shipped recipe, larger batches),
# 2. times protection of a 512x512x120 CT on the GPU (benchmarks/speed.py),
# 3. runs the unauthorised-training check with the new default protector on Dataset002 and 001.
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
  -o "$R/default_protector.safetensors" --device cuda --steps "$STEPS" --min-steps "$STEPS" \
  --codes blobs --code-period 32 --texture-floor 1 --offset-weight 10 --batch-size 32 --patch-size 128 --history "$R/default_fit.json" 2>&1 | tr '\r' '\n' | grep -v '^fitting' | tail -n 2
echo "fit: $((SECONDS - start)) s"
cp "$R/default_protector.safetensors" UMedProtect/UMedProtectLib/data/default_protector.safetensors
python3 benchmarks/speed.py --device cuda --repeats 3 -o "$R/speed_gpu.json" | tail -n 12
echo "speed: $((SECONDS - start)) s"
for name in Dataset002_TotalSegCT Dataset001_PyradiomicsLesions; do
  $U protect-dataset "$D/$name" -o "/tmp/$name.protected" --device cuda --no-progress | tail -n 1
  $U evaluate "$D/$name" "/tmp/$name.protected" --victim unet --epochs 20 --iterations 50 --batch-size 16 \
    --patch-size 128 --device cuda -o "$R/eval_default_$name.json" 2>&1 | grep -v 'epoch' | tail -n 5
  echo "$name: $((SECONDS - start)) s"
done
