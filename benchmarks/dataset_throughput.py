"""Throughput of ``umedprotect protect-dataset`` with 1 and more worker processes on this machine.

Writes an nnU-Net v2 raw dataset of synthetic CT-like volumes (int16 HU, a body ellipse, organ and
lesion labels; 256x256x40 by default), protects it with each ``--workers`` count through the
command line (process start included), checks the outputs are byte-identical, and records cases
per second, the scaling factor against one worker and the load average around each run (other
processes share the CPU).

    python -m benchmarks.dataset_throughput [--cases 20] [--shape 40 256 256] [--workers 1 2]
        [-o benchmarks/results/dataset_throughput.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


def write_dataset(root: Path, n_cases: int, shape: tuple[int, int, int]) -> Path:
    """``n_cases`` CT-like training cases: noisy soft tissue in air, an organ (label 1) holding a lesion (label 2)."""
    z, y, x = shape
    zz, yy, xx = np.mgrid[0:z, 0:y, 0:x].astype(np.float32)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for k in range(n_cases):
        rng = np.random.default_rng(k)
        image = rng.normal(40, 15, shape).astype(np.float32)
        body = ((yy - y / 2) / (0.42 * y)) ** 2 + ((xx - x / 2) / (0.46 * x)) ** 2 <= 1
        image[~body] = -1000
        centre = np.array([z / 2, y * rng.uniform(0.4, 0.5), x * rng.uniform(0.5, 0.6)])
        radii = np.array([z * 0.35, y * 0.15, x * 0.18]) * rng.uniform(0.8, 1.2)
        organ = (
            ((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 + ((xx - centre[2]) / radii[2]) ** 2
        ) <= 1
        lesion = (
            ((zz - centre[0]) / (radii[0] / 3)) ** 2
            + ((yy - centre[1]) / (radii[1] / 3)) ** 2
            + ((xx - centre[2]) / (radii[2] / 3)) ** 2
        ) <= 1
        image[organ] += 60
        image[lesion] -= 30
        labels = organ.astype(np.uint8) + lesion.astype(np.uint8)
        for array, path in (
            (image.astype(np.int16), f"imagesTr/case{k:03d}_0000.nii.gz"),
            (labels, f"labelsTr/case{k:03d}.nii.gz"),
        ):
            volume = sitk.GetImageFromArray(array)
            volume.SetSpacing((0.8, 0.8, 2.5))
            sitk.WriteImage(volume, str(root / path), useCompression=True)
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def protect(source: Path, out: Path, workers: int) -> dict:
    """One ``protect-dataset`` run: wall time, load average before and after, the outputs' hashes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "UMedProtect")}
    command = [
        sys.executable,
        "-m",
        "umedprotect.cli",
        "protect-dataset",
        str(source),
        "-o",
        str(out),
        "--workers",
        str(workers),
        "--no-progress",
    ]
    load_before = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    manifest = json.loads((out / "umedprotect_manifest.json").read_text())
    hashes = {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.nii.gz"))
    }
    return {
        "workers": workers,
        "wall_seconds": round(seconds, 2),
        "cases_per_second": round(len(manifest["cases"]) / seconds, 3),
        "mean_case_seconds_in_worker": round(np.mean([c["seconds"] for c in manifest["cases"].values()]), 3),
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "outputs_sha256": hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--workers", type=int, nargs="+", default=(1, 2))
    parser.add_argument("-o", "--output", default="benchmarks/results/dataset_throughput.json")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = write_dataset(Path(tmp) / "Dataset900_Throughput", args.cases, tuple(args.shape))
        runs = [protect(source, Path(tmp) / f"workers{n}", n) for n in args.workers]
    base = runs[0]["cases_per_second"]
    for run in runs:
        run["scaling_vs_first"] = round(run["cases_per_second"] / base, 2)
    result = {
        "command": " ".join(["python -m benchmarks.dataset_throughput", *sys.argv[1:]]),
        "commit": commit.stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "cases": args.cases,
        "shape_zyx": list(args.shape),
        "outputs_identical": len({run["outputs_sha256"] for run in runs}) == 1,
        "runs": runs,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
