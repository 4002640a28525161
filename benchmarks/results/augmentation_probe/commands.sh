# 2-core CPU, commit 8ed7df2; D=benchmarks/data/nnUNet_raw
umedprotect protect-dataset $D/Dataset002_TotalSegCT -o d2_default --no-progress      # shipped default protector
python benchmarks/augmentation_probe.py $D/Dataset002_TotalSegCT d2_default -o d2_default_no_aug.json --device cpu
# -> no augmentation: clean best 0.1998  protected best 0.2044  ratio 1.023
# positive-control attempt: the study's LSP-protected Dataset002 (benchmarks/data/study/small/Dataset002_TotalSegCT/lsp,
# written by `python benchmarks/study.py --setting small`)
python benchmarks/augmentation_probe.py $D/Dataset002_TotalSegCT benchmarks/data/study/small/Dataset002_TotalSegCT/lsp \
  -o d2_lsp_no_aug.json --device cpu
# -> no augmentation: clean best 0.1998  protected best 0.1929  ratio 0.966
