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
#   from umedprotect.protector import load_protector, save_protector
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
python benchmarks/ct_statistics.py $D $W/default $W/minmin_blobs $W/minmin_blobs_stats $W/minmin_blobs_nooffset $W/dim $W/flat-dim $W/blobs > $R/ct_statistics.txt
# How far fitting moved the blob codes from their start (both files were fitted with --code-period 32)
python -c "
import sys, numpy as np
from safetensors.numpy import load_file
from umedprotect.protector import Protector, ProtectorConfig
start = Protector(ProtectorConfig(code_init='blobs', code_period=32)).codes.detach().numpy()
for path in sys.argv[1:]:
    codes = load_file(path)['codes']
    print(path, 'liver code vs its start: correlation %.4f' % np.corrcoef(codes[1].ravel(), start[1].ravel())[0, 1])
" $W/minmin_blobs.safetensors $W/minmin_blobs_stats.safetensors $W/minmin_blobs_nooffset.safetensors > $R/code_drift.txt
# Why Dataset004's ratios measure a domain gap: mean liver intensity of its training and test subjects
python -c "
import numpy as np
from umedprotect.nnunet import read_dataset
from umedprotect.slices import load_slices
dataset = read_dataset('benchmarks/data/nnUNet_raw/Dataset004_TotalSegCTLiver')
for name, cases in (('training', dataset.training), ('test', dataset.test)):
    liver = np.concatenate([s.image[s.labels > 0] for s in load_slices(cases)])
    print(f'Dataset004 {name} subject: liver mean {liver.mean():.0f} HU')
" > $R/dataset004_liver_intensity.txt
# --- Fifth session: how much budget does a blob texture need? ---
# Screening: only the protected victim is trained (the clean one, same seed and schedule, is the one above: best 0.868);
# one JSON line per run in screen.jsonl (mean per-slice PSNR, per-epoch test DSC, fit check, the victim's CT statistics).
# (The first eight lines were written by an identical earlier copy of the script, before it was committed.)
for a in "blobs 6" "swap-blobs 4" "swap-blobs 6" "blobs 8" "blobs 6 --seed 1" "blobs-large 6" "soft-blobs 8" "soft-blobs 10" \
         "blobs 8 --seed 1" "blobs 7" "sparse-blobs 10" "stretch 6" "stretch-blobs 6" "stretch-blobs 6 --seed 1" "blobs 7 --seed 1"; do
  python benchmarks/pattern_screen.py $D $W/screen $a >> $R/screen.jsonl
