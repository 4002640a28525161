"""Speed benchmark of the ``umedprotect`` command (figures in docs/speed.md).

Measures, in one run and each as the best of ``--repeats``:

- instant commands: ``umedprotect --help`` and a "file not found" error, as a ratio to ``python -c pass``;
- a 512x512x120 int16 CT with a 40-slice ROI: SimpleITK read + write of the volume, protection of the
  arrays, and ``umedprotect protect`` end to end (read, protect, write) with its peak resident memory;
  targets: end to end <= 3x read + write, peak <= 1 GB;
- with ``--large``: a 512x512x1500 int16 whole-body volume with a 300-slice ROI, protected end to end in
  slabs; target: peak <= 4 GB. Synthetic data (noise), written to a temporary folder.

    python -m benchmarks.speed [--device cpu|cuda] [--repeats 3] [--large] [-o benchmarks/results/speed.json]
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

TARGET_RATIO = 3.0  # end to end / (read + write)
PEAK_LIMITS_MB = {"ct": 1024, "whole_body": 4096}
PEAK_REPORTER = (
    "import resource, sys; from umedprotect.cli import main; code = main(sys.argv[1:]); "
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def make_case(folder: Path, slices: int = 120, roi_slices: int = 40, name: str = "ct") -> tuple[Path, Path]:
    """Synthetic int16 CT (HU) with an ellipsoidal lesion over ``roi_slices`` central slices, 0.7x0.7x2.5 mm,
    oblique direction; built a few slices at a time (a whole-body volume is 0.8 GB of int16)."""
    rng = np.random.default_rng(0)
    y, x = 512, 512
    yy, xx = np.mgrid[0:y, 0:x]
    body = ((yy - 256) / 200.0) ** 2 + ((xx - 256) / 230.0) ** 2 <= 1
    image = np.empty((slices, y, x), np.int16)
    labels = np.zeros((slices, y, x), np.uint8)
    first = (slices - roi_slices) // 2
    centre, half = first + (roi_slices - 1) / 2, roi_slices / 2 + 1
    for start in range(0, slices, 50):
        stop = min(start + 50, slices)
        image[start:stop] = rng.normal(40, 15, (stop - start, y, x)).astype(np.int16)
        image[start:stop, ~body] = -1000
    for k in range(first, first + roi_slices):
        r = 60 * np.sqrt(max(1 - ((k - centre) / half) ** 2, 0.05))
        lesion = ((yy - 230) ** 2 + (xx - 300) ** 2) <= r * r
        labels[k][lesion] = 1
        image[k][lesion] += 60
    reference = sitk.GetImageFromArray(image)
    del image
    reference.SetSpacing((0.7, 0.7, 2.5))
    reference.SetOrigin((-180.0, -170.0, -300.0))
    c, s = np.cos(0.1), np.sin(0.1)
    reference.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(reference)
    image_path, label_path = folder / f"{name}.nii.gz", folder / f"{name}_label.nii.gz"
    sitk.WriteImage(reference, str(image_path), useCompression=True)
    sitk.WriteImage(mask, str(label_path), useCompression=True)
    return image_path, label_path


def best_time(command: list[str], repeats: int, expect: int = 0) -> float:
    """Fastest wall time of ``command`` (a fresh process each time); it must exit with ``expect``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != expect:
            raise SystemExit(f"{' '.join(command)}: exit {proc.returncode}\n{proc.stderr}")
    return min(times)


def protect_end_to_end(image: Path, labels: Path, output: Path, device: str, repeats: int) -> tuple[float, float]:
    """Fastest ``umedprotect protect`` wall time (s) and its largest peak resident memory (MB)."""
    times, peaks = [], []
    for _ in range(repeats):
        command = [
            sys.executable,
            "-c",
            PEAK_REPORTER,
            "protect",
            str(image),
            str(labels),
            "-o",
            str(output),
            "--device",
            device,
            "--overwrite",
        ]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        peaks.append(int(proc.stderr.split("PEAK_KB")[-1].split()[0]) / 1024)
    return min(times), max(peaks)


def read_write_time(image: Path, folder: Path, repeats: int) -> float:
    """Fastest SimpleITK read + compressed write of ``image``: the I/O floor of a protection run."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sitk.WriteImage(sitk.ReadImage(str(image)), str(folder / f"copy{''.join(image.suffixes)}"), useCompression=True)
        times.append(time.perf_counter() - start)
    return min(times)


def instant_commands(folder: Path, repeats: int) -> dict:
    """``--help`` and a file-not-found error against an empty interpreter start."""
    python = best_time([sys.executable, "-c", "pass"], repeats)
    help_s = best_time([sys.executable, "-m", "umedprotect.cli", "--help"], repeats)
    missing = [
        sys.executable,
        "-m",
        "umedprotect.cli",
        "protect",
        str(folder / "missing.nii.gz"),
        str(folder / "missing_label.nii.gz"),
        "-o",
        str(folder / "never.nii.gz"),
    ]
    error_s = best_time(missing, repeats, expect=2)
    return {
        "python_pass_s": round(python, 3),
        "help_s": round(help_s, 3),
        "file_not_found_s": round(error_s, 3),
        "help_ratio": round(help_s / python, 1),
        "file_not_found_ratio": round(error_s / python, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="also the 512x512x1500 whole-body volume (slow)")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    import torch

    from umedprotect.array_protection import protect_array
    from umedprotect.protector_file import read_protector_file

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads(),
            "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        },
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result["instant"] = instant_commands(folder, max(args.repeats, 5))
        image_path, label_path = make_case(folder)
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path)))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
        protector = read_protector_file()
        array_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            protect_array(image, labels, protector, spacing=(2.5, 0.7, 0.7), device=args.device)
            array_times.append(time.perf_counter() - start)
        del image, labels
        io_s = read_write_time(image_path, folder, args.repeats)
        cli_s, peak = protect_end_to_end(image_path, label_path, folder / "out.nii.gz", args.device, args.repeats)
        result["ct"] = {
            "volume": "512x512x120 int16, ROI over 40 slices, spacing 0.7x0.7x2.5 mm",
            "sitk_read_write_s": round(io_s, 2),
            "protect_array_s": round(min(array_times), 2),
            "cli_end_to_end_s": round(cli_s, 2),
            "end_to_end_over_read_write": round(cli_s / io_s, 2),
            "cli_peak_rss_mb": round(peak),
            "targets_met": cli_s / io_s <= TARGET_RATIO and peak <= PEAK_LIMITS_MB["ct"],
        }
        print(json.dumps(result, indent=2), flush=True)
        if args.large:
            image_path, label_path = make_case(folder, slices=1500, roi_slices=300, name="whole_body")
            io_s = read_write_time(image_path, folder, 1)
            cli_s, peak = protect_end_to_end(image_path, label_path, folder / "out_wb.nii.gz", args.device, 1)
            result["whole_body"] = {
                "volume": "512x512x1500 int16, ROI over 300 slices, spacing 0.7x0.7x2.5 mm",
                "sitk_read_write_s": round(io_s, 2),
                "cli_end_to_end_s": round(cli_s, 2),
                "end_to_end_over_read_write": round(cli_s / io_s, 2),
                "cli_peak_rss_mb": round(peak),
                "targets_met": peak <= PEAK_LIMITS_MB["whole_body"],
            }
    result["machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
