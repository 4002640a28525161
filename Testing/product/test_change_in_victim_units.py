"""The change as a victim sees it: RMS over the changed voxels in image stds (``change_zscore``) or in the
victim's units (CT: the training foreground's std), and the strength the budget is raised to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_nnunet_dataset

from umedprotect import io
from umedprotect.array_protection import protect_array
from umedprotect.cli import main
from umedprotect.metrics import image_quality
from umedprotect.nnunet import read_dataset
from umedprotect.records import DatasetManifest
from umedprotect.victim_units import (
    STRENGTHS,
    case_unit,
    change_in_units,
    ct_unit,
    dataset_normalisation,
    short_of_strength,
    victim_unit,
)


def case(shape: tuple[int, ...], dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Noise around 100 with a brighter labelled rectangle in every slice."""
    image = np.random.default_rng(0).normal(100, 20, shape)
    labels = np.zeros(shape, np.uint8)
    labels[..., 16:40, 12:36] = 1
    image[labels > 0] += 50
    return image.astype(dtype), labels


@pytest.mark.parametrize("dtype", ["int16", "float32"])
@pytest.mark.parametrize("shape", [(64, 64), (4, 48, 56)])
def test_the_reported_zscore_change_is_the_rms_change_over_the_image_std(dtype, shape):
    image, labels = case(shape, dtype)
    result = protect_array(image, labels, device="cpu", min_psnr=45)
    change = result.protected.astype(np.float64) - image.astype(np.float64)
    expected = np.sqrt(np.mean(change[change != 0] ** 2)) / image.astype(np.float64).std()
    assert result.metrics["change_zscore"] == pytest.approx(expected, rel=1e-6)
    assert 0.01 < expected < 1


def test_no_change_is_zero_and_a_larger_image_spread_makes_it_smaller():
    image, labels = case((64, 64))
    assert change_in_units(image, image_quality(image, image)) == 0.0
    protected = image.copy()
    protected[labels > 0] += 3.0
    spread = image.copy()
    spread[labels == 0] *= 4  # same change, more contrast elsewhere: a z-scoring victim sees less of it
    assert change_in_units(spread, image_quality(spread, spread + (protected - image))) < change_in_units(
        image, image_quality(image, protected)
    )


def test_the_manifest_records_the_zscore_change_of_each_protected_image(tmp_path):
    source = write_nnunet_dataset(tmp_path / "Dataset001_Tiny")
    out = tmp_path / "out"
    assert main(["protect-dataset", str(source), "-o", str(out), "--device", "cpu", "--no-progress"]) == 0
    manifest = DatasetManifest.read(out / "umedprotect_manifest.json")
    for record in manifest.cases.values():
        for image in record.images:
            sitk_in, sitk_out = (io.read_image(p) for p in (source / image.input, out / image.output))
            original = sitk.GetArrayFromImage(sitk_in).astype(np.float64)
            change = sitk.GetArrayFromImage(sitk_out).astype(np.float64) - original
            expected = np.sqrt(np.mean(change[change != 0] ** 2)) / original.std()
            assert image.change_zscore == pytest.approx(expected, rel=1e-6)


