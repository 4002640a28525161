#!/usr/bin/env bash
# By-subject check of the 8/255 result: Dataset004 (liver; train example_ct_sm, test the
# contrast-enhanced DICOM subject resampled to 3 mm). With nnU-Net's CT normalisation the clean
# victim reaches only 0.34 there (the test liver is 44 HU brighter, outside the clip range), so the
# victims here z-score each case (`--normalisation zscore`), an attacker's choice that generalises
# across contrast phases. Same victim schedule as Dataset005's. 2-core CPU; run from the repository
# root after `python benchmarks/prepare_data.py --only 004`.
set -euo pipefail
D=benchmarks/data/nnUNet_raw/Dataset004_TotalSegCTLiver
W=benchmarks/data/subject
R=benchmarks/results/subject
V="--victim unet-small --optimizer adam --learning-rate 0.003 --epochs 5 --iterations 100 --batch-size 8 --patch-size 96 --device cpu --normalisation zscore"
mkdir -p $W
# Fixed blobs at 8/255 (the screening's strongest fixed texture)
python benchmarks/fixed_patterns.py $D $W --patterns blobs --epsilon 8
umedprotect evaluate $D $W/blobs -o $R/blobs_e8.json $V --seed 0 1
# UMed min-min fitted on this training subject at 8/255 (the Dataset005 recipe)
umedprotect fit $D -o $W/minmin_blobs_e8.safetensors --epsilon 8 --codes blobs --code-period 32 --texture-floor 1 \
  --offset-weight 10 --steps 300 --min-steps 300 --batch-size 8 --patch-size 64 --device cpu --history $R/minmin_blobs_e8_fit.json --overwrite
umedprotect protect-dataset $D -o $W/minmin_blobs_e8 --protector $W/minmin_blobs_e8.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/minmin_blobs_e8 -o $R/minmin_blobs_e8.json $V --seed 0 1
