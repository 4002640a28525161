set -e
export OMP_NUM_THREADS=2
U=/work/venv/bin/umedprotect
while pgrep -f provisional.py >/dev/null; do sleep 5; done
$U fit /work/main/benchmarks/data/nnUNet_raw/Dataset003_TotalSegMR -o mr.safetensors --steps 300 --min-steps 300 --batch-size 8 --patch-size 64 --device cpu --overwrite --history mr_hist.json 2>&1 | tr '\r' '\n' | tail -2
rm -rf MRP; $U protect-dataset /work/main/benchmarks/data/nnUNet_raw/Dataset003_TotalSegMR -o MRP --protector mr.safetensors --device cpu --no-progress
$U evaluate /work/main/benchmarks/data/nnUNet_raw/Dataset003_TotalSegMR MRP --epochs 12 --iterations 25 --batch-size 8 --patch-size 64 --device cpu -o mr_eval.json
