#!/usr/bin/env bash
# Sixth session: contour-following rings (Dataset005, same victim as commands.sh). 2-core CPU; run from
# the repository root after `python benchmarks/prepare_data.py --only 005`.
# The protector runs before the "new default protector" block ran before commit 7a423f8 (crops clipped to their own
# intensity range, generators initialised at random); rerun now, they give different numbers.
set -euo pipefail
D=benchmarks/data/nnUNet_raw/Dataset005_TotalSegCTLiverBlocks
W=benchmarks/data/liver5
R=benchmarks/results/liver5
V="--victim unet-small --optimizer adam --learning-rate 0.003 --epochs 5 --iterations 100 --batch-size 8 --patch-size 96 --device cpu"
mkdir -p $W
# Screening (as in commands.sh): fixed rings, finer blobs
for a in "rings 6" "blobs-fine 6" "rings 7" "rings 6 --seed 1"; do
  python benchmarks/pattern_screen.py $D $W/screen $a >> $R/screen.jsonl
done
# UMed min-min with ring codes, fitted here at 6/255 with a 1-pixel contour band; two victim seeds
umedprotect fit $D -o $W/minmin_rings_e6.safetensors --epsilon 6 --band-radius 1 --codes rings --code-period 6 --texture-floor 1 \
  --offset-weight 10 --steps 300 --min-steps 300 --batch-size 8 --patch-size 64 --device cpu --history $R/minmin_rings_e6_fit.json --overwrite
umedprotect protect-dataset $D -o $W/minmin_rings_e6 --protector $W/minmin_rings_e6.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/minmin_rings_e6 -o $R/minmin_rings_e6.json $V --seed 0 1
# The ring codes alone: a protector with ring codes whose generators are left at their seeded initialisation (not
# fitted), 6/255, 1-pixel band -- the product path (protect-dataset) for the fixed rings pattern
python -c "
import sys; sys.path.insert(0, 'UMedProtect')
import torch
from umedprotect.protector import Protector, ProtectorConfig, save_protector
torch.manual_seed(0)
config = ProtectorConfig(epsilon=6.0, band_radius=1, texture_floor=1.0, code_init='rings', code_period=6,
                         training={'fitted': False, 'note': 'ring codes, generators at their seeded initialisation'})
save_protector(Protector(config), '$W/rings_unfitted_e6.safetensors')"
umedprotect protect-dataset $D -o $W/rings_unfitted_e6 --protector $W/rings_unfitted_e6.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/rings_unfitted_e6 -o $R/rings_unfitted_e6.json $V --seed 0 1
# The same ring protector without its contour band (--band-radius 0: the texture perturbator covers the whole ROI, nothing
# changes outside it), victim seed 1
umedprotect protect-dataset $D -o $W/rings_unfitted_e6_band0 --protector $W/rings_unfitted_e6.safetensors --band-radius 0 --no-progress --overwrite
umedprotect evaluate $D $W/rings_unfitted_e6_band0 -o $R/rings_unfitted_e6_band0_seed1.json $V --seed 1
# UMed min-min with ring codes and the generators bounded below the codes (--generator-gain 1), fitted here at 6/255
# with a 1-pixel contour band; two victim seeds
umedprotect fit $D -o $W/minmin_rings_g1_e6.safetensors --epsilon 6 --band-radius 1 --codes rings --code-period 6 --texture-floor 1 \
  --generator-gain 1 --offset-weight 10 --steps 300 --min-steps 300 --batch-size 8 --patch-size 64 --device cpu \
  --history $R/minmin_rings_g1_e6_fit.json --overwrite
umedprotect protect-dataset $D -o $W/minmin_rings_g1_e6 --protector $W/minmin_rings_g1_e6.safetensors --no-progress --overwrite
umedprotect evaluate $D $W/minmin_rings_g1_e6 -o $R/minmin_rings_g1_e6.json $V --seed 0 1
# A default candidate with ring codes (fitted on the CPU on Dataset001-003 as the blob-coded default, config budget 4/255,
# 1-pixel band, generators bounded to +-0.25), measured here at 6/255. Run at commit 4857760 (before the two fixes of
# commit 7a423f8: crops clipped to their own range, randomly initialised generator heads); stopped after victim seed 0
# (best 0.356, log in default_rings_e6_seed0_stopped.log)
N=benchmarks/data/nnUNet_raw
#   umedprotect fit $N/Dataset001_PyradiomicsLesions $N/Dataset002_TotalSegCT $N/Dataset003_TotalSegMR -o $W/default_rings.safetensors \
#     --band-radius 1 --codes rings --code-period 6 --texture-floor 1 --generator-gain 0.25 --offset-weight 10 --steps 600 \
#     --min-steps 600 --batch-size 8 --patch-size 64 --device cpu --history $R/default_rings_fit.json --overwrite
#   umedprotect protect-dataset $D -o $W/default_rings_e6 --protector $W/default_rings.safetensors --epsilon 6 --no-progress --overwrite
#   umedprotect evaluate $D $W/default_rings_e6 -o $R/default_rings_e6.json $V --seed 0 1
# The new default protector (after those fixes): ring codes, generators starting at zero and bounded to +-0.25, no offset
# penalty (the rings' own mean would be penalised), 1-pixel band; copied to UMedProtect/UMedProtectLib/data/default_protector.safetensors
umedprotect fit $N/Dataset001_PyradiomicsLesions $N/Dataset002_TotalSegCT $N/Dataset003_TotalSegMR -o $W/default_rings2.safetensors \
  --band-radius 1 --codes rings --code-period 6 --texture-floor 1 --generator-gain 0.25 --steps 600 --min-steps 600 \
  --batch-size 8 --patch-size 64 --device cpu --history $R/default_rings2_fit.json --overwrite
