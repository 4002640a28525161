#!/usr/bin/env bash
# Dataset004 (liver only, Dataset002's split): a victim schedule that fits its training data, positive
# controls, the default protector and a protector fitted with the gradient-alignment objective.
# 2-core CPU; run from the repository root after `python benchmarks/prepare_data.py --only 004`.
set -euo pipefail
D=benchmarks/data/nnUNet_raw/Dataset004_TotalSegCTLiver
W=benchmarks/data/liver
R=benchmarks/results/liver
V="--victim unet-small --optimizer adam --learning-rate 0.003 --epochs 5 --iterations 100 --batch-size 8 --patch-size 96 --device cpu"
mkdir -p $W
python benchmarks/fixed_patterns.py $D $W --patterns checker
python benchmarks/augmentation_probe.py $D $W/checker -o $R/checker_no_aug.json $V
umedprotect evaluate $D $W/checker -o $R/checker.json $V
umedprotect protect-dataset $D -o $W/default --no-progress --overwrite
umedprotect evaluate $D $W/default -o $R/default.json $V
umedprotect fit $D -o $W/alignment.safetensors --objective alignment --steps 200 --pretrain-steps 200 \
  --batch-size 8 --patch-size 64 --device cpu --history $R/alignment_fit.json --overwrite
umedprotect protect-dataset $D -o $W/alignment --protector $W/alignment.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/alignment -o $R/alignment.json $V
# Gradient alignment, longer (at commit ec7d6c2: clean and protected patches share each augmentation draw)
umedprotect fit $D -o $W/alignment600.safetensors --objective alignment --steps 600 --pretrain-steps 200 \
  --batch-size 8 --patch-size 64 --device cpu --history $R/alignment600_fit.json --overwrite
umedprotect protect-dataset $D -o $W/alignment600 --protector $W/alignment600.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/alignment600 -o $R/alignment600.json $V
# Fixed pattern "dim" (-budget in the liver, +budget in a 3-pixel ring around it)
python benchmarks/fixed_patterns.py $D $W --patterns dim
umedprotect evaluate $D $W/dim -o $R/dim.json $V
# The short victim of the augmentation probe (unet, SGD, 8 x 20 iterations, no augmentation) on Dataset002 with the checkerboard
D2=benchmarks/data/nnUNet_raw/Dataset002_TotalSegCT
python benchmarks/fixed_patterns.py $D2 $W/d2 --patterns checker
python benchmarks/augmentation_probe.py $D2 $W/d2/checker -o $R/d2_checker_no_aug_short_victim.json --device cpu
# UMed's own min-min objective, fitted on Dataset004 with the CT-normalised victim view (commit ec7d6c2 or later)
umedprotect fit $D -o $W/minmin.safetensors --steps 400 --min-steps 400 --batch-size 8 --patch-size 64 --device cpu \
  --history $R/minmin_fit.json --overwrite
umedprotect protect-dataset $D -o $W/minmin --protector $W/minmin.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/minmin -o $R/minmin.json $V
# Fixed isotropic band-pass texture (blobs), fourth session
python benchmarks/fixed_patterns.py $D $W --patterns blobs
umedprotect evaluate $D $W/blobs -o $R/blobs.json $V