def mr_like(shape=(64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A case whose range is a few stds (as MR): the 50 dB floor leaves the change far below the strength."""
    image = np.random.default_rng(1).normal(300, 60, shape).clip(0, 800)
    labels = np.zeros(shape, np.uint8)
    labels[..., 20:44, 16:40] = 1
    return image.astype("float32"), labels


def test_the_ct_unit_is_the_clipped_foreground_std_and_a_case_unit_its_own_std():
    values = np.concatenate([np.full(990, 50.0), np.full(5, -1000.0), np.full(5, 3000.0)])
    lo, hi = np.percentile(values, (0.5, 99.5))
    assert ct_unit(values) == pytest.approx(np.std(np.clip(values, lo, hi)))
    assert ct_unit(values) < 0.1 * np.std(values)  # the outliers are clipped away
    image, _ = mr_like()
    assert case_unit(image) == pytest.approx(image.astype(np.float64).std())


def ct_like(shape=(64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """Air around a body of soft tissue (HU): its range is a hundred foreground stds."""
    image = np.full(shape, -1000.0)
    image[8:56, 8:56] = np.random.default_rng(2).normal(40, 15, (48, 48))
    labels = np.zeros(shape, np.uint8)
    labels[20:44, 16:40] = 1
    return image.astype("float32"), labels


def test_a_ct_case_is_measured_in_its_foreground_std_and_other_cases_in_their_own_std(tmp_path):
    image, labels = ct_like()
    assert victim_unit(image, labels, "ct") == pytest.approx(ct_unit(image[labels > 0]))
    assert victim_unit(image, labels, "zscore") == pytest.approx(case_unit(image))
    assert case_unit(image) > 10 * victim_unit(image, labels, "ct")
    dataset = read_dataset(write_nnunet_dataset(tmp_path / "Dataset001_Tiny"))
    assert dataset_normalisation(dataset) == "ct"
    dataset.meta["channel_names"] = {"0": "T1"}
    assert dataset_normalisation(dataset) == "zscore"


def test_the_budget_is_raised_to_the_strength_and_the_floor_still_holds():
    image, labels = mr_like()
    weak = protect_array(image, labels, device="cpu", min_psnr=30)
    strong = protect_array(image, labels, device="cpu", min_psnr=30, strength=0.3)
    assert weak.metrics["change_zscore"] < 0.25
    assert strong.metrics["change_victim_units"] == pytest.approx(0.3, rel=0.05)
    assert strong.metrics["epsilon"] > weak.metrics["epsilon"] and strong.metrics["psnr_db"] >= 30
    assert np.all(np.abs(strong.change) <= strong.budget + 1e-3)
    assert np.array_equal(strong.protected[~strong.region], image[~strong.region])


def test_under_the_floor_the_metrics_give_the_floor_that_reaches_the_strength():
    image, labels = mr_like()
    held = protect_array(image, labels, device="cpu", min_psnr=50, strength=0.3)
    assert held.metrics["psnr_db"] >= 50 and held.metrics["change_victim_units"] < 0.1
    floor = held.metrics["min_psnr_for_strength"]
    assert 30 < floor < 45
    reached = protect_array(image, labels, device="cpu", min_psnr=floor, strength=0.3)
    assert reached.metrics["change_victim_units"] >= 0.3 * 0.95
    assert "min_psnr_for_strength" not in reached.metrics


def dim_8bit(shape=(64, 64), top: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit image of range 0 to about ``top`` (a dim microscopy tile): at 50 dB the change is under one level."""
    image, labels = mr_like(shape)
    return np.round(image / 800 * top).astype(np.uint8), labels


def test_a_floor_that_leaves_under_one_level_gives_the_floor_that_reaches_the_strength(tmp_path, caplog, capsys):
    image, labels = dim_8bit()
    aim = STRENGTHS["zscore"]  # what protect's defaults aim at on a tile that is not CT
    erased = protect_array(image, labels, device="cpu", min_psnr=50, strength=aim)
    assert np.array_equal(erased.protected, image) and erased.metrics["change_victim_units"] == 0
    floor = erased.metrics["min_psnr_for_strength"]
    reached = protect_array(image, labels, device="cpu", min_psnr=floor, strength=aim)
    assert reached.metrics["change_victim_units"] >= aim * 0.8  # about: a few levels, rounded
    for array, name in ((image, "tile.nii.gz"), (labels, "mask.nii.gz")):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    args = [str(tmp_path / "tile.nii.gz"), str(tmp_path / "mask.nii.gz"), "--device", "cpu"]
    assert main(["protect", *args, "-o", str(tmp_path / "out.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "changed no voxel (the 50 dB floor" in err and f"--min-psnr {floor:g}" in err and err.count("\n") == 1
    assert not (tmp_path / "out.nii.gz").exists()
    assert main(["protect", *args, "-o", str(tmp_path / "out.nii.gz"), "--allow-empty"]) == 0
    assert "leaves no change (it would be under one level" in caplog.text and f"--min-psnr {floor:g}" in caplog.text


def test_protect_dataset_says_how_many_images_the_floor_left_unchanged(tmp_path, caplog):
    root = write_nnunet_dataset(tmp_path / "Dataset001_Tiles", n_train=2, shape=(64, 64))
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": "fluorescence"}}))
    for k, top in enumerate((100, 250)):  # dim: nothing left at 50 dB; bright: a change of a level here and there
        image, labels = dim_8bit(top=top)
        for array, path in (
            (image, root / f"imagesTr/case{k:03d}_0000.nii.gz"),
            (labels, root / f"labelsTr/case{k:03d}.nii.gz"),
        ):
            sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    assert main(["protect-dataset", str(root), "-o", str(tmp_path / "out"), "--device", "cpu", "--no-progress"]) == 0
    assert (
        "2 image(s): the PSNR floor holds the change" in caplog.text and "(1 left unchanged: it would be" in caplog.text
    )


def test_a_budget_under_one_level_is_raised_to_the_strength():
    image, labels = dim_8bit(top=60)
    assert protect_array(image, labels, device="cpu", min_psnr=20).metrics["max_abs_change"] == 0
    raised = protect_array(image, labels, device="cpu", min_psnr=20, strength=0.3)
    assert raised.metrics["change_victim_units"] == pytest.approx(0.3, rel=0.35)


def test_a_change_already_stronger_is_kept_byte_for_byte():
    image, labels = ct_like()
    plain = protect_array(image, labels, device="cpu", min_psnr=40)
    as_ct = protect_array(image, labels, device="cpu", min_psnr=40, strength=0.3, victim_normalisation="ct")
    assert np.array_equal(plain.protected, as_ct.protected) and as_ct.metrics["change_victim_units"] > 0.3
    as_zscore = protect_array(image, labels, device="cpu", min_psnr=40, strength=0.3)  # air makes the std large
    assert as_zscore.metrics["epsilon"] > plain.metrics["epsilon"]


def test_protect_warns_when_the_floor_holds_the_strength_and_records_it(tmp_path, caplog):
    image, labels = mr_like()
    for array, name in ((image, "mr.nii.gz"), (labels, "mask.nii.gz")):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    args = [str(tmp_path / "mr.nii.gz"), str(tmp_path / "mask.nii.gz"), "--device", "cpu"]
    assert main(["protect", *args, "-o", str(tmp_path / "a.nii.gz"), "--report", str(tmp_path / "a.json")]) == 0
    assert "victim units" in caplog.text and "--min-psnr" in caplog.text
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["parameters"]["strength"] == STRENGTHS["zscore"] and report["metrics"]["min_psnr_for_strength"] < 50
    caplog.clear()
    for k, extra in enumerate((["--strength", "0"], ["--epsilon", "8"])):
        out = tmp_path / f"b{k}.nii.gz"
        assert main(["protect", *args, "-o", str(out), "--report", str(out) + ".json", *extra]) == 0
        assert json.loads(Path(str(out) + ".json").read_text())["parameters"]["strength"] is None
    assert "victim units" not in caplog.text


def test_protect_dataset_measures_a_ct_datasets_cases_as_nnunet_normalises_them(tmp_path):
    source = write_nnunet_dataset(tmp_path / "Dataset001_Tiny")
    out = tmp_path / "out"
    assert main(["protect-dataset", str(source), "-o", str(out), "--device", "cpu", "--no-progress"]) == 0
    manifest = DatasetManifest.read(out / "umedprotect_manifest.json")
    assert manifest.parameters["victim_normalisation"] == "ct" and manifest.parameters["strength"] == 0.6
    for record in manifest.cases.values():
        for image in record.images:
            original = sitk.GetArrayFromImage(io.read_image(source / image.input)).astype(np.float64)
            labels = sitk.GetArrayFromImage(io.read_image(source / record.label.path))
            change = sitk.GetArrayFromImage(io.read_image(out / image.output)).astype(np.float64) - original
            rms = np.sqrt(np.mean(change[change != 0] ** 2))
            assert image.change_victim_units == pytest.approx(rms / ct_unit(original[labels > 0]), rel=1e-4)


def test_a_strength_out_of_range_is_one_line_and_exit_2(tmp_path, capsys):
    image, labels = mr_like()
    for array, name in ((image, "mr.nii.gz"), (labels, "mask.nii.gz")):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    code = main(
        ["protect", str(tmp_path / "mr.nii.gz"), str(tmp_path / "mask.nii.gz"), "-o", str(tmp_path / "o.nii.gz")]
        + ["--strength", "-1"]
    )
    assert code == 2 and "--strength" in capsys.readouterr().err and not (tmp_path / "o.nii.gz").exists()


def test_protect_measures_a_ct_image_in_its_foreground_std(tmp_path):
    image, labels = ct_like()
    for array, name in ((image, "ct.nii.gz"), (labels, "mask.nii.gz")):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    argv = [str(tmp_path / "ct.nii.gz"), str(tmp_path / "mask.nii.gz"), "-o", str(tmp_path / "out.nii.gz")]
    assert main(["protect", *argv, "--device", "cpu", "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["parameters"]["victim_normalisation"] == "ct"
    assert report["metrics"]["victim_unit"] == pytest.approx(ct_unit(image[labels > 0]), rel=1e-6)


def test_the_default_aim_falls_short_only_under_what_stopped_victims():
    assert not short_of_strength(0.3, STRENGTHS["ct"], "ct")  # four CT organs were stopped with cases at 0.1-2.0
    assert short_of_strength(0.05, STRENGTHS["ct"], "ct") and short_of_strength(0.1, STRENGTHS["zscore"], "zscore")
    assert not short_of_strength(0.15, STRENGTHS["zscore"], "zscore")  # MR: 0.15 stopped 10 of 10, 0.1 9 of 10
    assert short_of_strength(0.3, 1.0, "ct")  # an aim the user set is held to itself
