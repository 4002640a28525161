"""Speed benchmark: protect a 512x512x120 CT-like volume whose ROI spans 40 slices.

Reports, in one run: SimpleITK read + write time of the same volume, protection time (array level
and end to end through the CLI: read, protect, write), and peak resident memory of the CLI process.

    python -m benchmarks.speed [--device cpu|cuda] [--repeats 3] [-o benchmarks/results/speed.json]
"""

from __future__ import annotations

import argparse
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


def make_case(folder: Path) -> tuple[Path, Path]:
    """Synthetic int16 CT (HU) with a 40-slice ellipsoidal lesion, 0.7x0.7x2.5 mm, oblique direction."""
    rng = np.random.default_rng(0)
    z, y, x = 120, 512, 512
    image = rng.normal(40, 15, (z, y, x)).astype(np.int16)
    yy, xx = np.mgrid[0:y, 0:x]
    body = ((yy - 256) / 200.0) ** 2 + ((xx - 256) / 230.0) ** 2 <= 1
    image[:, ~body] = -1000
    labels = np.zeros((z, y, x), np.uint8)
    for k in range(40, 80):
        r = 60 * np.sqrt(max(1 - ((k - 59.5) / 21) ** 2, 0.05))
        lesion = ((yy - 230) ** 2 + (xx - 300) ** 2) <= r * r
        labels[k][lesion] = 1
        image[k][lesion] += 60
    ref = sitk.GetImageFromArray(image)
    ref.SetSpacing((0.7, 0.7, 2.5))
    ref.SetOrigin((-180.0, -170.0, -300.0))
    c, s = np.cos(0.1), np.sin(0.1)
    ref.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(ref)
    image_path, label_path = folder / "ct.nii.gz", folder / "ct_label.nii.gz"
    sitk.WriteImage(ref, str(image_path))
    sitk.WriteImage(lab, str(label_path))
    return image_path, label_path


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    import torch
    from umedprotect.array_protection import protect_array
    from umedprotect.protector import load_protector

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image_path, label_path = make_case(folder)
        io_times = []
        for _ in range(args.repeats):
            def read_write():
                img = sitk.ReadImage(str(image_path))
                sitk.WriteImage(img, str(folder / "copy.nii.gz"))
            io_times.append(timed(read_write))
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path)))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
        protector = load_protector()
        array_times = []
        for _ in range(args.repeats):
            array_times.append(
                timed(lambda: protect_array(image, labels, protector, spacing=(2.5, 0.7, 0.7), device=args.device))
            )
        cli_times, peaks = [], []
        for i in range(args.repeats):
            cmd = [
                sys.executable, "-c",
                "import resource,sys; from umedprotect.cli import main; rc=main(sys.argv[1:]); "
                "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)",
                "protect", str(image_path), str(label_path), "-o", str(folder / f"out{i}.nii.gz"), "--device", args.device,
            ]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            cli_times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            peaks.append(int(proc.stderr.split("PEAK_KB")[-1].split()[0]) / 1024)
    result = {
        "volume": "512x512x120 int16, ROI spanning 40 slices, spacing 0.7x0.7x2.5 mm",
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "sitk_read_write_s": round(min(io_times), 2),
        "protect_array_s": round(min(array_times), 2),
        "cli_end_to_end_s": round(min(cli_times), 2),
        "cli_peak_rss_mb": round(max(peaks), 0),
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
