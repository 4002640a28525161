#!/usr/bin/env bash
# By-subject check: Dataset004 (liver; train example_ct_sm, test the contrast-enhanced DICOM subject
# resampled to 3 mm). With nnU-Net's CT normalisation the clean victim reaches only 0.34 there (the
# test liver is 44 HU brighter, outside the clip range), so the victims here z-score each case
# (`--normalisation zscore`), an attacker's choice that generalises across contrast phases. Same
# victim schedule as Dataset005's. 2-core CPU; run from the repository root after
# `python benchmarks/prepare_data.py --only 004`.
set -euo pipefail
D=benchmarks/data/nnUNet_raw/Dataset004_TotalSegCTLiver
W=benchmarks/data/subject
R=benchmarks/results/subject
V="--victim unet-small --optimizer adam --learning-rate 0.003 --epochs 5 --iterations 100 --batch-size 8 --patch-size 96 --device cpu --normalisation zscore"
mkdir -p $W
# Fixed contour-following rings at 6/255
python benchmarks/fixed_patterns.py $D $W --patterns rings --epsilon 6
umedprotect evaluate $D $W/rings -o $R/rings_e6.json $V --seed 0 1
