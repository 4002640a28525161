"""DICOM series in and out: protected series keep their tags and stored format; compressed series are decoded."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import ROOT, write_ct_series, write_image

from umedprotect import io
from umedprotect.cli import main
from umedprotect.errors import InputError

CHANGED = {
    "PixelData",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "ImageType",
    "DerivationDescription",
    "ContributingEquipmentSequence",
    "SeriesDescription",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
}
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def read_series(folder: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))))


def datasets_by_position(folder: Path) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def write_mask(labels: np.ndarray, series: Path, path: Path) -> Path:
    mask = sitk.GetImageFromArray(labels.astype(np.uint8))
    mask.CopyInformation(io.read_image(series))
    sitk.WriteImage(mask, str(path))
    return path


def protect(image, mask, out, protector, *extra) -> int:
    return main(["protect", str(image), str(mask), "-o", str(out), "--protector", str(protector), *map(str, extra)])


def test_dicom_output_holds_the_voxels_of_the_nifti_output(ct_series, protector_file, tmp_path):
    series, hu, labels = ct_series
    mask = write_mask(labels, series, tmp_path / "mask.nii.gz")
    assert protect(series, mask, f"{tmp_path / 'out'}/", protector_file) == 0
    assert protect(series, mask, tmp_path / "protected.nii.gz", protector_file) == 0
    from_dicom = read_series(tmp_path / "out")
    assert np.array_equal(from_dicom, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "protected.nii.gz"))))
    assert not np.array_equal(from_dicom, hu)  # protection changed something


def test_protected_series_keeps_every_tag_but_what_must_change(ct_series, protector_file, tmp_path):
    series, _, labels = ct_series
    assert (
        protect(
            series,
            write_mask(labels, series, tmp_path / "mask.nii.gz"),
            tmp_path / "out",
            protector_file,
            "--output-format",
            "dicom",
        )
        == 0
    )
    sources, outputs = datasets_by_position(series), datasets_by_position(tmp_path / "out")
    assert len(outputs) == len(sources)
    new_series_uid = outputs[0].SeriesInstanceUID
    assert new_series_uid != sources[0].SeriesInstanceUID
    assert len({ds.SOPInstanceUID for ds in outputs} | {ds.SOPInstanceUID for ds in sources}) == 2 * len(sources)
    for source, output in zip(sources, outputs):
        kept = {e.keyword or str(e.tag) for e in source} - CHANGED
        assert kept <= {e.keyword or str(e.tag) for e in output}
        assert all(output[e.tag] == e for e in source if (e.keyword or str(e.tag)) in kept)
        assert output.SeriesInstanceUID == new_series_uid and output.StudyInstanceUID == source.StudyInstanceUID
        assert output.file_meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID
        assert output.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert list(output.ImageType) == ["DERIVED", "PRIMARY", "AXIAL"]
        assert output.SeriesDescription == "CT Abdomen 2.5 [UMedProtect]"
        assert "method umed" in output.DerivationDescription and "protector sha256" in output.DerivationDescription
        equipment = output.ContributingEquipmentSequence[-1]
        assert equipment.Manufacturer == "UMedProtect" and equipment.SoftwareVersions
        assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
        stored, original = output.pixel_array, source.pixel_array
        assert stored.dtype == original.dtype  # unsigned 16-bit, 12 bits stored
        assert (output.SmallestImagePixelValue, output.LargestImagePixelValue) == (stored.min(), stored.max())
        assert np.array_equal(stored * 1.0 - 1024, read_series(tmp_path / "out")[sources.index(source)])
        assert (stored != original).sum() < stored.size // 4  # only the ROI and its band change


def test_output_is_reproducible_byte_for_byte(ct_series, protector_file, tmp_path):
    series, _, labels = ct_series
    mask = write_mask(labels, series, tmp_path / "mask.nii.gz")
    for name in ("a", "b"):
        assert protect(series, mask, f"{tmp_path / name}/", protector_file) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [f"IM{k:05d}.dcm" for k in range(1, 6)]
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_another_protection_with_the_same_settings_gets_other_uids(ct_series, protector_file, tmp_path):
    series, _, labels = ct_series
    whole = write_mask(labels, series, tmp_path / "whole.nii.gz")
    part = labels.copy()
    part[: part.shape[0] // 2] = 0  # another mask, same settings: other voxels change
    half = write_mask(part, series, tmp_path / "half.nii.gz")
    assert protect(series, whole, f"{tmp_path / 'a'}/", protector_file) == 0
    assert protect(series, half, f"{tmp_path / 'b'}/", protector_file) == 0
    a, b = datasets_by_position(tmp_path / "a"), datasets_by_position(tmp_path / "b")
    assert a[0].SeriesInstanceUID != b[0].SeriesInstanceUID
    assert not {ds.SOPInstanceUID for ds in a} & {ds.SOPInstanceUID for ds in b}


def test_overwrite_replaces_a_previous_dicom_output(ct_series, protector_file, tmp_path):
    series, _, labels = ct_series
    mask = write_mask(labels, series, tmp_path / "mask.nii.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.dcm").write_bytes(b"previous output")
    assert protect(series, mask, tmp_path / "out", protector_file) == 2  # an existing folder is a DICOM output
    assert protect(series, mask, tmp_path / "out", protector_file, "--overwrite") == 0
    assert not (tmp_path / "out" / "old.dcm").exists() and len(list((tmp_path / "out").iterdir())) == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


@pytest.mark.parametrize("syntax", [pydicom.uid.RLELossless, pydicom.uid.JPEGLSLossless, pydicom.uid.JPEG2000Lossless])
def test_compressed_series_read_like_uncompressed_and_written_uncompressed(syntax, tmp_path, protector_file):
    from umedprotect.phantoms import phantom_volume

    image, labels = phantom_volume((3, 32, 32), n_lesions=1, rng=5)  # JPEG 2000 needs 32 x 32 for its resolutions
    hu = np.rint(image)
    write_ct_series(hu, tmp_path / "plain")
    write_ct_series(hu, tmp_path / "packed", transfer_syntax=syntax)
    assert pydicom.dcmread(next((tmp_path / "packed").iterdir())).file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(sitk.GetArrayFromImage(io.read_image(tmp_path / "packed")), hu)
    mask = write_mask(labels, tmp_path / "plain", tmp_path / "mask.nii.gz")
    assert protect(tmp_path / "packed", mask, f"{tmp_path / 'out'}/", protector_file) == 0
    assert protect(tmp_path / "plain", mask, tmp_path / "plain.nii.gz", protector_file) == 0
    from_nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain.nii.gz")))
    assert np.array_equal(read_series(tmp_path / "out"), from_nifti)
    assert {pydicom.dcmread(p).file_meta.TransferSyntaxUID for p in (tmp_path / "out").iterdir()} == {
        pydicom.uid.ExplicitVRLittleEndian
    }


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"]
)
def test_pydicom_sample_files_decode_to_the_uncompressed_values(name, tmp_path):
    for file in ("MR_small.dcm", name):
        (tmp_path / file).mkdir()
        shutil.copy(PYDICOM_FILES / file, tmp_path / file / file)
    expected = sitk.GetArrayFromImage(io.read_image(tmp_path / "MR_small.dcm"))
    assert np.array_equal(sitk.GetArrayFromImage(io.read_image(tmp_path / name)), expected)


def test_undecodable_pixel_data_is_refused(tmp_path):
    (tmp_path / "series").mkdir()
    shutil.copy(PYDICOM_FILES / "JPEG-lossy.dcm", tmp_path / "series")  # a corrupt JPEG stream
    with pytest.raises(InputError, match="cannot decode its JPEG Extended"):
        io.read_image(tmp_path / "series")


def test_values_that_do_not_map_back_to_stored_integers_are_refused_before_work(tmp_path, protector_file, capsys):
    from umedprotect.phantoms import phantom_volume

    image, labels = phantom_volume((3, 24, 24), n_lesions=1, rng=5)
    write_ct_series(np.rint(image) / 2, tmp_path / "ct", slope=0.5, intercept=-1024)
    mask = write_mask(labels, tmp_path / "ct", tmp_path / "mask.nii.gz")
    capsys.readouterr()
    assert protect(tmp_path / "ct", mask, f"{tmp_path / 'out'}/", protector_file) == 2
    assert "rescale slope 0.5 and intercept -1024 are not integers" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dicom_output_needs_a_dicom_image(tmp_path, protector_file, capsys):
    from umedprotect.phantoms import phantom_volume

    image, labels = phantom_volume((3, 24, 24), n_lesions=1, rng=5)
    write_image(image, tmp_path / "ct.nrrd")
    write_image(labels, tmp_path / "mask.nrrd")
    assert protect(tmp_path / "ct.nrrd", tmp_path / "mask.nrrd", f"{tmp_path / 'out'}/", protector_file) == 2
    assert "a DICOM output needs a DICOM series folder as IMAGE" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_dciodvfy_finds_no_new_error_in_a_protected_file(ct_series, protector_file, tmp_path):
    series, _, labels = ct_series
    mask = write_mask(labels, series, tmp_path / "mask.nii.gz")
    assert protect(series, mask, f"{tmp_path / 'out'}/", protector_file) == 0

    def errors(path: Path) -> set[str]:
        run = subprocess.run(["dciodvfy", str(path)], check=False, capture_output=True, text=True, timeout=60)
        lines = (run.stdout + run.stderr).splitlines()
        assert any(line.strip() == "CTImage" for line in lines), lines  # the IOD was recognised
        return {line for line in lines if line.startswith("Error")}

    source = datasets_by_position(series)[2].filename
    assert errors(tmp_path / "out" / "IM00003.dcm") <= errors(Path(source))


# --- the real CT series shipped in TotalSegmentator's source package (fetched once, cached) ----------------------


@pytest.fixture(scope="session")
def totalsegmentator_files() -> Path:
    from benchmarks.prepare_data import fetch

    try:
        return fetch("totalsegmentator", ROOT / "benchmarks" / "data")
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"TotalSegmentator's source package cannot be fetched here ({type(exc).__name__})")


@pytest.mark.slow
def test_real_jpeg2000_ct_series_round_trips(totalsegmentator_files, protector_file, tmp_path):
    series, mask = totalsegmentator_files / "example_ct_dicom", totalsegmentator_files / "example_seg_dicom.nii.gz"
    argv = ["--labels", "5", "--resample-mask"]  # the liver; the mask's grid is flipped in y
    assert protect(series, mask, f"{tmp_path / 'out'}/", protector_file, *argv) == 0
    assert protect(series, mask, tmp_path / "protected.nrrd", protector_file, *argv) == 0
    protected = read_series(tmp_path / "out")
    assert np.array_equal(protected, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "protected.nrrd"))))
    original = sitk.GetArrayFromImage(io.read_image(series))
    assert 0 < (protected != original).sum() < original.size // 10
    sources, outputs = datasets_by_position(series), datasets_by_position(tmp_path / "out")
    for source, output in zip(sources, outputs):
        assert source.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
        assert output.ImagePositionPatient == source.ImagePositionPatient
        assert (output.BitsStored, output.PixelRepresentation, output.RescaleIntercept) == (12, 0, -1024)
        assert output.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert output.SeriesDescription == "CT Body 3.0 [UMedProtect]"
