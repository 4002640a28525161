#!/usr/bin/env bash
# One prepared GPU session (device machine: python3 with CUDA torch; SimpleITK & co. carried as
# wheels in .whl/, data in benchmarks/data/nnUNet_raw). Writes everything under $OUT/gpu/.
#   bash benchmarks/gpu_session.sh [STEPS]
set -uo pipefail
STEPS="${1:-3000}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD/UMedProtect:/tmp/site" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
R="$OUT/gpu"; mkdir -p "$R"
D=benchmarks/data/nnUNet_raw
U="python3 -m UMedProtectLib.cli"
nvidia-smi -L | tee "$R/device.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$R/device.txt"
# 1. the default protector: fitted on the training splits of the three real 2D datasets
time $U fit $D/Dataset001_PyradiomicsLesions $D/Dataset002_TotalSegCT $D/Dataset003_TotalSegMR \
  -o "$R/default_protector.safetensors" --device cuda --steps "$STEPS" --min-steps "$STEPS" \
  --batch-size 32 --patch-size 128 --history "$R/default_fit_history.json" 2>&1 | tr '\r' '\n' | tail -n 3
# 2. speed with the new protector
cp "$R/default_protector.safetensors" UMedProtect/UMedProtectLib/data/default_protector.safetensors
python3 benchmarks/speed.py --device cuda --repeats 3 -o "$R/speed_gpu.json"