done
# The same blob change on the whole CT volume (one case instead of 43 slices): what a user protecting this scan would see
python - blobs:4 blobs:6 blobs:7 blobs:8 > $R/volume_psnr.txt <<'PY'
import sys
from pathlib import Path
import numpy as np, SimpleITK as sitk
sys.path[:0] = ["UMedProtect", "benchmarks"]
from fixed_patterns import pattern
from umedprotect.intensity import apply_change, intensity_window
from umedprotect.metrics import image_quality
src = Path("benchmarks/data/sources/totalsegmentator-2.18.0/tests/reference_files")
image = sitk.ReadImage(str(src / "example_ct.nii.gz"))
seg = sitk.Resample(sitk.ReadImage(str(src / "example_seg_fast_force_split.nii.gz")), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
array, liver = sitk.GetArrayFromImage(image), (sitk.GetArrayFromImage(seg) == 5).astype(np.uint8)
for name, eps in (arg.split(":") for arg in sys.argv[1:]):
    budget = intensity_window(array).budget(float(eps))
    q = image_quality(array, apply_change(array, pattern(name, liver, array / budget) * budget, budget))
    print(f"example_ct volume {array.shape}, {name} eps {eps}: budget {budget:.1f} HU, PSNR {q['psnr_db']:.2f} dB, "
          f"SSIM {q['ssim']:.5f}, max change {q['max_abs_change']:.1f} HU")
PY
# Min-min with blob codes and the offset penalty at epsilon 8/255 (fitted at that budget)
umedprotect fit $D -o $W/minmin_blobs_e8.safetensors --epsilon 8 --codes blobs --code-period 32 --texture-floor 1 --offset-weight 10 \
  --steps 300 --min-steps 300 --batch-size 8 --patch-size 64 --device cpu --history $R/minmin_blobs_e8_fit.json --overwrite
umedprotect protect-dataset $D -o $W/minmin_blobs_e8 --protector $W/minmin_blobs_e8.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/minmin_blobs_e8 -o $R/minmin_blobs_e8.json $V
# ... the same protector on the whole CT volume (liver mask from TotalSegmentator's reference segmentation), with heatmap and report
S=benchmarks/data/sources/totalsegmentator-2.18.0/tests/reference_files
python -c "
import SimpleITK as sitk, sys
image = sitk.ReadImage(sys.argv[1]); seg = sitk.Resample(sitk.ReadImage(sys.argv[2]), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
sitk.WriteImage(sitk.Cast(seg == 5, sitk.sitkUInt8), sys.argv[3])" $S/example_ct.nii.gz $S/example_seg_fast_force_split.nii.gz $W/example_ct_liver.nii.gz
umedprotect protect $S/example_ct.nii.gz $W/example_ct_liver.nii.gz -o $W/example_ct_minmin_e8.nii.gz --protector $W/minmin_blobs_e8.safetensors \
  --report $R/example_ct_minmin_e8.json --heatmap $R/example_ct_minmin_e8.png --device cpu --overwrite
# The shipped default protector at epsilon 8/255
umedprotect protect-dataset $D -o $W/default_e8 --epsilon 8 --no-progress --overwrite
umedprotect evaluate $D $W/default_e8 -o $R/default_e8.json $V
# The shipped default protector since the fifth session: blob codes and the offset penalty, fitted on the CPU on the
# training splits of Dataset001/002/003 (not on Dataset005), then copied to UMedProtect/UMedProtectLib/data/default_protector.safetensors
N=benchmarks/data/nnUNet_raw
umedprotect fit $N/Dataset001_PyradiomicsLesions $N/Dataset002_TotalSegCT $N/Dataset003_TotalSegMR -o $W/default_blobs.safetensors \
  --codes blobs --code-period 32 --texture-floor 1 --offset-weight 10 --steps 600 --min-steps 600 --batch-size 8 --patch-size 64 \
  --device cpu --history $R/default_blobs_fit.json --overwrite
umedprotect protect-dataset $D -o $W/default_blobs_e8 --protector $W/default_blobs.safetensors --epsilon 8 --no-progress --overwrite
umedprotect evaluate $D $W/default_blobs_e8 -o $R/default_blobs_e8.json $V
# The fitted protector with a per-case visibility floor of 50 dB (the perturbation scaled down where a slice would fall below),
# two victim seeds
umedprotect protect-dataset $D -o $W/minmin_blobs_e8_psnr50 --protector $W/minmin_blobs_e8.safetensors --min-psnr 50 --no-progress --overwrite
umedprotect evaluate $D $W/minmin_blobs_e8_psnr50 -o $R/minmin_blobs_e8_psnr50.json $V --seed 0 1
# The new default protector at the default budget (4/255)
umedprotect protect-dataset $D -o $W/default_blobs_e4 --protector $W/default_blobs.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/default_blobs_e4 -o $R/default_blobs_e4.json $V
# The fitted protector at 8/255 with a second victim seed
umedprotect evaluate $D $W/minmin_blobs_e8 -o $R/minmin_blobs_e8_seed1.json $V --seed 1
# The fitted protector with a 1-pixel contour band (less change outside the organ), two victim seeds
umedprotect fit $D -o $W/minmin_blobs_e8_band1.safetensors --epsilon 8 --band-radius 1 --codes blobs --code-period 32 --texture-floor 1 \
  --offset-weight 10 --steps 300 --min-steps 300 --batch-size 8 --patch-size 64 --device cpu --history $R/minmin_blobs_e8_band1_fit.json --overwrite
umedprotect protect-dataset $D -o $W/minmin_blobs_e8_band1 --protector $W/minmin_blobs_e8_band1.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/minmin_blobs_e8_band1 -o $R/minmin_blobs_e8_band1.json $V --seed 0 1
