"""MRML nodes <-> the product: protection with preview outputs, protector fitting, volume files.

Runs without a GUI. MRML nodes are read and written in the calling thread only; the computing in
between touches numpy arrays only and is handed to the logic's *runner* (see ``BackgroundWork``):
the batch script and the tests run it in place, the panel on a worker thread behind a progress
dialog with Cancel. A cancelled run creates no node and writes no file.
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from umedprotect.errors import Cancelled, InputError
from umedprotect.settings import ProtectionSettings

from . import DicomExport
from .BackgroundWork import CancelCheck, DirectRunner, ProgressCallback, Runner
from .Parameters import UMedProtectParameterNode

TORCH_REQUIREMENT = ">=2.1"
PIP_REQUIREMENTS = {  # import name -> requirement, for the product's packages that Slicer does not bundle
    "scipy": "scipy>=1.10",
    "safetensors": "safetensors>=0.4",
    "tqdm": "tqdm>=4.60",
    "slicerio": "slicerio>=1.0",
    "isal": "isal>=1.6",  # .nii.gz reading and writing
}
HEATMAP_COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
SOURCE_ATTRIBUTE = "UMedProtect.InputVolumeID"  # set on output nodes: the volume they were computed from
DERIVATION_ATTRIBUTE = "UMedProtect.DerivationDescription"  # set on protected volumes: how they were made
PROTECTOR_ENDING = ".safetensors"


@dataclass(frozen=True)
class CaseArrays:
    """A case as the product takes it: copies of the node's voxels, so the scene may change meanwhile."""

    name: str
    image: np.ndarray  # (k, j, i); (j, i) for a single-slice volume, which is protected as a 2D image
    labels: np.ndarray  # segment n -> label n, same shape
    spacing: tuple[float, ...]  # per array axis
    singleSlice: bool


@dataclass
class ProtectionOutput:
    """Nodes created or updated by :meth:`UMedProtectLogic.process`, and the product's result."""

    protectedVolume: Any  # vtkMRMLScalarVolumeNode, the input's geometry and pixel type
    heatmapVolume: Any  # vtkMRMLScalarVolumeNode, |change| in native units (float32)
    result: Any  # umedprotect.array_protection.ProtectionResult
    metrics: dict


@dataclass(frozen=True)
class DicomExportOutput:
    """A protected series added to the DICOM database by :meth:`UMedProtectLogic.exportProtectedToDicom`."""

    seriesInstanceUID: str
    studyInstanceUID: str
    folder: pathlib.Path | None  # where the files stay; None: copied into the database from a temporary folder
    sourceTagsKept: bool  # written by the product from the source's files (else by Slicer's exporter)