umedprotect protect-dataset $D -o $W/default_rings2_e6 --protector $W/default_rings2.safetensors --epsilon 6 --no-progress --overwrite
umedprotect evaluate $D $W/default_rings2_e6 -o $R/default_rings2_e6.json $V --seed 0 1
# (then benchmarks/results/subject/commands.sh, the by-subject check)
# The whole CT volume protected with the ring protector (per volume and per changed slice; heatmap)
S=benchmarks/data/sources/totalsegmentator-2.18.0/tests/reference_files
umedprotect protect $S/example_ct.nii.gz $W/example_ct_liver.nii.gz -o $W/example_ct_rings_e6.nii.gz --protector $W/rings_unfitted_e6.safetensors \
  --report $R/example_ct_rings_e6.json --heatmap $R/example_ct_rings_e6.png --device cpu --overwrite
# The shipped default protector since the sixth session: ring codes, not fitted (--steps 0: min-min fitting weakened the
# rings in every run above); copied to UMedProtect/UMedProtectLib/data/default_protector.safetensors
umedprotect fit $N/Dataset001_PyradiomicsLesions $N/Dataset002_TotalSegCT $N/Dataset003_TotalSegMR -o $W/default_rings0.safetensors \
  --codes rings --code-period 6 --texture-floor 1 --steps 0 --device cpu --overwrite
# How closely a ring protector draws the fixed rings (after commit 7a423f8): its change against fixed_patterns.py's on
# every training slice (correlation inside the liver, energy ratio, share of identical pixels, mean PSNR)
python - $W/default_rings0.safetensors $W/rings_unfitted_e6.safetensors $W/default_rings2.safetensors > $R/rings_protector_vs_fixed.txt <<'PY'
import glob, sys
import numpy as np, SimpleITK as sitk
sys.path[:0] = ["UMedProtect"]
from umedprotect.protector import load_protector
from umedprotect.array_protection import protect_array
D, W = "benchmarks/data/nnUNet_raw/Dataset005_TotalSegCTLiverBlocks", "benchmarks/data/liver5"
read = lambda path: sitk.GetArrayFromImage(sitk.ReadImage(path)).squeeze()
for name in sys.argv[1:]:
    protector = load_protector(name)
    corr, energy, same, psnr, largest = [], [], [], [], 0.0
    for path in sorted(glob.glob(f"{D}/imagesTr/*.nii.gz")):
        image, labels = read(path), read(path.replace("imagesTr", "labelsTr").replace("_0000", ""))
        fixed = read(path.replace(D, f"{W}/screen/rings_e6")).astype(float) - image
        result = protect_array(image, labels, protector, epsilon=6, device="cpu")
        change, roi = result.change.astype(float), labels > 0
        if roi.sum() > 20:
            corr.append(np.corrcoef(change[roi], fixed[roi])[0, 1])
        energy.append((change[roi] ** 2).sum() / (fixed[roi] ** 2).sum())
        same.append((change == fixed).mean())
        psnr.append(result.metrics["psnr_db"])
        largest = max(largest, float(np.abs(change - fixed).max()))
    print(f"{name}: correlation {np.nanmean(corr):.4f}, energy ratio {np.mean(energy):.3f}, identical pixels "
          f"{np.mean(same):.4f}, largest difference {largest:.0f} HU, mean PSNR {np.mean(psnr):.2f} dB")
PY
# The shipped default (ring codes, not fitted) at 6/255, two victim seeds
umedprotect protect-dataset $D -o $W/default_rings0_e6 --epsilon 6 --no-progress --overwrite
umedprotect evaluate $D $W/default_rings0_e6 -o $R/default_rings0_e6.json $V --seed 0 1
# Where fitting moved the ring codes (label 1's profile over depths 0-5; the start is 3*sin(2*pi*(k-1/2)/6))
python - $W/minmin_rings_e6.safetensors $W/minmin_rings_g1_e6.safetensors $W/default_rings.safetensors $W/default_rings2.safetensors \
  > $R/rings_code_drift.txt <<'PY'
import sys
sys.path[:0] = ["UMedProtect"]
from umedprotect.protector import load_protector, ring_codes
print("start:", [round(v, 2) for v in ring_codes(2, 6)[1].tolist()])
for path in sys.argv[1:]:
    codes = load_protector(path).codes.detach()
    print(f"{path}: label 1 {[round(v, 2) for v in codes[1].tolist()]}, mean {codes[1].mean():.2f}, "
          f"background at depth 0 {codes[0, 0]:.2f}")
PY
