#!/usr/bin/env bash
# GPU pilot: fit a protector on one dataset, protect it, and run the unauthorised-training check
# with the default victim (unet), to validate the method before the full GPU session.
#   bash benchmarks/gpu_pilot.sh DATASET_DIR NAME [STEPS]
set -uo pipefail
DATA="$1"; NAME="$2"; STEPS="${3:-1000}"; EPOCHS="${EPOCHS:-20}"; DEVICE="${DEVICE:-cuda}"
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD/UMedProtect:/tmp/site" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
R="$OUT/pilot"; mkdir -p "$R"
U="python3 -m umedprotect.cli"
start=$SECONDS
$U fit "$DATA" -o "$R/$NAME.safetensors" --device "$DEVICE" --steps "$STEPS" --min-steps "$STEPS" --batch-size 32 \
  --patch-size 128 --history "$R/${NAME}_fit.json" 2>&1 | tr '\r' '\n' | grep -v '^fitting' | tail -n 2
echo "fit: $((SECONDS - start)) s"
$U protect-dataset "$DATA" -o "/tmp/${NAME}_protected" --protector "$R/$NAME.safetensors" --device "$DEVICE" 2>&1 | tr '\r' '\n' | tail -n 1
echo "protect: $((SECONDS - start)) s"
$U evaluate "$DATA" "/tmp/${NAME}_protected" --victim unet --epochs "$EPOCHS" --iterations 50 --batch-size 16 \
  --patch-size 128 --device "$DEVICE" -o "$R/${NAME}_eval.json" 2>&1 | tr '\r' '\n' | grep -v 'it/s\|s/it' | tail -n 12
echo "total: $((SECONDS - start)) s"
