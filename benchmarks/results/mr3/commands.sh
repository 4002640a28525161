#!/usr/bin/env bash
# Dataset003 (MR, one subject, four organs; eleventh session): the shipped default against victims that z-score each
# case, as nnU-Net does for MR (dataset.json names the channel MR, so this is the victims' default normalisation).
# 2-core CPU; run from the repository root after `python benchmarks/prepare_data.py --only 003`.
set -euo pipefail
D=benchmarks/data/nnUNet_raw/Dataset003_TotalSegMR
W=benchmarks/data/mr3
R=benchmarks/results/mr3
mkdir -p $W
umedprotect protect-dataset $D -o $W/default_e6.3_psnr50 --epsilon 6.3 --min-psnr 50 --no-progress --overwrite
umedprotect protect-dataset $D -o $W/default_e16 --epsilon 16 --no-progress --overwrite
# Five 100-iteration epochs (Dataset005's evaluate schedule), seeds 0 and 1: clean, >= 50 dB, and 16/255 (36 dB)
for p in $D $W/default_e6.3_psnr50 $W/default_e16; do
  python benchmarks/first_epoch_race.py $D $p --seeds 0 1 --epochs 5 >> $R/race.jsonl
done
