# 2-core CPU, commit of "umedprotect fit: --surrogate-reset-every"; D=benchmarks/data/nnUNet_raw
umedprotect fit $D/Dataset003_TotalSegMR -o mr_r.safetensors --surrogate-reset-every 25 --steps 300 --min-steps 300 \
  --batch-size 8 --patch-size 64 --device cpu --history mr_r_hist.json
umedprotect protect-dataset $D/Dataset003_TotalSegMR -o MRR --protector mr_r.safetensors --device cpu --no-progress
umedprotect evaluate $D/Dataset003_TotalSegMR MRR --epochs 12 --iterations 25 --batch-size 8 --patch-size 64 --device cpu -o mr_r_eval.json
