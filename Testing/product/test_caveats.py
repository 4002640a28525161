"""Caveats: where the bundled protector was measured not to protect, warned about and recorded by protect-dataset."""

from __future__ import annotations

import json

import pytest
import SimpleITK as sitk
from conftest import write_nnunet_dataset

from umedprotect.caveats import AUGMENTED, ZSCORED, dataset_caveats
from umedprotect.cli import main
from umedprotect.nnunet import read_dataset
from umedprotect.records import DatasetManifest
from umedprotect.victim_grid import resampled_cases


@pytest.fixture
def one_label(tmp_path):
    """Three CT cases of one label on one grid: nothing measured speaks against protecting them."""
    return write_nnunet_dataset(tmp_path / "Dataset021_OneLabel", n_lesions=1)


def set_channel(root, name: str) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": name}
    (root / "dataset.json").write_text(json.dumps(meta))


def set_spacing(root, case_id: str, spacing: tuple[float, float, float]) -> None:
    """Give a training case (image and mask) another spacing, (x, y, z) as SimpleITK orders it."""
    for path in (root / "imagesTr" / f"{case_id}_0000.nii.gz", root / "labelsTr" / f"{case_id}.nii.gz"):
        image = sitk.ReadImage(str(path))
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(path), useCompression=True)


def protect(source, out, *options) -> tuple[int, DatasetManifest]:
    code = main(["protect-dataset", str(source), "-o", str(out), "--no-progress", *options])
    return code, DatasetManifest.read(out / "umedprotect_manifest.json")


def test_one_ct_label_on_one_grid_has_only_the_augmented_victims_caveat(one_label, tmp_path, capsys):
    code, manifest = protect(one_label, tmp_path / "out")
    assert code == 0 and manifest.caveats == [AUGMENTED, ZSCORED]
    assert AUGMENTED.startswith("victims trained with nnU-Net's augmentation (nnU-Net's default) were not stopped")
    assert ZSCORED.startswith("victims that z-score each case instead of using nnU-Net's CT normalisation")
    assert capsys.readouterr().err.startswith(f"umedprotect: warning: {AUGMENTED}\numedprotect: warning: {ZSCORED}\n")


def test_a_channel_that_is_not_ct_is_z_scored_by_nnunet(one_label, tmp_path, capsys):
    set_channel(one_label, "T1")
    code, manifest = protect(one_label, tmp_path / "out", "--min-psnr", "60")  # a floor under the z-scored aim
    augmented, caveat = manifest.caveats
    assert augmented == AUGMENTED and caveat.startswith("channel 0 is 'T1', not CT: nnU-Net z-scores each case")
    err = capsys.readouterr().err
    assert err.startswith(f"umedprotect: warning: {augmented}\numedprotect: warning: {caveat}\n")  # before writing
    assert "the PSNR floor holds the change" in err  # and after, what the floor left of the strength


def test_up_to_four_labels_are_no_caveat_unless_made_with_the_dots(tmp_path, capsys):
    source = write_nnunet_dataset(tmp_path / "Dataset022_TwoLabels", n_lesions=2)
    _, manifest = protect(source, tmp_path / "both")
    assert manifest.caveats == [AUGMENTED, ZSCORED]  # the default stopped victims on four CT organs
    (dots,) = dataset_caveats(read_dataset(source), None, "bundled victim grid")[2:]
    assert dots.startswith("2 labels to protect: on four CT organs the dots made on nnU-Net's grid did not slow")
    assert dataset_caveats(read_dataset(source), [1], "bundled victim grid") == [AUGMENTED, ZSCORED]


def test_more_labels_than_were_measured_protected_add_the_twelve_structures(tmp_path):
    source = write_nnunet_dataset(tmp_path / "Dataset022_FiveLabels", n_lesions=2)
    meta = json.loads((source / "dataset.json").read_text())
    meta["labels"] = {"background": 0, **{f"structure{k}": k for k in range(1, 6)}}
    (source / "dataset.json").write_text(json.dumps(meta))
    dataset = read_dataset(source)
    (five,) = dataset_caveats(dataset, None)[2:]
    assert five.startswith("5 labels to protect:") and "but with twelve CT structures not at 50 dB" in five
    assert dataset_caveats(dataset, [1, 2, 3, 4]) == [AUGMENTED, ZSCORED]


