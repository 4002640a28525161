#!/usr/bin/env bash
# Dataset005 (liver of one CT subject, split by slice blocks): no change of subject or contrast phase
# between train and test, so the clean victim generalises (test DSC 0.87) and the ratio measures the
# protection. Same victim as benchmarks/results/liver. 2-core CPU; run from the repository root after
# `python benchmarks/prepare_data.py --only 005`.
set -euo pipefail
D=benchmarks/data/nnUNet_raw/Dataset005_TotalSegCTLiverBlocks
W=benchmarks/data/liver5
R=benchmarks/results/liver5
V="--victim unet-small --optimizer adam --learning-rate 0.003 --epochs 5 --iterations 100 --batch-size 8 --patch-size 96 --device cpu"
mkdir -p $W
python benchmarks/fixed_patterns.py $D $W --patterns flat-dim dim checker
umedprotect protect-dataset $D -o $W/default --no-progress --overwrite
for n in flat-dim default dim checker; do
  umedprotect evaluate $D $W/$n -o $R/$n.json $V
done
# Historical, run at commit a904453 (the tone option is gone since): the shipped default protector
# with a tone of 3 set in its config (weights unchanged), and min-min fitted with a tone of 3.
#   python -c "
#   from UMedProtectLib.protector import load_protector, save_protector
#   p = load_protector(); p.config.tone = 3.0; p.config.training['tone_set_after_fitting'] = 3.0
#   save_protector(p, '$W/default_tone3.safetensors')"
#   umedprotect protect-dataset $D -o $W/default_tone3 --protector $W/default_tone3.safetensors --no-progress --overwrite
#   umedprotect evaluate $D $W/default_tone3 -o $R/default_tone3.json $V
#   umedprotect fit $D -o $W/minmin_tone3.safetensors --tone 3 --steps 400 --min-steps 400 --batch-size 8 --patch-size 64 --device cpu \
#     --history $R/minmin_tone3_fit.json --overwrite
#   umedprotect protect-dataset $D -o $W/minmin_tone3 --protector $W/minmin_tone3.safetensors --no-progress --overwrite
#   umedprotect evaluate $D $W/minmin_tone3 -o $R/minmin_tone3.json $V
# Fixed isotropic band-pass texture (blobs)
python benchmarks/fixed_patterns.py $D $W --patterns blobs
umedprotect evaluate $D $W/blobs -o $R/blobs.json $V
python benchmarks/fixed_patterns.py $D $W --patterns blobs-large dim-blobs
for n in blobs-large dim-blobs; do
  umedprotect evaluate $D $W/$n -o $R/$n.json $V
done
# Historical, run at commit bb01fcd (surrogate normalised with the clean statistics): min-min with blob codes
#   umedprotect fit $D -o $W/minmin_blobs.safetensors --codes blobs --code-period 32 --texture-floor 1 --steps 300 --min-steps 300 \
#     --batch-size 8 --patch-size 64 --device cpu --history $R/minmin_blobs_fit.json --overwrite
#   umedprotect protect-dataset $D -o $W/minmin_blobs --protector $W/minmin_blobs.safetensors --no-progress --overwrite
#   umedprotect evaluate $D $W/minmin_blobs -o $R/minmin_blobs.json $V
# the same with the surrogate's statistics following the perturbation (commit 4a64020 or later)
umedprotect fit $D -o $W/minmin_blobs_stats.safetensors --codes blobs --code-period 32 --texture-floor 1 --steps 300 --min-steps 300 \
  --batch-size 8 --patch-size 64 --device cpu --history $R/minmin_blobs_stats_fit.json --overwrite
umedprotect protect-dataset $D -o $W/minmin_blobs_stats --protector $W/minmin_blobs_stats.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/minmin_blobs_stats -o $R/minmin_blobs_stats.json $V
# ... and with a penalty on a uniform shift of the ROI (--offset-weight 10)
umedprotect fit $D -o $W/minmin_blobs_nooffset.safetensors --codes blobs --code-period 32 --texture-floor 1 --offset-weight 10 \
  --steps 300 --min-steps 300 --batch-size 8 --patch-size 64 --device cpu --history $R/minmin_blobs_nooffset_fit.json --overwrite
umedprotect protect-dataset $D -o $W/minmin_blobs_nooffset --protector $W/minmin_blobs_nooffset.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/minmin_blobs_nooffset -o $R/minmin_blobs_nooffset.json $V
# The CT normalisation a victim derives from each training set (nnU-Net: foreground percentiles, mean, std)
python -c "
import sys
from UMedProtectLib.evaluation import ct_statistics
from UMedProtectLib.nnunet import read_dataset
from UMedProtectLib.slices import load_slices
for name in sys.argv[1:]:
    lo, hi, mean, std = ct_statistics(load_slices(read_dataset(name).training))
    print(f'{name}: clip {lo:.0f} .. {hi:.0f} HU, mean {mean:.1f}, std {std:.1f}')
" $D $W/default $W/minmin_blobs $W/minmin_blobs_stats $W/minmin_blobs_nooffset $W/dim $W/flat-dim $W/blobs > $R/ct_statistics.txt
# How far fitting moved the blob codes from their start (both files were fitted with --code-period 32)
python -c "
import sys, numpy as np
from safetensors.numpy import load_file
from UMedProtectLib.protector import Protector, ProtectorConfig
start = Protector(ProtectorConfig(code_init='blobs', code_period=32)).codes.detach().numpy()
for path in sys.argv[1:]:
    codes = load_file(path)['codes']
    print(path, 'liver code vs its start: correlation %.4f' % np.corrcoef(codes[1].ravel(), start[1].ravel())[0, 1])
" $W/minmin_blobs.safetensors $W/minmin_blobs_stats.safetensors $W/minmin_blobs_nooffset.safetensors > $R/code_drift.txt
# Why Dataset004's ratios measure a domain gap: mean liver intensity of its training and test subjects
python -c "
import numpy as np
from UMedProtectLib.nnunet import read_dataset
from UMedProtectLib.slices import load_slices
dataset = read_dataset('benchmarks/data/nnUNet_raw/Dataset004_TotalSegCTLiver')
for name, cases in (('training', dataset.training), ('test', dataset.test)):
    liver = np.concatenate([s.image[s.labels > 0] for s in load_slices(cases)])
    print(f'Dataset004 {name} subject: liver mean {liver.mean():.0f} HU')
" > $R/dataset004_liver_intensity.txt
