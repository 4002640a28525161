# H200 (device machine, 16 CPU cores), commit db8fb0e,
# carry: .whl and benchmarks/data/nnUNet_raw/Dataset00{1,2,3}_*. Three calls on the same warm machine:
# 1. the prepared script (per-dataset protection, per-victim training, epsilon sweep 8 and 16):
bash benchmarks/gpu_study.sh 2>&1 | tee $OUT/gpu_study.log                     # 501 s
# 2. the defense runs of unet, one process per dataset and defense (the first call's time ran out first):
R=/tmp/gpu_study; for d in 001 002 003; do for x in blur bitdepth jpeg downup strong-aug mix-clean; do
  o=$R/def_${d}_$x; mkdir -p $o; cp $R/study_${d}_unet/results.json $o/
  timeout 250 python3 benchmarks/study.py --setting gpu --device cuda --resume --datasets $d --victims unet \
    --defenses $x --out $o & done; done; wait                                    # 127 s
# 3. the last unfinished plainconvunet/segresnet runs:
for d in 001 002 003; do for v in plainconvunet segresnet; do
  timeout 140 python3 benchmarks/study.py --setting gpu --device cuda --resume --datasets $d --victims $v \
    --defenses --out $R/study_${d}_$v & done; done; wait                          # 60 s
# here: merge everything into this folder
python benchmarks/study.py --setting gpu --merge study_00?_protect study_00?_unet def_*/ study_00?_plainconvunet \
  study_00?_segresnet --out benchmarks/results/gpu
