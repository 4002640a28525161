"""UMedProtectLogic.exportProtectedToDicom on real MRML nodes, with Slicer's DICOM module stood in for.

A volume loaded from a DICOM series (as Slicer's DICOM module loads one: voxels, grid, the instance UIDs
attribute, a subject hierarchy study) is written for real by the product's writer with its source's tags; any
other volume goes to Slicer's exporter, whose stand-in records the tags it was given.
"""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import slicer_shim

slicer_shim.import_module()
import slicer  # noqa: E402  (slicer-core, after the shim)
from conftest import write_ct_series  # noqa: E402  (Testing/conftest.py)

from umedprotect.errors import Cancelled, InputError  # noqa: E402
from umedprotect.phantoms import phantom_volume  # noqa: E402
from umedprotect.settings import ProtectionSettings  # noqa: E402
from UMedProtectLib.BackgroundWork import DirectRunner  # noqa: E402
from UMedProtectLib.Logic import DERIVATION_ATTRIBUTE, UMedProtectLogic  # noqa: E402

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"  # write_ct_series's
LPS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture
def scene():
    return slicer_shim.bootstrap_scene()


def subject_hierarchy():
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)


def place_in_study(volume, modality: str = "CT") -> int:
    """A patient and study with DICOM tags around ``volume``, as Slicer's DICOM module makes them."""
    sh = subject_hierarchy()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "PHANTOM^ONE")
    sh.SetItemAttribute(patient, "DICOM.PatientName", "PHANTOM^ONE")
    sh.SetItemAttribute(patient, "DICOM.PatientID", "PH001")
    study = sh.CreateStudyItem(patient, "Abdomen")
    sh.SetItemUID(study, "DICOM", STUDY_UID)
    sh.SetItemAttribute(study, "DICOM.StudyInstanceUID", STUDY_UID)
    sh.SetItemAttribute(study, "DICOM.StudyDescription", "Abdomen")
    item = sh.GetItemByDataNode(volume)
    sh.SetItemParent(item, study)
    sh.SetItemAttribute(item, "DICOM.Modality", modality)
    return study


def load_series(files: list[str], name: str):
    """The series as Slicer's DICOM module loads it: voxels in slice order, RAS grid, instance UIDs, description."""
    image = sitk.ReadImage(files)
    ijk_to_ras = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    ijk_to_ras[:3, :3] = LPS @ direction @ np.diag(image.GetSpacing())
    ijk_to_ras[:3, 3] = LPS @ np.array(image.GetOrigin())
    volume = slicer.util.addVolumeFromArray(sitk.GetArrayFromImage(image), ijkToRAS=ijk_to_ras, name=name)
    uids = [pydicom.dcmread(name, stop_before_pixels=True).SOPInstanceUID for name in files]
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    item = subject_hierarchy().GetItemByDataNode(volume)
    subject_hierarchy().SetItemAttribute(item, "DICOM.SeriesDescription", "CT Abdomen 2.5")
    return volume


def segment(volume, lesions: np.ndarray):
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "lesions")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("lesion")
    slicer.util.updateSegmentBinaryLabelmapFromArray((lesions > 0).astype(np.uint8), segmentation, segment_id, volume)
    return segmentation


def protect(logic: UMedProtectLogic, volume, segmentation, protector_file):
    settings = ProtectionSettings(protector=str(protector_file), epsilon=4.0, band_radius=3, device="cpu")
    return logic.process(volume, segmentation, None, settings).protectedVolume


