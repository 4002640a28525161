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
# (stopped after victim seed 0 for lack of time: rings_e6_seed0_stopped.log). Mean PSNR of the protected training slices:
python -c "
import sys; sys.path.insert(0, 'UMedProtect')
from umedprotect_eval.evaluation import load_evaluation_data
q = load_evaluation_data('$D', '$W/rings').quality
print(f'mean PSNR {q[\"psnr_db_mean\"]:.2f} dB, mean SSIM {q[\"ssim_mean\"]:.4f}, max change {q[\"max_abs_change\"]:.0f}')" > $R/rings_e6_quality.txt
# Subject or normalisation? The fixed rings at 6/255 on Dataset005 (same subject) with z-scoring victims, seed 0
# (the rings copy from benchmarks/results/liver5/rings.sh's screening)
D5=benchmarks/data/nnUNet_raw/Dataset005_TotalSegCTLiverBlocks
umedprotect evaluate $D5 benchmarks/data/liver5/screen/rings_e6 -o $R/dataset005_rings_e6_zscore.json $V --seed 0