class UMedProtectLogic(ScriptedLoadableModuleLogic):
    """Protection, preview and fitting on MRML nodes; blocking, with the computing handed to ``runner``."""

    def __init__(self, runner: Runner | None = None, dicom: DicomExport.DicomServices | None = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = runner or DirectRunner()
        self.dicom = dicom or DicomExport.SlicerDicom()

    def getParameterNode(self) -> UMedProtectParameterNode:
        return UMedProtectParameterNode(super().getParameterNode())

    # -- dependencies ---------------------------------------------------------------------------

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Install torch (through the PyTorch extension) and the product's pip packages when missing."""
        if importlib.util.find_spec("torch") is None:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise RuntimeError(
                    _("UMed Protect needs the PyTorch extension: install 'PyTorch' from the Extensions Manager.")
                ) from None
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=askConfirmation, torchVersionRequirement=TORCH_REQUIREMENT
            )
            if torch is None:
                raise RuntimeError(_("PyTorch is required; it can be installed in the 'PyTorch Utils' module."))
        missing = [
            requirement for module, requirement in PIP_REQUIREMENTS.items() if importlib.util.find_spec(module) is None
        ]
        if missing:
            question = _("UMed Protect needs these Python packages: {packages}. Install them now?").format(
                packages=", ".join(missing)
            )
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(question):
                raise RuntimeError(
                    _("Required Python packages are missing: {packages}").format(packages=", ".join(missing))
                )
            slicer.util.pip_install(missing)

    @staticmethod
    def describeDevices() -> str:
        from umedprotect.devices import describe_devices

        return describe_devices()

    # -- MRML -> arrays -------------------------------------------------------------------------

    @staticmethod
    def spacingPerArrayAxis(volumeNode) -> tuple[float, ...]:
        """Voxel spacing in numpy (k, j, i) order, i.e. reversed IJK spacing."""
        return tuple(reversed(volumeNode.GetSpacing()))

    @staticmethod
    def labelArray(volumeNode, segmentationNode, segmentIds: Sequence[str] | None = None) -> np.ndarray:
        """Selected segments as one label array on the volume's voxel grid (segment n -> label n, 1-based).

        ``segmentIds=None`` selects every segment. Where segments overlap, the later one wins.
        """
        segmentation = segmentationNode.GetSegmentation()
        if segmentIds is None:
            segmentIds = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        if not segmentIds:
            raise InputError(f"segmentation '{segmentationNode.GetName()}' has no segments selected")
        labels = np.zeros(slicer.util.arrayFromVolume(volumeNode).shape[:3], dtype=np.uint16)
        for label, segmentId in enumerate(segmentIds, start=1):
            if segmentation.GetSegment(segmentId) is None:
                raise InputError(f"segmentation '{segmentationNode.GetName()}' has no segment {segmentId!r}")
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
            labels[mask != 0] = label
        if not labels.any():
            segmentationName, volumeName = segmentationNode.GetName(), volumeNode.GetName()
            raise InputError(f"the selected segments of '{segmentationName}' are empty on the grid of '{volumeName}'")
        return labels

    def caseArrays(self, inputVolume, segmentationNode, segmentIds: Sequence[str] | None = None) -> CaseArrays:
        """Copies of a volume's voxels and of its selected segments as labels, ready for the product."""
        if inputVolume is None or segmentationNode is None:
            raise InputError("an input volume and a segmentation are required")
        if inputVolume.GetImageData() is None:
            raise InputError(f"volume '{inputVolume.GetName()}' has no image data")
        labels = self.labelArray(inputVolume, segmentationNode, segmentIds)
        image = np.array(slicer.util.arrayFromVolume(inputVolume))  # a copy: the worker never reads the node
        spacing = self.spacingPerArrayAxis(inputVolume)
        if image.ndim == 3 and image.shape[0] == 1:
            return CaseArrays(inputVolume.GetName(), image[0], labels[0], spacing[1:], True)
        return CaseArrays(inputVolume.GetName(), image, labels, spacing, False)

    @staticmethod
    def sceneCases() -> list[tuple[Any, Any]]:
        """(volume, segmentation) pairs in the scene: segmentations whose reference geometry is a scalar volume."""
        role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        cases = []
        for segmentationNode in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
            volume = segmentationNode.GetNodeReference(role)
            if (
                volume is not None
                and volume.IsA("vtkMRMLScalarVolumeNode")
                and not volume.IsA("vtkMRMLLabelMapVolumeNode")
            ):
                cases.append((volume, segmentationNode))
        return cases

    # -- protection -----------------------------------------------------------------------------

    def process(
        self,
        inputVolume,
        segmentationNode,
        segmentIds: Sequence[str] | None = None,
        settings: ProtectionSettings | None = None,
        protectedVolume=None,
        heatmapVolume=None,
        protectedName: str | None = None,
    ) -> ProtectionOutput:
        """Protect ``inputVolume`` inside the selected segments (None: all) and their contour band.

        Creates (or updates the given) protected volume, named ``<input> protected`` unless
        ``protectedName`` is given, with the input's exact geometry and pixel type, and a
        ``<input> perturbation`` heatmap (|change|, native units, float32). The input node is never
        modified. Raises ``umedprotect.errors.InputError`` for unusable inputs and
        ``umedprotect.errors.Cancelled`` when the run is cancelled (then no node is created or changed).
        """
        settings = settings or ProtectionSettings()
        case = self.caseArrays(inputVolume, segmentationNode, segmentIds)
        if settings.victim_normalisation is None:  # as nnU-Net would normalise this image (umedprotect.victim_units)
            from umedprotect.victim_units import image_normalisation

            settings = replace(settings, victim_normalisation=image_normalisation(case.image))
        loading, slices = _("Loading the protector..."), _("Protecting slices: {done}/{total}")

        def work(progress: ProgressCallback, cancelled: CancelCheck):
            from umedprotect.dicom_series import derivation_description
            from umedprotect.methods import DEFAULT_METHOD, setup_method

            progress(0.0, loading)
            setup = setup_method(DEFAULT_METHOD, settings)

            def sliceProgress(done: int, total: int) -> None:
                progress(0.05 + 0.95 * done / max(total, 1), slices.format(done=done, total=total))

            result = setup.case_protector(
                case.image, case.labels, spacing=case.spacing, progress=sliceProgress, cancel=cancelled
            )
            protectorSha256 = setup.protector_info["sha256"] if setup.protector_info else None
            return result, derivation_description(setup.method, setup.parameters, protectorSha256)

        result, derivation = self.runner(_("Computing protection..."), work)
        protected = result.protected[None] if case.singleSlice else result.protected
        change = np.abs(result.change[None] if case.singleSlice else result.change).astype(np.float32)
        name = inputVolume.GetName()
        protectedVolume = self._volumeLike(
            inputVolume, protectedName or f"{name} protected", protected, protectedVolume
        )
        protectedVolume.SetAttribute(DERIVATION_ATTRIBUTE, derivation)
        heatmapVolume = self._volumeLike(inputVolume, f"{name} perturbation", change, heatmapVolume)
        self._copyDisplay(inputVolume, protectedVolume)
        self._styleHeatmap(heatmapVolume, float(change.max()))
        return ProtectionOutput(protectedVolume, heatmapVolume, result, dict(result.metrics))

    # -- arrays -> MRML -------------------------------------------------------------------------

    @staticmethod
    def outputOf(node, inputVolume):
        """``node`` if it is an output computed from ``inputVolume`` (so it may be shown or updated), else None."""
        if node is None or inputVolume is None or node.GetAttribute(SOURCE_ATTRIBUTE) != inputVolume.GetID():
            return None
        return node

    @staticmethod
    def _volumeLike(reference, name: str, array: np.ndarray, node=None):
        """Scalar volume ``node`` (created when None) holding ``array`` on the reference's exact geometry."""
        if node is None or slicer.mrmlScene.GetNodeByID(node.GetID()) is None:
            node = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLScalarVolumeNode", slicer.mrmlScene.GenerateUniqueName(name)
            )
        node.SetAttribute(SOURCE_ATTRIBUTE, reference.GetID())
        matrix = vtk.vtkMatrix4x4()
        reference.GetIJKToRASMatrix(matrix)
        node.SetIJKToRASMatrix(matrix)
        node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(node, array)
        node.CreateDefaultDisplayNodes()
        return node

    @staticmethod
    def _copyDisplay(source, target) -> None:
        """Show the protected volume with the input's window/level and colours, for a fair comparison."""
        sourceDisplay, targetDisplay = source.GetDisplayNode(), target.GetDisplayNode()
        if sourceDisplay is not None and targetDisplay is not None:
            targetDisplay.CopyContent(sourceDisplay)

    @staticmethod
    def _styleHeatmap(heatmapVolume, maximum: float) -> None:
        """Hot colour map from 0 to the largest change; unchanged voxels are transparent."""
        display = heatmapVolume.GetDisplayNode()
        display.SetAndObserveColorNodeID(HEATMAP_COLOR_NODE_ID)
        top = maximum if maximum > 0 else 1.0
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, top)
        display.AutoThresholdOff()
        display.SetThreshold(top * 1e-6, top)
        display.ApplyThresholdOn()

    @staticmethod
    def showPreview(background, heatmapVolume, opacity: float, fit: bool = False) -> None:
        """Show ``background`` in the slice views with the heatmap as foreground overlay."""
        slicer.util.setSliceViewerLayers(
            background=background, foreground=heatmapVolume, foregroundOpacity=opacity, fit=fit
        )

    # -- files ----------------------------------------------------------------------------------

    @staticmethod
    def checkOutputFile(path: str | pathlib.Path, endings: Sequence[str], overwrite: bool = True) -> pathlib.Path:
        """``path`` as a Path when a file of one of ``endings`` can be written there; else InputError."""
        path = pathlib.Path(path)
        if not path.name.lower().endswith(tuple(endings)):
            raise InputError(f"{path}: unsupported file type (use one of {', '.join(endings)})")
        if not overwrite and path.exists():
            raise InputError(f"{path}: output already exists")
        if not path.parent.is_dir():
            raise InputError(f"{path.parent}: output folder not found")
        return path

    def saveVolume(self, volumeNode, path: str | pathlib.Path, overwrite: bool = True) -> pathlib.Path:
        """Write a volume to NRRD/NIfTI/MHA atomically; the node's own storage node is left as it is."""
        from umedprotect.atomic import atomic_path
        from umedprotect.io import OUTPUT_ENDINGS

        path = self.checkOutputFile(path, OUTPUT_ENDINGS, overwrite)
        storageNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        try:
            with atomic_path(path) as tmp:
                storageNode.SetFileName(str(tmp))
                if not storageNode.WriteData(volumeNode):
                    raise RuntimeError(f"{path}: writing the volume failed")
        finally:
            storageNode.UnRegister(None)
        return path

    @staticmethod
    def loadVolume(path: str | pathlib.Path):
        """Read an image file into a new scalar volume node."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", path.name.split(".")[0])
        storageNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        try:
            storageNode.SetFileName(str(path))
            if not storageNode.ReadData(node) or node.GetImageData() is None:
                slicer.mrmlScene.RemoveNode(node)
                raise InputError(f"{path}: not a readable image")
        finally:
            storageNode.UnRegister(None)
        node.CreateDefaultDisplayNodes()
        return node

    # -- DICOM ----------------------------------------------------------------------------------

    def exportProtectedToDicom(
        self, protectedVolume, sourceVolume, outputFolder: str | pathlib.Path | None = None
    ) -> DicomExportOutput:
        """Write a protected volume of ``sourceVolume`` as a new DICOM series of the source's study, and add it to
        the DICOM database (through ``self.dicom``, Slicer's DICOM module by default).

        The protected volume moves into the source's subject hierarchy study. Which writer:

        - the source was loaded by Slicer's DICOM module (its ``DICOM.instanceUIDs`` name one file per slice in
          the database, and those files read as its grid): the product's writer, ``umedprotect.dicom_series``,
          as the CLI writes DICOM. Every tag of the source files is kept, so the series files beside its source
          with the same patient, study, frame of reference, acquisition and vendor tags; new Series and SOP
          Instance UIDs, ImageType DERIVED, the DerivationDescription of the protection, UMed Protect in the
          ContributingEquipmentSequence, SeriesDescription "<source's> [UMedProtect]". Preferred because
          Slicer's exporter writes a new minimal header (no ImageType DERIVED, derivation or equipment).
        - otherwise: Slicer's scalar volume exporter (DICOMScalarVolumePlugin), with the patient and study tags
          of the subject hierarchy, SeriesDescription "<source's, or its name> [UMedProtect]", the source's
          Modality (OT when unknown), Manufacturer UMedProtect and a new SeriesInstanceUID.

        The product's writer runs on the runner (arrays and files only); Slicer's exporter and the database run
        in the calling thread, which must be the main thread in Slicer (see ``DicomExport.SlicerDicom``).
        ``outputFolder`` (new or empty) keeps the files and the database links to them; None writes to a
        temporary folder whose files the database copies. Raises InputError before any writing for a volume
        that is not a protected volume of ``sourceVolume`` or an unusable folder; values the source's pixel
        format cannot store exactly are refused too (save the volume as NRRD/NIfTI then). When the run is
        cancelled, nothing is written and nothing is added to the database.
        """
        from pydicom.uid import generate_uid

        from umedprotect.dicom_series import check_output_folder

        derivation = protectedVolume.GetAttribute(DERIVATION_ATTRIBUTE) if protectedVolume is not None else None
        if self.outputOf(protectedVolume, sourceVolume) is None or not derivation:
            name = protectedVolume.GetName() if protectedVolume is not None else None
            raise InputError(f"'{name}' is not a protected volume of '{sourceVolume.GetName()}': protect it first")
        folder = check_output_folder(outputFolder) if outputFolder else None
        existed = folder is not None and folder.exists()
        files = DicomExport.sourceFiles(sourceVolume, self.dicom)
        study = DicomExport.placeInSourceStudy(protectedVolume, sourceVolume)
        temporary = None if folder else pathlib.Path(tempfile.mkdtemp(prefix="UMedProtectDicom-"))
        target = folder or temporary / "series"
        try:
            seriesUID = None
            if files:
                work = self._writeWork(DicomExport.gridImage(protectedVolume), files, target, derivation)
                seriesUID = self.runner(_("Writing the DICOM series..."), work)
            sourceTagsKept = seriesUID is not None
            if not sourceTagsKept:
                seriesUID = generate_uid()
                tags = DicomExport.exporterTags(study, sourceVolume, seriesUID)
                self.dicom.exportVolume(protectedVolume, tags, target)
            self.dicom.importFolder(target, copyFiles=folder is None)
        except Cancelled:
            if folder:
                DicomExport.removeWritten(folder, existed)
            raise
        finally:
            if temporary:
                shutil.rmtree(temporary, ignore_errors=True)
        logging.info(f"UMedProtect: '{protectedVolume.GetName()}' exported to DICOM as series {seriesUID}")
        return DicomExportOutput(seriesUID, DicomExport.studyInstanceUID(study), folder, sourceTagsKept)

    @staticmethod
    def _writeWork(image, files: Sequence[str], folder: pathlib.Path, derivation: str):
        writing = _("Writing the DICOM series...")

        def work(progress: ProgressCallback, cancelled: CancelCheck) -> str | None:
            progress(0.0, writing)
            seriesUID = DicomExport.writeWithSourceTags(image, files, folder, derivation)
            if cancelled():
                raise Cancelled("DICOM export cancelled")
            return seriesUID

        return work

    # -- fitting --------------------------------------------------------------------------------

    def fit(
        self,
        outputPath: str | pathlib.Path,
        datasetDir: str | None = None,
        epsilon: float | None = None,
        bandRadius: int | None = None,
        **fitOptions,
    ) -> pathlib.Path:
        """Fit a protector on an nnU-Net-layout folder, or (``datasetDir=None``) on the segmented cases
        in the scene (:meth:`sceneCases`), and save it to ``outputPath``.

        ``epsilon``/``bandRadius`` default to the protector defaults; ``fitOptions`` are
        ``umedprotect.fitting.FitSettings`` fields (``steps``, ``device``, ``seed``, ...). The file
        is written only when the fit finishes (not when it is cancelled).
        """
        if not outputPath:
            raise InputError("choose a file for the fitted protector")
        path = self.checkOutputFile(outputPath, (PROTECTOR_ENDING,))
        cases = []
        if not datasetDir:
            cases = [self.caseArrays(volume, segmentationNode) for volume, segmentationNode in self.sceneCases()]
            if not cases:
                raise InputError("no segmented cases in the scene (segmentations with a reference volume)")
        preparing, steps = _("Preparing training slices..."), _("Fitting: step {step}/{total}")

        def work(progress: ProgressCallback, cancelled: CancelCheck) -> pathlib.Path:
            from umedprotect.fitting import FitSettings, fit_on_datasets, fit_protector
            from umedprotect.protector import ProtectorConfig, save_protector
            from umedprotect.slices import case_slices

            config = ProtectorConfig()
            config = replace(
                config,
                epsilon=config.epsilon if epsilon is None else float(epsilon),
                band_radius=config.band_radius if bandRadius is None else int(bandRadius),
            )
            settings = FitSettings(**fitOptions)

            def fitProgress(step: int, total: int, record: dict) -> None:
                progress(step / max(total, 1), steps.format(step=step, total=total))

            progress(0.0, preparing)
            if datasetDir:
                protector, history = fit_on_datasets([datasetDir], config, settings, fitProgress, cancelled)
            else:
                samples = [s for c in cases for s in case_slices(c.image, c.labels, c.spacing, c.name)]
                protector, history = fit_protector(samples, config, settings, fitProgress, cancelled)
            if cancelled():
                raise Cancelled("fitting cancelled")
            logging.info(f"UMedProtect: fitted a protector in {len(history)} steps")
            return save_protector(protector, path)

        return self.runner(_("Fitting protector..."), work)