@pytest.fixture
def dicom_case(scene, tmp_path, protector_file):
    """A CT series in a fake DICOM database, loaded and protected; the source files' digests to check them."""
    image, lesions = phantom_volume((5, 32, 32), n_lesions=2, rng=3)
    hu = np.clip(np.rint(image), -1024, 3071)
    written = write_ct_series(hu, tmp_path / "database")
    files = [str(name) for name in sorted(written, key=lambda p: -int(p.stem[5:]))]  # slice order (bottom up)
    dicom = slicer_shim.FakeDicomServices(
        {pydicom.dcmread(name, stop_before_pixels=True).SOPInstanceUID: name for name in files}
    )
    volume = load_series(files, "3: CT Abdomen 2.5")
    study = place_in_study(volume)
    logic = UMedProtectLogic(dicom=dicom)
    protected = protect(logic, volume, segment(volume, lesions), protector_file)
    digests = {name: hashlib.sha256(Path(name).read_bytes()).hexdigest() for name in files}
    return types.SimpleNamespace(
        logic=logic, dicom=dicom, volume=volume, protected=protected, study=study, files=files, digests=digests
    )


def headers(folder) -> list:
    return [pydicom.dcmread(name) for name in sorted(folder.glob("*.dcm"))]


def test_a_volume_loaded_from_dicom_is_written_with_its_source_tags_new_uids_and_the_protected_voxels(
    dicom_case, tmp_path
):
    case, folder = dicom_case, tmp_path / "protected"
    output = case.logic.exportProtectedToDicom(case.protected, case.volume, folder)

    assert output.sourceTagsKept and output.folder == folder and output.studyInstanceUID == STUDY_UID
    assert case.dicom.exported == []
    assert case.dicom.imported == [(folder, False, [f"IM{n:05d}.dcm" for n in range(1, 6)])]
    source, written = [pydicom.dcmread(name) for name in case.files], headers(folder)
    assert len(written) == len(source)
    assert {ds.SeriesInstanceUID for ds in written} == {output.seriesInstanceUID} != {source[0].SeriesInstanceUID}
    assert not {ds.SOPInstanceUID for ds in written} & {ds.SOPInstanceUID for ds in source}
    for ds, original in zip(written, source):
        assert (ds.StudyInstanceUID, ds.FrameOfReferenceUID) == (STUDY_UID, original.FrameOfReferenceUID)
        assert (ds.PatientName, ds.PatientID, ds.AccessionNumber) == ("PHANTOM^ONE", "PH001", "A123")
        assert ds[0x00091001].value == "vendor detail"  # a private tag of the source
        assert ds.ImageType[0] == "DERIVED" and ds.SeriesDescription == "CT Abdomen 2.5 [UMedProtect]"
        assert ds.DerivationDescription == case.protected.GetAttribute(DERIVATION_ATTRIBUTE)
        assert ds.ContributingEquipmentSequence[-1].Manufacturer == "UMedProtect"
    voxels = sitk.GetArrayFromImage(sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))))
    protected, original = slicer.util.arrayFromVolume(case.protected), slicer.util.arrayFromVolume(case.volume)
    np.testing.assert_array_equal(voxels, protected)
    assert not np.array_equal(protected, original)

    assert subject_hierarchy().GetItemParent(subject_hierarchy().GetItemByDataNode(case.protected)) == case.study
    assert {name: hashlib.sha256(Path(name).read_bytes()).hexdigest() for name in case.files} == case.digests


def test_without_an_output_folder_the_database_copies_the_files_from_a_temporary_folder(dicom_case):
    output = dicom_case.logic.exportProtectedToDicom(dicom_case.protected, dicom_case.volume)
    ((folder, copyFiles, files),) = dicom_case.dicom.imported
    assert output.folder is None and output.sourceTagsKept and copyFiles and len(files) == 5
    assert not folder.exists() and not folder.parent.exists()


