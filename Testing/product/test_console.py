"""What the console says: the device line, per-case table, verdict, warnings once, all-or-nothing outputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import write_image, write_nnunet_dataset
from oracles import live_protector

from umedprotect import io
from umedprotect.cli import main
from umedprotect.cli.protect_dataset import case_table, summary_line
from umedprotect.methods import CODES_ONLY
from umedprotect.phantoms import phantom_volume
from umedprotect.protector import save_protector
from umedprotect.records import CaseRecord, ImageRecord


@pytest.fixture
def case(tmp_path):
    image, labels = phantom_volume((6, 32, 32), n_lesions=1, rng=0)
    return write_image(image.astype(np.int16), tmp_path / "ct.nrrd"), write_image(labels, tmp_path / "mask.nrrd")


def protect_argv(case, out, protector_file, *extra):
    return [
        "protect",
        str(case[0]),
        str(case[1]),
        "-o",
        str(out),
        "--protector",
        str(protector_file),
        "--device",
        "cpu",
        *map(str, extra),
    ]


def test_protect_names_the_device_and_the_units(tmp_path, case, protector_file, capsys):
    assert main(protect_argv(case, tmp_path / "out.nrrd", protector_file)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"device: {CODES_ONLY}"  # silent generators: no network runs
    assert re.search(r"max change \d+ (HU|native units)$", out[-1])
    live = save_protector(live_protector(), tmp_path / "live.safetensors")
    assert main(protect_argv(case, tmp_path / "live.nrrd", live)) == 0
    assert re.fullmatch(r"device: cpu \(\d+ threads\)", capsys.readouterr().out.splitlines()[0])


def test_outputs_go_into_new_folders_and_a_failing_report_removes_the_earlier_outputs(
    tmp_path, case, protector_file, monkeypatch, capsys
):
    out, heatmap, report = tmp_path / "a" / "out.nrrd", tmp_path / "b" / "c" / "h.png", tmp_path / "d" / "r.json"
    assert main(protect_argv(case, out, protector_file, "--heatmap", heatmap, "--report", report)) == 0
    assert out.is_file() and heatmap.is_file() and json.loads(report.read_text())["heatmap"] == str(heatmap)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "write_json", disk_full)
    again = [tmp_path / "e" / name for name in ("out.nrrd", "h.png", "r.json")]
    assert main(protect_argv(case, again[0], protector_file, "--heatmap", again[1], "--report", again[2])) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not any(path.exists() for path in again)  # nothing half-finished: the image and heatmap are gone too


def test_a_run_that_changes_nothing_is_refused_or_warned_about_once(tmp_path, protector_file, capsys):
    image, labels = phantom_volume((6, 32, 32), n_lesions=1, rng=0)
    flat = write_image(((image - image.min()) / np.ptp(image) * 200).astype(np.uint8), tmp_path / "flat.nrrd")
    mask = write_image(labels, tmp_path / "mask.nrrd")
    argv = protect_argv((flat, mask), tmp_path / "out.nrrd", protector_file, "--epsilon", "0.5")
    assert main(argv) == 2 and not (tmp_path / "out.nrrd").exists()
    assert "protection changed no voxel" in capsys.readouterr().err
    assert main([*argv, "--allow-empty"]) == 0
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and "warning: " in warnings[0] and "changed no voxel" in warnings[0]
    assert io.sha256(tmp_path / "out.nrrd") != io.sha256(flat)  # same voxels, its own file
    np.testing.assert_array_equal(
        io.to_array(io.read_image(tmp_path / "out.nrrd"))[0], io.to_array(io.read_image(flat))[0]
    )


def test_a_many_label_mask_is_accepted_with_many_labels(tmp_path, protector_file, capsys):
    rng = np.random.default_rng(0)
    image = write_image(rng.normal(100, 20, (2, 40, 40)).astype(np.float32), tmp_path / "cells.nrrd")
    labels = np.zeros((2, 40, 40), np.uint16)
    labels[0] = np.arange(40 * 40).reshape(40, 40) // 4 % 400  # 399 small "nuclei"
    mask = write_image(labels, tmp_path / "nuclei.nrrd")
    argv = protect_argv((image, mask), tmp_path / "out.nrrd", protector_file)
    assert main(argv) == 2 and "mask has 399 labels" in capsys.readouterr().err
    assert main([*argv, "--many-labels"]) == 0


def test_protect_dataset_prints_a_table_per_case_and_a_summary(tmp_path, protector_file, capsys):
    source = write_nnunet_dataset(tmp_path / "Dataset001", n_train=2, n_test=0, shape=(4, 24, 24))
    out = tmp_path / "protected"
    assert (
        main(["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("device: ")
    assert lines[1].split() == ["case", "status", "PSNR", "mean", "worst", "slice", "max", "change", "seconds"]
    rows = {line.split()[0]: line.split() for line in lines[3:5]}
    manifest = json.loads((out / "umedprotect_manifest.json").read_text())
    for case_id, entry in manifest["cases"].items():
        record = entry["images"][0]
        psnr = f"{record['psnr_db_slice_mean']:.1f}", f"{record['psnr_db_slice_min']:.1f}"
        assert rows[case_id][1:5] == ["protected", *psnr, f"{record['max_abs_change']:.4g}"]
    assert lines[5].startswith(f"{out}: 2 of 2 case(s) protected with umed; PSNR min ")


def test_the_table_lists_skipped_cases_and_the_summary_counts_them():
    image = ImageRecord(
        input="i",
        output="o",
        input_sha256="",
        output_sha256="",
        budget_native=4.0,
        psnr_db=60.0,
        ssim=1.0,
        max_abs_change=3.0,
        fraction_changed=0.1,
        geometry=None,
    )
    cases = {"a": CaseRecord("protected", images=[image], seconds=1.5), "b": CaseRecord("skipped_empty")}
    table = case_table(cases).splitlines()
    assert table[2].split() == ["a", "protected", "60.0", "60.0", "3", "1.5"] and table[3].split() == [
        "b",
        "skipped_empty",
    ]
    assert (
        summary_line(cases, "out", "umed")
        == "out: 1 of 2 case(s) protected with umed, 1 skipped empty; PSNR min 60.0 dB (worst slice of a volume); 1.5 s"
    )


def test_verify_reports_each_missing_file_once(tmp_path, protector_file, capsys):
    source = write_nnunet_dataset(tmp_path / "Dataset001", n_train=2, n_test=1, shape=(4, 24, 24))
    out = tmp_path / "protected"
    assert (
        main(["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]) == 0
    )
    (out / "labelsTr" / "case001.nii.gz").unlink()
    (out / "imagesTs" / "case002_0000.nii.gz").unlink()
    (out / "imagesTr" / "case000_0000.nii.gz").write_bytes(b"damaged")
    capsys.readouterr()
    assert main(["verify", str(out)]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(set(lines)) == 4 and lines[-1] == f"{out}: 3 discrepancy(ies) found"


@pytest.mark.parametrize(
    "ratios, defense, expected",
    [
        (
            [1.001],
            "none",
            "stopped 0 of 1 victims (ratio <= 0.10) at the final checkpoint, 0 of 1 at the one nnU-Net "
            "keeps (0 of 1 at the oracle's best epoch): not protected (ratio 1.001 final, 1.001 nnU-Net)",
        ),
        (
            [0.02],
            "none",
            "stopped 1 of 1 victims (ratio <= 0.10) at the final checkpoint, 1 of 1 at the one nnU-Net "
            "keeps (1 of 1 at the oracle's best epoch)",
        ),
        (
            [0.05, 0.4, float("nan")],
            "none",
            "stopped 1 of 3 victims (ratio <= 0.10) at the final checkpoint, 1 of 3 "
            "at the one nnU-Net keeps (1 of 3 at the oracle's best epoch)",
        ),
        (
            [0.05, 0.4],
            "blur",
            "stopped 1 of 2 runs (ratio <= 0.10) at the final checkpoint, 1 of 2 at the one "
            "nnU-Net keeps (1 of 2 at the oracle's best epoch)",
        ),
    ],
)
def test_evaluate_ends_with_a_verdict(ratios, defense, expected):
    from umedprotect_eval.cli import verdict_line  # the evaluation side's console line, pure

    rows = [{"ratio_final": r, "ratio_nnunet": r, "ratio_best": r, "defense": defense} for r in ratios]
    assert verdict_line(rows) == expected
