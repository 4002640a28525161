"""DICOM export of a protected volume: into its source's study, through the product's writer or Slicer's exporter.

:meth:`UMedProtectLogic.exportProtectedToDicom` chooses the writer. Slicer's DICOM module (its database, the
scalar volume exporter, the indexer) is reached through :class:`DicomServices`, implemented for the application
by :class:`SlicerDicom`, so that the logic runs and is tested where that module does not exist. The product's
DICOM code (and SimpleITK, pydicom) is imported on first use, not when Slicer starts.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import slicer
import vtk

from umedprotect.errors import InputError

if TYPE_CHECKING:
    import SimpleITK as sitk

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # Slicer's scalar volume plugin: the SOP Instance UID of each slice
DICOM_UID_NAME = "DICOM"  # subject hierarchy: the name of an item's DICOM UID
DICOM_ATTRIBUTE_PREFIX = "DICOM."  # subject hierarchy: attributes holding DICOM tags, by keyword
UNKNOWN_MODALITY = "OT"  # "Other": a volume not loaded from DICOM
MODEL_NAME = "umedprotect"
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


class DicomServices(Protocol):
    """What the export needs of Slicer's DICOM module."""

    def fileForInstance(self, instanceUID: str) -> str:
        """The file of a SOP instance in the DICOM database ('' when unknown)."""
        ...

    def exportVolume(self, volumeNode, tags: dict[str, str], folder: pathlib.Path) -> None:
        """Write a scalar volume (in a subject hierarchy study) as a DICOM series with these exportable tags."""
        ...

    def importFolder(self, folder: pathlib.Path, copyFiles: bool) -> None:
        """Add the DICOM files of a folder (and its subfolders) to the DICOM database."""
        ...


class SlicerDicom:
    """:class:`DicomServices` of the Slicer application. Main thread only: the database is a Qt SQL connection
    of the main thread, and the exporter runs the CreateDICOMSeries CLI module on the scene's volume."""

    @staticmethod
    def _database():
        database = getattr(slicer, "dicomDatabase", None)
        if database is None or not database.isOpen:
            raise InputError("Slicer's DICOM database is not open: open the DICOM module and choose its folder")
        return database

    def fileForInstance(self, instanceUID: str) -> str:
        return self._database().fileForInstance(instanceUID)

    def exportVolume(self, volumeNode, tags: dict[str, str], folder: pathlib.Path) -> None:
        try:
            from DICOMScalarVolumePlugin import DICOMScalarVolumePluginClass
        except ModuleNotFoundError:
            raise InputError("Slicer's DICOM module is not available, so nothing can be exported to DICOM") from None
        self._database()  # the exporter checks the new series UID against the database
        exporter = DICOMScalarVolumePluginClass()
        exportables = exporter.examineForExport(subjectHierarchy().GetItemByDataNode(volumeNode))
        for exportable in exportables:
            exportable.directory = str(folder)
            for name, value in tags.items():
                exportable.setTag(name, value)
        error = exporter.export(exportables)
        if error:
            raise RuntimeError(f"Slicer's DICOM export of '{volumeNode.GetName()}' failed: {error}")

    def importFolder(self, folder: pathlib.Path, copyFiles: bool) -> None:
        from DICOMLib import DICOMUtils

        if not DICOMUtils.importDicom(str(folder), self._database(), copyFiles=copyFiles):
            raise RuntimeError(f"{folder}: adding the DICOM files to the database failed (see the log)")


def subjectHierarchy():
    """The scene's subject hierarchy node."""
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)


def placeInSourceStudy(protectedVolume, sourceVolume) -> int:
    """Move ``protectedVolume`` into the subject hierarchy study of ``sourceVolume`` and return that study.

    For a source in no study (loaded from a file) the protected volume keeps the study a previous export made
    for it, or a new patient and study are made. A study without a StudyInstanceUID is given a new one, so that
    every export of the source goes into the same study.
    """
    shNode = subjectHierarchy()
    studyLevel = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    protectedItem = shNode.GetItemByDataNode(protectedVolume)
    for item in (sourceVolume, protectedVolume):
        study = shNode.GetItemParent(shNode.GetItemByDataNode(item))
        if study and shNode.GetItemLevel(study) == studyLevel:
            break
    else:
        patient = shNode.CreateSubjectItem(shNode.GetSceneItemID(), sourceVolume.GetName())
        study = shNode.CreateStudyItem(patient, "UMed Protect")
    if not studyInstanceUID(study):
        from pydicom.uid import generate_uid

        studyUID = generate_uid()
        shNode.SetItemUID(study, DICOM_UID_NAME, studyUID)
        shNode.SetItemAttribute(study, DICOM_ATTRIBUTE_PREFIX + "StudyInstanceUID", studyUID)
    shNode.SetItemParent(protectedItem, study)
    return study