@pytest.mark.parametrize("cause", ["files missing from the database", "files on another grid"])
def test_a_dicom_volume_whose_files_cannot_be_used_goes_to_slicers_exporter(dicom_case, tmp_path, cause):
    case = dicom_case
    if cause == "files missing from the database":
        case.dicom.instanceFiles.pop(next(iter(case.dicom.instanceFiles)))
    else:
        for volume in (case.volume, case.protected):
            volume.SetSpacing(1.0, 1.0, 1.0)
    output = case.logic.exportProtectedToDicom(case.protected, case.volume, tmp_path / "out")
    ((volume, tags, folder),) = case.dicom.exported
    assert not output.sourceTagsKept and volume is case.protected and folder == tmp_path / "out"
    assert tags["SeriesInstanceUID"] == output.seriesInstanceUID and tags["StudyInstanceUID"] == STUDY_UID
    assert tags["SeriesDescription"] == "CT Abdomen 2.5 [UMedProtect]" and tags["Modality"] == "CT"
    assert not any((tmp_path / "out").glob("*.dcm"))  # the product wrote nothing
    assert case.dicom.imported == [(tmp_path / "out", False, [])]


def test_a_volume_not_from_dicom_goes_to_slicers_exporter_with_the_study_and_series_tags(scene, protector_file):
    image, lesions = phantom_volume((4, 32, 32), n_lesions=1, rng=6)
    volume = slicer.util.addVolumeFromArray(np.round(image).astype(np.int16), name="ct")
    study = place_in_study(volume, modality="MR")
    dicom = slicer_shim.FakeDicomServices()
    logic = UMedProtectLogic(dicom=dicom)
    protected = protect(logic, volume, segment(volume, lesions), protector_file)

    output = logic.exportProtectedToDicom(protected, volume)
    ((exported, tags, folder),) = dicom.exported
    assert exported is protected and not output.sourceTagsKept
    assert tags == {
        "PatientName": "PHANTOM^ONE",
        "PatientID": "PH001",
        "StudyInstanceUID": STUDY_UID,
        "StudyDescription": "Abdomen",
        "SeriesDescription": "ct [UMedProtect]",
        "Modality": "MR",
        "Manufacturer": "UMedProtect",
        "Model": "umedprotect",
        "SeriesInstanceUID": output.seriesInstanceUID,
    }
    assert dicom.imported == [(folder, True, [])] and not folder.exists()
    assert subject_hierarchy().GetItemParent(subject_hierarchy().GetItemByDataNode(protected)) == study


@pytest.mark.parametrize("study", ["none", "one without a StudyInstanceUID"])
def test_a_study_is_made_or_given_a_uid_and_later_exports_reuse_it(scene, protector_file, study):
    image, lesions = phantom_volume((4, 32, 32), n_lesions=1, rng=6)
    volume = slicer.util.addVolumeFromArray(np.round(image).astype(np.int16), name="ct")
    if study != "none":  # made in the Data module
        sh = subject_hierarchy()
        item = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "someone"), "a study")
        sh.SetItemParent(sh.GetItemByDataNode(volume), item)
    dicom = slicer_shim.FakeDicomServices()
    logic = UMedProtectLogic(dicom=dicom)
    protected = protect(logic, volume, segment(volume, lesions), protector_file)

    first, second = (logic.exportProtectedToDicom(protected, volume) for _ in range(2))
    assert first.studyInstanceUID == second.studyInstanceUID != ""
    assert first.seriesInstanceUID != second.seriesInstanceUID
    assert [tags["Modality"] for _, tags, _ in dicom.exported] == ["OT", "OT"]
    assert [tags["StudyInstanceUID"] for _, tags, _ in dicom.exported] == [first.studyInstanceUID] * 2
    sh = subject_hierarchy()
    protected_study = sh.GetItemParent(sh.GetItemByDataNode(protected))
    assert sh.GetItemAttribute(protected_study, "DICOM.StudyInstanceUID") == first.studyInstanceUID
    if study != "none":
        assert protected_study == sh.GetItemParent(sh.GetItemByDataNode(volume))


