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
