#!/usr/bin/env bash
# The study's `gpu` setting on one GPU machine, in under 10 minutes, as parallel processes:
#   1. per dataset, protect the training cases with every method (fits "UMed fitted");
#   2. per dataset and victim, train the victims on clean and protected data (reusing step 1);
#   beside them, an epsilon sweep: UMed fitted on Dataset002 at larger budgets, evaluated with unet.
# Everything lands in $OUT/gpu_study.tar.gz; merge it here with
#   python benchmarks/study.py --setting gpu --merge <unpacked>/study_* --out benchmarks/results/gpu
#   bash benchmarks/gpu_study.sh            (device machine: python3 with CUDA torch, wheels in .whl/)
#   SETTING=smoke DATASETS=900 DEVICE=cpu SWEEP_STEPS=2 SWEEP_EPOCHS=1 bash benchmarks/gpu_study.sh   (dry run)
set -uo pipefail
SETTING="${SETTING:-gpu}"; DATASETS="${DATASETS:-001 002 003}"; DEVICE="${DEVICE:-cuda}"
VICTIMS="${VICTIMS:-unet plainconvunet segresnet}"; EPSILONS="${EPSILONS:-8 16}"; SWEEP_STEPS="${SWEEP_STEPS:-500}"; SWEEP_EPOCHS="${SWEEP_EPOCHS:-12}"
PHASE1="${PHASE1:-250}"; PHASE2="${PHASE2:-280}"
OUT="${OUT:-/tmp/gpu_study_out}"; mkdir -p "$OUT"
if [ -d .whl ] && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD/UMedProtect:/tmp/site" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
R=/tmp/gpu_study; rm -rf "$R"; mkdir -p "$R"
D=benchmarks/data/nnUNet_raw
S="python3 benchmarks/study.py --setting $SETTING --device $DEVICE --resume"
U="python3 -m umedprotect.cli"
command -v nvidia-smi >/dev/null && nvidia-smi -L
start=$SECONDS

sweep() {  # fit, protect and evaluate at budget $1 on Dataset002, within $2 seconds
  local e="$1" data="$D/Dataset002_TotalSegCT" log="$R/sweep_eps$1.log"
  timeout "$2" bash -c "
    $U fit $data -o $R/eps$e.safetensors --epsilon $e --steps $SWEEP_STEPS --min-steps $SWEEP_STEPS --batch-size 32 --patch-size 128 \
      --device $DEVICE --history $R/eps${e}_fit.json &&
    $U protect-dataset $data -o /tmp/eps$e --protector $R/eps$e.safetensors --epsilon $e --device $DEVICE --no-progress &&
    $U evaluate $data /tmp/eps$e --victim unet --epochs $SWEEP_EPOCHS --iterations 25 --batch-size 16 --patch-size 128 \
      --device $DEVICE -o $R/eps${e}_eval.json" >"$log" 2>&1
}
for e in $EPSILONS; do sweep "$e" $((PHASE1 + PHASE2)) & done

for d in $DATASETS; do
  timeout "$PHASE1" $S --datasets "$d" --protect-only --out "$R/study_${d}_protect" >"$R/protect_$d.log" 2>&1 &
done
while pgrep -f -- "--protect-only" >/dev/null; do sleep 2; done
echo "phase 1 (protection): $((SECONDS - start)) s"

for d in $DATASETS; do
  if grep -q "finished in" "$R/protect_$d.log"; then  # protections done: one process per victim
    for v in $VICTIMS; do
      defenses=(); [ "$v" = unet ] || defenses=(--defenses)
      timeout "$PHASE2" $S --datasets "$d" --victims "$v" "${defenses[@]}" --out "$R/study_${d}_$v" \
        >"$R/train_${d}_$v.log" 2>&1 &
    done
  else  # unfinished: one process finishes them and trains what it can (no two writers in one folder)
    timeout "$PHASE2" $S --datasets "$d" --out "$R/study_${d}_all" >"$R/train_${d}_all.log" 2>&1 &
  fi
done
wait
echo "phase 2 (training) and sweep: $((SECONDS - start)) s"
for f in "$R"/*.log; do echo "== $f"; tail -n 3 "$f"; done
tar czf "$OUT/gpu_study.tar.gz" -C "$R" --exclude='*.safetensors' . && ls -la "$OUT"
