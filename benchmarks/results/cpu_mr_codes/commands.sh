# 2-core CPU, commit 48b9a93; D=benchmarks/data/nnUNet_raw
umedprotect fit $D/Dataset003_TotalSegMR -o mr.safetensors --steps 300 --min-steps 300 --batch-size 8 --patch-size 64 \
  --device cpu --history mr_hist.json
umedprotect protect-dataset $D/Dataset003_TotalSegMR -o MRP --protector mr.safetensors --device cpu --no-progress
umedprotect evaluate $D/Dataset003_TotalSegMR MRP --epochs 12 --iterations 25 --batch-size 8 --patch-size 64 --device cpu -o mr_eval.json