def test_cases_off_the_median_in_plane_spacing_are_resampled_by_nnunet(one_label, tmp_path):
    set_spacing(one_label, "case001", (0.72, 0.7, 2.5))  # in plane: 0.72 against the median 0.8, 32 -> 29 pixels
    dataset = read_dataset(one_label)
    assert resampled_cases(dataset) == ["case001"]
    _, _, on_own_grid = dataset_caveats(dataset, None)
    assert on_own_grid.startswith("1 of 3 training cases lie off the dataset's median in-plane spacing, so nnU-Net")
    _, _, on_victim_grid = dataset_caveats(dataset, None, "bundled victim grid")
    assert "made on the grid nnU-Net resamples them to" in on_victim_grid
    _, manifest = protect(one_label, tmp_path / "out")  # the victim grid by default: made there, with the dots
    assert (
        manifest.caveats == [AUGMENTED, ZSCORED, on_victim_grid] and manifest.protector["path"] == "bundled victim grid"
    )
    assert manifest.parameters["victim_spacing"] == pytest.approx([2.5, 0.7, 0.8])  # numpy axis order, the medians
    _, manifest = protect(one_label, tmp_path / "own", "--victim-grid", "off")
    assert manifest.caveats == [AUGMENTED, ZSCORED, on_own_grid] and manifest.protector["path"] == "bundled default"
    assert "victim_spacing" not in manifest.parameters


@pytest.mark.parametrize(
    "spacing",
    [
        (0.8, 0.7, 3.0),  # another slice thickness: 2D victims do not resample across slices
        (0.8004, 0.7, 2.5),  # within float rounding of the median
        (0.81, 0.7, 2.5),  # off the median, but 32 pixels at 0.81 mm are still 32 at 0.8 mm
    ],
)
def test_cases_nnunet_2d_does_not_resample_are_no_caveat(one_label, spacing):
    set_spacing(one_label, "case001", spacing)
    assert resampled_cases(read_dataset(one_label)) == []


def test_2d_cases_are_resampled_along_both_axes(tmp_path):
    source = write_nnunet_dataset(tmp_path / "Dataset023_Flat", shape=(32, 32), n_lesions=1)
    path = source / "imagesTr" / "case002_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    image.SetSpacing((0.8, 0.6))  # the second axis, not the first, is off the median (0.7)
    sitk.WriteImage(image, str(path), useCompression=True)
    assert resampled_cases(read_dataset(source)) == ["case002"]


def test_another_protector_has_no_measured_caveats(one_label, tmp_path, protector_file, capsys):
    set_channel(one_label, "MR")
    code, manifest = protect(one_label, tmp_path / "out", "--protector", str(protector_file))
    assert code == 0 and manifest.caveats is None
    assert "caveats" not in json.loads((tmp_path / "out" / "umedprotect_manifest.json").read_text())
    assert "not CT" not in capsys.readouterr().err


def test_the_rings_are_a_caveat_above_the_floor_they_were_measured_at_and_beyond_one_ct_organ(one_label, tmp_path):
    _, manifest = protect(one_label, tmp_path / "default", "--codes", "rings")
    (floor,) = manifest.caveats
    assert manifest.protector["path"] == "bundled rings"
    assert floor.startswith("the rings at a 50 dB floor with a cap of 16/255: on CT liver they stopped victims")
    _, manifest = protect(one_label, tmp_path / "at45", "--codes", "rings", "--min-psnr", "45")
    assert manifest.caveats[0].startswith("the rings at a 45 dB floor with a cap of 16/255")
    _, manifest = protect(one_label, tmp_path / "low", "--codes", "rings", "--epsilon", "6.3", "--min-psnr", "45")
    assert manifest.caveats == []
    set_channel(one_label, "T2")
    (caveat,) = dataset_caveats(read_dataset(one_label), None, "bundled rings", 45.0, 6.3)
    assert caveat.startswith("the rings were measured on one CT organ only")
    source = write_nnunet_dataset(tmp_path / "Dataset024_TwoLabels", n_lesions=2)
    assert dataset_caveats(read_dataset(source), None, "bundled rings", 45.0, 6.3) == [caveat]
    assert dataset_caveats(read_dataset(source), [2], "bundled rings", 45.0, 6.3) == []


def test_fill_and_rings_are_a_caveat_above_48_db_and_beyond_one_ct_organ(one_label, tmp_path):
    _, manifest = protect(one_label, tmp_path / "default", "--codes", "fill+rings")
    (floor,) = manifest.caveats
    assert manifest.protector["path"] == "bundled fill+rings" and manifest.parameters["rings_min_psnr"] == 54.33
    assert floor.startswith("the fill codes and the rings under a 50 dB floor: on CT liver at 50 dB victims")
    _, manifest = protect(one_label, tmp_path / "at48", "--codes", "fill+rings", "--min-psnr", "48")
    assert manifest.caveats == []
    set_channel(one_label, "T2")
    (caveat,) = dataset_caveats(read_dataset(one_label), None, "bundled fill+rings", 48.0)
    assert caveat.startswith("the fill codes and the rings together were measured on one CT organ only")
