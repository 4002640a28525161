# 2-core CPU, commit 7ea946c; D=benchmarks/data/nnUNet_raw
umedprotect fit $D/Dataset003_TotalSegMR -o mr_t.safetensors --objective targeted --pretrain-steps 200 --steps 200 \
  --batch-size 8 --patch-size 64 --device cpu --history mr_t_hist.json
umedprotect protect-dataset $D/Dataset003_TotalSegMR -o MRT --protector mr_t.safetensors --device cpu --no-progress
umedprotect evaluate $D/Dataset003_TotalSegMR MRT --epochs 12 --iterations 25 --batch-size 8 --patch-size 64 --device cpu -o mr_t_eval.json
