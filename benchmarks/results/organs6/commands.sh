#!/usr/bin/env bash
# Dataset006 (eleventh session): Dataset005's images and split with all four organs labelled (liver, spleen, kidney,
# stomach) -- rings on every organ, and victims whose CT normalisation comes from the four organs' foreground.
# 2-core CPU; run from the repository root after `python benchmarks/prepare_data.py --only 005 006`.
set -euo pipefail
D=benchmarks/data/nnUNet_raw/Dataset006_TotalSegCTBlocks
W=benchmarks/data/organs6
R=benchmarks/results/organs6
mkdir -p $W
python benchmarks/ct_statistics.py $D benchmarks/data/nnUNet_raw/Dataset005_TotalSegCTLiverBlocks > $R/ct_statistics.txt
# The shipped default at Dataset005's budget (6.3/255): every slice held at >= 50 dB, and uncapped (the rings as strong
# per pixel as on Dataset005's liver, more pixels: mean 46.6 dB)
umedprotect protect-dataset $D -o $W/default_e6.3_psnr50 --epsilon 6.3 --min-psnr 50 --no-progress --overwrite
umedprotect protect-dataset $D -o $W/default_e6.3 --epsilon 6.3 --no-progress --overwrite
# The first-epoch race with nnU-Net's epoch length (250 iterations), seeds 0-5, the victims' own CT normalisation
for p in $W/default_e6.3_psnr50 $D $W/default_e6.3; do
  python benchmarks/first_epoch_race.py $D $p --iterations 250 --seeds 0 1 2 3 4 5 >> $R/race.jsonl
done
# The product's check, all five 250-iteration epochs (best epoch), seeds 0 and 1, the >= 50 dB protection
umedprotect evaluate $D $W/default_e6.3_psnr50 -o $R/default_e6.3_psnr50_250.json \
  --victim unet-small --optimizer adam --learning-rate 0.003 --epochs 5 --iterations 250 --batch-size 8 --patch-size 96 --device cpu --seed 0 1
# Far beyond the target: the default at 16/255, uncapped, the same race
umedprotect protect-dataset $D -o $W/default_e16 --epsilon 16 --no-progress --overwrite
python benchmarks/first_epoch_race.py $D $W/default_e16 --iterations 250 --seeds 0 1 2 3 4 5 >> $R/race.jsonl
# Rings that tell the organs apart (benchmarks/label_rings.py: sign flipped for every other label, and periods 6 / 10),
# every slice >= 50 dB, the same race
python benchmarks/label_rings.py $W
for v in sign_period sign; do
  umedprotect protect-dataset $D -o $W/rings_${v}_e6.3_psnr50 --protector $W/rings_$v.safetensors --epsilon 6.3 --min-psnr 50 \
    --no-progress --overwrite
  python benchmarks/first_epoch_race.py $D $W/rings_${v}_e6.3_psnr50 --iterations 250 --seeds 0 1 2 3 4 5 >> $R/race.jsonl
done
# Is it the clip range? The same four-organ victims normalised with the liver's statistics (Dataset005's: -20..81 HU,
# mean 45.2, std 15.3), the shipped default's rings, every slice >= 50 dB, and clean with the same statistics
for p in $W/default_e6.3_psnr50 $D; do
  python benchmarks/first_epoch_race.py $D $p --iterations 250 --seeds 0 1 2 3 4 5 \
    --ct-statistics -20 81 45.2 15.3 >> $R/race_ct_statistics.jsonl
done
# Both: the rings that tell the organs apart under the liver's statistics
python benchmarks/first_epoch_race.py $D $W/rings_sign_period_e6.3_psnr50 --iterations 250 --seeds 0 1 2 3 4 5 \
  --ct-statistics -20 81 45.2 15.3 >> $R/race_ct_statistics.jsonl
# Which organs: the same races again, now that the race gives each label's DSC (race_by_label.jsonl; same first_epoch)
for p in $W/default_e6.3_psnr50 $D; do
  python benchmarks/first_epoch_race.py $D $p --iterations 250 --seeds 0 1 2 3 4 5 \
    --ct-statistics -20 81 45.2 15.3 >> $R/race_by_label.jsonl
done
python benchmarks/first_epoch_race.py $D $W/default_e6.3_psnr50 --iterations 250 --seeds 0 1 2 3 4 5 >> $R/race_by_label.jsonl
python benchmarks/first_epoch_race.py $D $W/rings_sign_period_e6.3_psnr50 --iterations 250 --seeds 0 1 2 3 4 5 \
  --ct-statistics -20 81 45.2 15.3 >> $R/race_by_label.jsonl
# Rings on organs the victim counts as background: Dataset006's protected images (rings on all four organs, >= 50 dB)
# with Dataset005's liver-only labels; liver-only victims, their own CT normalisation (the liver's)
D5=benchmarks/data/nnUNet_raw/Dataset005_TotalSegCTLiverBlocks
rm -rf $W/liver_labels_all_rings && cp -r $D5 $W/liver_labels_all_rings && cp $W/default_e6.3_psnr50/imagesTr/* $W/liver_labels_all_rings/imagesTr/
python benchmarks/first_epoch_race.py $D5 $W/liver_labels_all_rings --iterations 250 --seeds 0 1 2 3 4 5 >> $R/race_by_label.jsonl
# The same uncapped (Dataset006 at 6.3/255, 46.6 dB: the liver's rings exactly as on Dataset005, plus rings on the others)
rm -rf $W/liver_labels_all_rings_e6.3 && cp -r $D5 $W/liver_labels_all_rings_e6.3 && cp $W/default_e6.3/imagesTr/* $W/liver_labels_all_rings_e6.3/imagesTr/
python benchmarks/first_epoch_race.py $D5 $W/liver_labels_all_rings_e6.3 --iterations 250 --seeds 0 1 2 3 4 5 >> $R/race_by_label.jsonl
# Check: inside the liver the uncapped change equals the shipped default's on Dataset005 at 6.3/255 (printed: 27920 of 27920)
umedprotect protect-dataset $D5 -o $W/dataset005_default_e6.3 --epsilon 6.3 --no-progress --overwrite
python - <<'PY'
import os, SimpleITK as sitk
d5, w = "benchmarks/data/nnUNet_raw/Dataset005_TotalSegCTLiverBlocks", "benchmarks/data/organs6"
read = lambda path: sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(int)
same = total = 0
for name in sorted(os.listdir(f"{d5}/imagesTr")):
    clean, liver = read(f"{d5}/imagesTr/{name}"), read(f"{d5}/labelsTr/{name.replace('_0000', '')}") > 0
    alone = read(f"{w}/dataset005_default_e6.3/imagesTr/{name}") - clean
    beside = read(f"{w}/liver_labels_all_rings_e6.3/imagesTr/{name}") - clean
    same, total = same + (alone[liver] == beside[liver]).sum(), total + liver.sum()
print(f"liver voxels with the same change: {same} of {total}")
PY
# The floor alone: Dataset005 (liver only, no other rings) with every slice held at >= 50 dB
umedprotect protect-dataset $D5 -o $W/dataset005_default_e6.3_psnr50 --epsilon 6.3 --min-psnr 50 --no-progress --overwrite
python benchmarks/first_epoch_race.py $D5 $W/dataset005_default_e6.3_psnr50 --iterations 250 --seeds 0 1 2 3 4 5 >> $R/race_by_label.jsonl