def studyInstanceUID(study: int) -> str:
    """The StudyInstanceUID of a subject hierarchy study ('' when it has none)."""
    shNode = subjectHierarchy()
    attribute = shNode.GetItemAttribute(study, DICOM_ATTRIBUTE_PREFIX + "StudyInstanceUID")
    return attribute or shNode.GetItemUID(study, DICOM_UID_NAME)


def exporterTags(study: int, sourceVolume, seriesUID: str) -> dict[str, str]:
    """Tags for Slicer's exporter: the patient's and study's (as its export dialog takes them from the subject
    hierarchy) and the derived series': the source's description with the suffix (its name when it has none), the
    source's modality and frame of reference, UMed Protect, a new UID."""
    from umedprotect.dicom_series import MANUFACTURER

    shNode = subjectHierarchy()
    tags = {}
    for item in (shNode.GetItemParent(study), study):
        for name in shNode.GetItemAttributeNames(item):
            if name.startswith(DICOM_ATTRIBUTE_PREFIX):
                tags[name[len(DICOM_ATTRIBUTE_PREFIX) :]] = shNode.GetItemAttribute(item, name)
    sourceItem = shNode.GetItemByDataNode(sourceVolume)

    def sourceTag(name: str) -> str:
        return shNode.GetItemAttribute(sourceItem, DICOM_ATTRIBUTE_PREFIX + name)

    frame = sourceTag("FrameOfReferenceUID")
    tags.update(
        StudyInstanceUID=studyInstanceUID(study),
        SeriesDescription=seriesDescription(sourceTag("SeriesDescription") or sourceVolume.GetName()),
        Modality=sourceTag("Modality") or UNKNOWN_MODALITY,
        Manufacturer=MANUFACTURER,
        Model=MODEL_NAME,
        SeriesInstanceUID=seriesUID,
        **({"FrameOfReferenceUID": frame} if frame else {}),
    )
    return tags


def seriesDescription(base: str) -> str:
    """A SeriesDescription (LO, 64 characters) ending in the product's suffix."""
    from umedprotect import dicom_series

    return (base[: dicom_series.LONG_STRING_MAX - len(dicom_series.SERIES_SUFFIX)] + dicom_series.SERIES_SUFFIX).strip()


def sourceFiles(volumeNode, dicom: DicomServices) -> list[str] | None:
    """The DICOM file of each slice of a volume loaded by Slicer's DICOM module, in slice order; None when the
    volume was not loaded from DICOM or a file is missing from the database or the disk."""
    instanceUIDs = (volumeNode.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    files = [dicom.fileForInstance(uid) for uid in instanceUIDs]
    slices = volumeNode.GetImageData().GetDimensions()[2]
    if not files or len(files) != slices or not all(name and os.path.isfile(name) for name in files):
        return None
    return files


def gridImage(volumeNode) -> sitk.Image:
    """A copy of a volume's voxels as a SimpleITK image with the volume's grid (LPS, as DICOM readers give it)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.array(slicer.util.arrayFromVolume(volumeNode)))
    directions = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASDirectionMatrix(directions)
    image.SetSpacing(volumeNode.GetSpacing())
    image.SetOrigin(tuple(LPS_FROM_RAS @ np.array(volumeNode.GetOrigin())))
    image.SetDirection(tuple((LPS_FROM_RAS @ slicer.util.arrayFromVTKMatrix(directions)[:3, :3]).ravel()))
    return image


def writeWithSourceTags(image: sitk.Image, files: Sequence[str], folder: pathlib.Path, description: str) -> str | None:
    """Write ``image`` as a series derived from ``files`` (its source, one file per slice) with the product's writer;
    its SeriesInstanceUID, or None when the files do not read as ``image``'s grid (nothing is written then).

    Touches no MRML: it runs on the logic's runner.
    """
    import SimpleITK as sitk

    from umedprotect import dicom_series
    from umedprotect.io import geometry_difference, read_image

    with tempfile.TemporaryDirectory(prefix="umedprotect-source-") as linked:
        for index, name in enumerate(files):  # the series alone in a folder, as the product reads a series
            _linkOrCopy(pathlib.Path(name), pathlib.Path(linked) / f"{index:05d}.dcm")
        source = dicom_series.read_source(linked)
        problem = geometry_difference(read_image(linked), image)
        if problem:
            logging.warning(f"UMedProtect: the source DICOM files do not read as the volume's grid ({problem})")
            return None
        dicom_series.write_series(sitk.GetArrayFromImage(image), image, source, folder, description)
    written = sorted(pathlib.Path(folder).glob("*.dcm"))[0]
    return str(dicom_series.read_header(str(written)).SeriesInstanceUID)


def _linkOrCopy(source: pathlib.Path, target: pathlib.Path) -> None:
    try:
        target.symlink_to(source.resolve())
    except OSError:  # no symbolic links here (Windows without the privilege)
        shutil.copyfile(source, target)


def removeWritten(folder: pathlib.Path, existed: bool) -> None:
    """Undo an export into ``folder``, which was new (``existed`` False) or empty before."""
    if not existed:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