def test_refused_before_any_work(dicom_case, tmp_path):
    case = dicom_case
    other = slicer.util.addVolumeFromArray(np.zeros((2, 4, 4), np.int16), name="other")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not a protected volume of 'other'"):
        case.logic.exportProtectedToDicom(case.protected, other)
    with pytest.raises(InputError, match="not a protected volume"):
        case.logic.exportProtectedToDicom(case.volume, case.volume)
    with pytest.raises(InputError, match="not empty"):
        case.logic.exportProtectedToDicom(case.protected, case.volume, tmp_path / "full")
    assert case.dicom.exported == case.dicom.imported == []
    assert (tmp_path / "full" / "notes.txt").read_text() == "keep"


def test_a_cancelled_export_writes_and_imports_nothing(dicom_case, tmp_path):
    case = dicom_case
    case.logic.runner = DirectRunner(cancelled=lambda: True)
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "new", tmp_path / "empty"):
        with pytest.raises(Cancelled):
            case.logic.exportProtectedToDicom(case.protected, case.volume, folder)
    assert not (tmp_path / "new").exists() and list((tmp_path / "empty").iterdir()) == []
    assert case.dicom.exported == case.dicom.imported == []


class Exportable:
    """Slicer's qSlicerDICOMExportable: tags, an output directory."""

    def __init__(self) -> None:
        self.tags, self.directory = {"SeriesDescription": "No series description", "Modality": "CT"}, ""

    def setTag(self, name: str, value: str) -> None:
        self.tags[name] = value


def test_slicer_dicom_drives_slicers_scalar_volume_exporter_indexer_and_database(scene, monkeypatch, tmp_path):
    from UMedProtectLib.DicomExport import SlicerDicom

    calls = []

    class Plugin:  # DICOMScalarVolumePlugin.DICOMScalarVolumePluginClass
        def examineForExport(self, item):
            calls.append(("examine", item))
            self.exportables = [Exportable()]
            return self.exportables

        def export(self, exportables):
            calls.append(("export", [(e.directory, e.tags) for e in exportables]))
            return "" if exportables[0].tags["Modality"] else "Empty modality"

    class Database:
        isOpen = True

        def fileForInstance(self, uid):
            return {"1.2.3": "/db/1.2.3"}.get(uid, "")

    def importDicom(folder, database, copyFiles):
        calls.append(("import", folder, database, copyFiles))
        return True

    plugins = types.SimpleNamespace(DICOMScalarVolumePluginClass=Plugin)
    monkeypatch.setitem(sys.modules, "DICOMScalarVolumePlugin", plugins)
    dicomLib = types.SimpleNamespace(DICOMUtils=types.SimpleNamespace(importDicom=importDicom))
    monkeypatch.setitem(sys.modules, "DICOMLib", dicomLib)
    database = Database()
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    volume = slicer.util.addVolumeFromArray(np.zeros((2, 4, 4), np.int16), name="ct")
    item = subject_hierarchy().GetItemByDataNode(volume)
    dicom = SlicerDicom()

    assert (dicom.fileForInstance("1.2.3"), dicom.fileForInstance("9")) == ("/db/1.2.3", "")
    dicom.exportVolume(volume, {"Modality": "MR", "SeriesInstanceUID": "1.2.4"}, tmp_path)
    dicom.importFolder(tmp_path, copyFiles=True)
    assert calls == [
        ("examine", item),
        (
            "export",
            [
                (
                    str(tmp_path),
                    {"SeriesDescription": "No series description", "Modality": "MR", "SeriesInstanceUID": "1.2.4"},
                )
            ],
        ),
        ("import", str(tmp_path), database, True),
    ]
    with pytest.raises(RuntimeError, match="Empty modality"):
        dicom.exportVolume(volume, {"Modality": ""}, tmp_path)
    database.isOpen = False
    with pytest.raises(InputError, match="DICOM database is not open"):
        dicom.fileForInstance("1.2.3")
    monkeypatch.setitem(sys.modules, "DICOMScalarVolumePlugin", None)
    with pytest.raises(InputError, match="DICOM module is not available"):
        dicom.exportVolume(volume, {}, tmp_path)
