"""UMedProtect: protect segmentation datasets against unauthorised AI training, inside 3D Slicer.

Thin Slicer glue around the pure-Python backend in ``umedprotect``: MRML nodes <-> numpy arrays
and geometry. torch and the torch-dependent backend modules are imported on first use only; torch
itself is installed through the PyTorch extension (``PyTorchUtils``) when it is missing.
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

TORCH_REQUIREMENT = ">=2.1"
PIP_REQUIREMENTS = {"scipy": "scipy>=1.10", "safetensors": "safetensors>=0.4"}  # import name -> requirement
DEVICE_CHOICES = ["auto", "cpu", "cuda"]  # same as umedprotect.devices.DEVICE_CHOICES (that module imports torch)
HEATMAP_COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
SOURCE_ATTRIBUTE = "UMedProtect.InputVolumeID"  # set on output nodes: the volume they were computed from

ProgressCallback = Callable[[float, str], None]  # (fraction done 0..1, message)


#
# Module
#


class UMedProtect(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("UMed Protect")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Utilities")]
        self.parent.dependencies = []  # PyTorchUtils (PyTorch extension) is used lazily, on first use
        self.parent.contributors = ["UMedProtect developers"]
        self.parent.helpText = _(
            "Adds small, contour- and texture-aware perturbations inside the selected segments and a thin "
            "band around their contours, so that the images can be shared while a segmentation network "
            "trained on them without permission learns little (UMed method, Lin et al. 2024). Labels are "
            "never changed. Preview shows the |perturbation| heatmap and PSNR/SSIM before exporting."
        )
        self.parent.acknowledgementText = _(
            "Method: Lin et al., 'Unlearnable Examples for Medical Image Segmentation' (UMed), 2024. "
            "Uses PyTorch through the SlicerPyTorch extension."
        )


#
# Parameters
#


@parameterNodeWrapper
class UMedProtectParameterNode:
    """Panel state, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    allSegments: bool = True
    segmentIds: list[str]
    useDefaultProtector: bool = True
    protectorPath: pathlib.Path
    epsilon: Annotated[float, WithinRange(0.5, 16.0)] = 4.0
    bandRadius: Annotated[int, WithinRange(0, 32)] = 3
    minPsnr: Annotated[float, WithinRange(0.0, 120.0)] = 0.0  # 0: no visibility floor
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    showProtected: bool = False
    exportPath: pathlib.Path
    previewVolume: vtkMRMLScalarVolumeNode  # reused by every preview of the same input
    protectedVolume: vtkMRMLScalarVolumeNode  # latest result (preview or export), shown by the toggle
    heatmapVolume: vtkMRMLScalarVolumeNode
    fitFromFolder: bool = False
    fitDatasetPath: pathlib.Path
    fitOutputPath: pathlib.Path
    fitSteps: Annotated[int, WithinRange(10, 100000)] = 800


@dataclass
class ProtectionSettings:
    """Settings of one protection run; ``None`` means the protector's own value."""

    epsilon: float | None = None  # budget in 1/255 of the case's intensity window
    bandRadius: int | None = None  # contour band half-width, pixels
    minPsnr: float | None = None  # visibility floor, dB: the perturbation is scaled down to stay above it
    protectorPath: str | None = None  # None: the bundled default protector
    device: str = "auto"


@dataclass
class ProtectionOutput:
    """Nodes created or updated by :meth:`UMedProtectLogic.process`, and the backend's result."""

    protectedVolume: Any  # vtkMRMLScalarVolumeNode
    heatmapVolume: Any  # vtkMRMLScalarVolumeNode, |change| in native units (float32)
    result: Any  # umedprotect.array_protection.ProtectionResult
    metrics: dict


def pathOrNone(path: pathlib.Path | str | None) -> str | None:
    """A path parameter as a string, or None when it is unset (the wrapper stores an empty path as '.')."""
    text = str(path) if path is not None else ""
    return None if text in ("", ".") else text


#
# Widget
#


class UMedProtectWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Panel: glue between the .ui widgets, the parameter node and the logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/UMedProtect.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = UMedProtectLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.segmentSelectorWidget.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)
        self.ui.segmentSelectorWidget.connect("segmentSelectionChanged(QStringList)", self.onSegmentSelectionChanged)
        self.ui.previewButton.connect("clicked(bool)", self.onPreviewButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.toggleProtectedButton.connect("toggled(bool)", self.onToggleProtected)
        self.ui.heatmapOpacitySliderWidget.connect("valueChanged(double)", self.onHeatmapOpacityChanged)
        self.ui.detectDevicesButton.connect("clicked(bool)", self.onDetectDevicesButton)
        self.ui.fitButton.connect("clicked(bool)", self.onFitButton)
        self.ui.deviceInfoLabel.text = _("not checked yet (PyTorch is loaded on first use)")

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode: UMedProtectParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self.ui.segmentSelectorWidget.setCurrentNode(self._parameterNode.segmentation)
            self.ui.segmentSelectorWidget.setSelectedSegmentIDs(list(self._parameterNode.segmentIds))
            self._updateButtons()

    def onSegmentationChanged(self, node) -> None:
        if self._parameterNode:
            self._parameterNode.segmentation = node

    def onSegmentSelectionChanged(self, segmentIds) -> None:
        if self._parameterNode:
            self._parameterNode.segmentIds = list(segmentIds)

    def _updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.inputVolume and p.segmentation and (p.allSegments or p.segmentIds))
        self.ui.previewButton.enabled = ready
        self.ui.exportButton.enabled = ready
        self.ui.protectorPathLineEdit.enabled = bool(p and not p.useDefaultProtector)
        self.ui.toggleProtectedButton.enabled = bool(p and p.protectedVolume)
        self.ui.fitDatasetPathLineEdit.enabled = bool(p and p.fitFromFolder)
        self.ui.fitButton.enabled = bool(p and pathOrNone(p.fitOutputPath))

    def _settings(self) -> ProtectionSettings:
        p = self._parameterNode
        return ProtectionSettings(
            epsilon=p.epsilon,
            bandRadius=p.bandRadius,
            minPsnr=p.minPsnr or None,
            protectorPath=None if p.useDefaultProtector else pathOrNone(p.protectorPath),
            device=p.device,
        )

    def _runWithProgress(self, title: str, work: Callable[[ProgressCallback, Callable[[], bool]], Any]) -> Any:
        """Run blocking ``work(progress, cancelCheck)`` behind a progress dialog whose Cancel stops it."""
        dialog = slicer.util.createProgressDialog(windowTitle=_("UMed Protect"), labelText=title, maximum=100)

        def progress(fraction: float, message: str) -> None:
            dialog.value = int(100 * fraction)
            dialog.labelText = message
            slicer.app.processEvents()

        try:
            return work(progress, lambda: dialog.wasCanceled)
        finally:
            dialog.close()

    def _protect(self, preview: bool) -> ProtectionOutput | None:
        """Run the protection with the panel's settings; None when it failed or the user cancelled.

        A preview updates this input's preview volume; an export always creates a new volume node.
        """
        from umedprotect.errors import Cancelled

        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Protection failed."), waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            segmentIds = None if p.allSegments else list(p.segmentIds)
            name = p.inputVolume.GetName()
            try:
                output = self._runWithProgress(
                    _("Computing protection..."),
                    lambda progress, cancel: self.logic.process(
                        p.inputVolume, p.segmentation, segmentIds, self._settings(), progress, cancel,
                        protectedVolume=self.logic.outputOf(p.previewVolume, p.inputVolume) if preview else None,
                        heatmapVolume=self.logic.outputOf(p.heatmapVolume, p.inputVolume),
                        protectedName=_("{name} protected preview").format(name=name) if preview else None,
                    ),
                )
            except Cancelled:
                self.ui.statusLabel.text = _("Cancelled.")
                return None
            if preview:
                p.previewVolume = output.protectedVolume
            p.protectedVolume = output.protectedVolume
            p.heatmapVolume = output.heatmapVolume
            self._showMetrics(output.metrics)
            self.ui.deviceInfoLabel.text = self.logic.describeDevices()
            background = output.protectedVolume if p.showProtected else p.inputVolume
            self.logic.showPreview(background, output.heatmapVolume, p.heatmapOpacity, fit=preview)
            return output
        return None

    def _showMetrics(self, metrics: dict) -> None:
        from umedprotect.metrics import psnr_text

        self.ui.psnrValueLabel.text = psnr_text(metrics)
        self.ui.ssimValueLabel.text = f"{metrics['ssim']:.4f}"
        self.ui.maxChangeValueLabel.text = _("{change:.3g} (budget {budget:.3g})").format(
            change=metrics["max_abs_change"], budget=metrics["budget_native"]
        )
        self.ui.fractionChangedValueLabel.text = f"{100 * metrics['fraction_changed']:.2f} %"

    def onPreviewButton(self) -> None:
        if self._protect(preview=True) is not None:
            self.ui.statusLabel.text = _("Preview ready: the heatmap shows |protected - original| in native units.")

    def onExportButton(self) -> None:
        output = self._protect(preview=False)
        if output is None:
            return
        name = output.protectedVolume.GetName()
        self.ui.statusLabel.text = _("Exported '{name}' to the scene.").format(name=name)
        path = pathOrNone(self._parameterNode.exportPath)
        if path:
            with slicer.util.tryWithErrorDisplay(_("Saving the protected volume failed."), waitCursor=True):
                self.logic.saveVolume(output.protectedVolume, path)
                self.ui.statusLabel.text = _("Exported '{name}' and saved it to {path}.").format(name=name, path=path)

    def onToggleProtected(self, showProtected: bool) -> None:
        p = self._parameterNode
        if p and p.protectedVolume and p.inputVolume:
            slicer.util.setSliceViewerLayers(background=p.protectedVolume if showProtected else p.inputVolume)

    def onHeatmapOpacityChanged(self, opacity: float) -> None:
        slicer.util.setSliceViewerLayers(foregroundOpacity=opacity)

    def onDetectDevicesButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not load PyTorch."), waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            self.ui.deviceInfoLabel.text = self.logic.describeDevices()

    def onFitButton(self) -> None:
        from umedprotect.errors import Cancelled

        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Fitting the protector failed."), waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            try:
                output = self._runWithProgress(
                    _("Fitting protector..."),
                    lambda progress, cancel: self.logic.fit(
                        pathOrNone(p.fitOutputPath),
                        datasetDir=pathOrNone(p.fitDatasetPath) if p.fitFromFolder else None,
                        epsilon=p.epsilon, bandRadius=p.bandRadius, progressCallback=progress, cancelCheck=cancel,
                        steps=p.fitSteps, device=p.device,
                    ),
                )
            except Cancelled:
                self.ui.fitStatusLabel.text = _("Cancelled.")
                return
            p.protectorPath = pathlib.Path(output)
            p.useDefaultProtector = False
            self.ui.fitStatusLabel.text = _("Saved {path}; it is now the selected protector.").format(path=output)


#
# Logic
#


class UMedProtectLogic(ScriptedLoadableModuleLogic):
    """MRML nodes in and out; blocking, with progress and cancel callbacks. Usable without the widget."""

    def getParameterNode(self) -> UMedProtectParameterNode:
        return UMedProtectParameterNode(super().getParameterNode())

    # -- dependencies ---------------------------------------------------------------------------

    def ensureDependencies(self, askConfirmation: bool = True) -> None:
        """Install torch (through the PyTorch extension) and the backend's pip packages when missing."""
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
        missing = [requirement for module, requirement in PIP_REQUIREMENTS.items() if importlib.util.find_spec(module) is None]
        if missing:
            question = _("UMed Protect needs these Python packages: {packages}. Install them now?").format(
                packages=", ".join(missing)
            )
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(question):
                raise RuntimeError(_("Required Python packages are missing: {packages}").format(packages=", ".join(missing)))
            slicer.util.pip_install(missing)

    @staticmethod
    def describeDevices() -> str:
        from umedprotect.devices import describe_devices

        return describe_devices()

    # -- MRML <-> arrays ------------------------------------------------------------------------

    @staticmethod
    def spacingPerArrayAxis(volumeNode) -> tuple[float, ...]:
        """Voxel spacing in numpy (k, j, i) order, i.e. reversed IJK spacing."""
        return tuple(reversed(volumeNode.GetSpacing()))

    @staticmethod
    def labelArray(volumeNode, segmentationNode, segmentIds: Sequence[str] | None = None) -> np.ndarray:
        """Selected segments as one label array on the volume's voxel grid (segment n -> label n, 1-based).

        ``segmentIds=None`` selects every segment. Where segments overlap, the later one wins.
        """
        from umedprotect.errors import InputError

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
            raise InputError(
                f"the selected segments of '{segmentationNode.GetName()}' are empty on the grid of '{volumeNode.GetName()}'"
            )
        return labels

    @staticmethod
    def outputOf(node, inputVolume):
        """``node`` if it is an output computed from ``inputVolume`` (so it may be updated), else None."""
        if node is None or inputVolume is None or node.GetAttribute(SOURCE_ATTRIBUTE) != inputVolume.GetID():
            return None
        return node

    @staticmethod
    def _volumeLike(reference, name: str, array: np.ndarray, node=None):
        """Scalar volume ``node`` (created when None) holding ``array`` on the reference's exact geometry."""
        if node is None or slicer.mrmlScene.GetNodeByID(node.GetID()) is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", slicer.mrmlScene.GenerateUniqueName(name))
        node.SetAttribute(SOURCE_ATTRIBUTE, reference.GetID())
        matrix = vtk.vtkMatrix4x4()
        reference.GetIJKToRASMatrix(matrix)
        node.SetIJKToRASMatrix(matrix)
        node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(node, array)
        node.CreateDefaultDisplayNodes()
        return node

    # -- protection -----------------------------------------------------------------------------

    def process(
        self,
        inputVolume,
        segmentationNode,
        segmentIds: Sequence[str] | None,
        parameters: ProtectionSettings | None = None,
        progressCallback: ProgressCallback | None = None,
        cancelCheck: Callable[[], bool] | None = None,
        protectedVolume=None,
        heatmapVolume=None,
        protectedName: str | None = None,
    ) -> ProtectionOutput:
        """Protect ``inputVolume`` inside the selected segments (None: all) and their contour band.

        Creates (or updates the given) protected volume, named ``<input> protected`` unless
        ``protectedName`` is given, with the input's exact geometry and pixel type, and a
        ``<input> perturbation`` heatmap (|change|, native units, float32). The input node is never
        modified. Raises ``umedprotect.errors.InputError`` for unusable inputs and
        ``umedprotect.errors.Cancelled`` when ``cancelCheck()`` returns True.
        """
        from umedprotect.errors import InputError
        from umedprotect.array_protection import protect_array
        from umedprotect.protector import load_protector

        parameters = parameters or ProtectionSettings()
        report = progressCallback or (lambda fraction, message: None)
        if inputVolume is None or segmentationNode is None:
            raise InputError("an input volume and a segmentation are required")
        if inputVolume.GetImageData() is None:
            raise InputError(f"volume '{inputVolume.GetName()}' has no image data")

        report(0.0, _("Reading the segments..."))
        labels = self.labelArray(inputVolume, segmentationNode, segmentIds)
        image = slicer.util.arrayFromVolume(inputVolume)
        image.flags.writeable = False  # a view on the input node's voxels: never written
        spacing = self.spacingPerArrayAxis(inputVolume)
        squeeze = image.ndim == 3 and image.shape[0] == 1  # a single slice is protected as a 2D image

        report(0.05, _("Loading the protector..."))
        protector = load_protector(parameters.protectorPath)

        def backendProgress(done: int, total: int) -> None:
            report(0.05 + 0.9 * done / max(total, 1), _("Protecting slices: {done}/{total}").format(done=done, total=total))

        result = protect_array(
            image[0] if squeeze else image,
            labels[0] if squeeze else labels,
            protector,
            spacing=spacing[1:] if squeeze else spacing,
            epsilon=parameters.epsilon,
            band_radius=parameters.bandRadius,
            min_psnr=parameters.minPsnr,
            device=parameters.device,
            progress=backendProgress,
            cancel=cancelCheck,
        )
        protected = result.protected[None] if squeeze else result.protected
        change = np.abs(result.change[None] if squeeze else result.change).astype(np.float32)

        report(0.95, _("Creating the output volumes..."))
        name = inputVolume.GetName()
        protectedVolume = self._volumeLike(inputVolume, protectedName or f"{name} protected", protected, protectedVolume)
        heatmapVolume = self._volumeLike(inputVolume, f"{name} perturbation", change, heatmapVolume)
        self._copyDisplay(inputVolume, protectedVolume)
        self._styleHeatmap(heatmapVolume, float(change.max()))
        report(1.0, _("Done."))
        return ProtectionOutput(protectedVolume, heatmapVolume, result, dict(result.metrics))

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
    def _checkEnding(path: str, endings: Sequence[str]) -> None:
        from umedprotect.errors import InputError

        if not str(path).lower().endswith(tuple(endings)):
            raise InputError(f"{path}: unsupported file type (use one of {', '.join(endings)})")

    def saveVolume(self, volumeNode, path: str | pathlib.Path, overwrite: bool = True) -> pathlib.Path:
        """Write a volume to NRRD/NIfTI/MHA atomically; the node's own storage node is left as it is."""
        from umedprotect.atomic import atomic_path
        from umedprotect.errors import InputError
        from umedprotect.io import OUTPUT_ENDINGS

        path = pathlib.Path(path)
        self._checkEnding(path.name, OUTPUT_ENDINGS)
        if not overwrite and path.exists():
            raise InputError(f"{path}: output already exists")
        if not path.parent.is_dir():
            raise InputError(f"{path.parent}: output folder not found")
        storageNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        try:
            with atomic_path(path) as tmp:
                storageNode.SetFileName(str(tmp))
                if not storageNode.WriteData(volumeNode):
                    raise RuntimeError(f"{path}: writing the volume failed")
        finally:
            storageNode.UnRegister(None)
        return path

    def loadVolume(self, path: str | pathlib.Path, labelMap: bool = False):
        """Read an image (or a label map) file into a new volume node."""
        from umedprotect.errors import InputError
        from umedprotect.io import OUTPUT_ENDINGS

        path = pathlib.Path(path)
        self._checkEnding(path.name, OUTPUT_ENDINGS)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        className = "vtkMRMLLabelMapVolumeNode" if labelMap else "vtkMRMLScalarVolumeNode"
        node = slicer.mrmlScene.AddNewNodeByClass(className, path.name.split(".")[0])
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

    def loadSegmentation(self, path: str | pathlib.Path, referenceVolume):
        """Read a ``.seg.nrrd`` segmentation, or a label map file (one segment per label value)."""
        from umedprotect.errors import InputError
        from umedprotect.io import SEGMENTATION_ENDING

        path = pathlib.Path(path)
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", path.name.split(".")[0])
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
        if path.name.lower().endswith(SEGMENTATION_ENDING):
            if not path.is_file():
                slicer.mrmlScene.RemoveNode(segmentationNode)
                raise InputError(f"{path}: file not found")
            storageNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentationStorageNode")
            try:
                storageNode.SetFileName(str(path))
                ok = storageNode.ReadData(segmentationNode)
            finally:
                storageNode.UnRegister(None)
            if not ok:
                slicer.mrmlScene.RemoveNode(segmentationNode)
                raise InputError(f"{path}: not a readable segmentation")
            return segmentationNode
        labelNode = self.loadVolume(path, labelMap=True)
        try:
            imported = slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode)
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)
        if not imported:
            slicer.mrmlScene.RemoveNode(segmentationNode)
            raise InputError(f"{path}: could not be imported as a label map")
        return segmentationNode

    # -- fitting --------------------------------------------------------------------------------

    @staticmethod
    def sceneCases() -> list[tuple[Any, Any]]:
        """(volume, segmentation) pairs in the scene: segmentations whose reference geometry is a scalar volume."""
        role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        cases = []
        for segmentationNode in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
            volume = segmentationNode.GetNodeReference(role)
            if volume is not None and volume.IsA("vtkMRMLScalarVolumeNode") and not volume.IsA("vtkMRMLLabelMapVolumeNode"):
                cases.append((volume, segmentationNode))
        return cases

    def fit(
        self,
        outputPath: str,
        datasetDir: str | None = None,
        epsilon: float | None = None,
        bandRadius: int | None = None,
        progressCallback: ProgressCallback | None = None,
        cancelCheck: Callable[[], bool] | None = None,
        **fitOptions,
    ) -> pathlib.Path:
        """Fit a protector on an nnU-Net-layout folder, or (``datasetDir=None``) on the segmented cases
        in the scene (:meth:`sceneCases`), and save it to ``outputPath``.

        ``epsilon``/``bandRadius`` default to the protector defaults; ``fitOptions`` are
        ``umedprotect.fitting.FitSettings`` fields (``steps``, ``device``, ``seed``, ...).
        """
        from dataclasses import replace

        from umedprotect.errors import InputError
        from umedprotect.fitting import FitSettings, fit_on_datasets, fit_protector
        from umedprotect.protector import ProtectorConfig, save_protector
        from umedprotect.slices import case_slices

        if not outputPath:
            raise InputError("choose a file for the fitted protector")
        self._checkEnding(outputPath, (".safetensors",))
        report = progressCallback or (lambda fraction, message: None)
        config = ProtectorConfig()
        config = replace(
            config,
            epsilon=config.epsilon if epsilon is None else float(epsilon),
            band_radius=config.band_radius if bandRadius is None else int(bandRadius),
        )
        settings = FitSettings(**fitOptions)

        def fitProgress(step: int, total: int, record: dict) -> None:
            report(step / max(total, 1), _("Fitting: step {step}/{total}").format(step=step, total=total))

        report(0.0, _("Preparing training slices..."))
        if datasetDir:
            protector, history = fit_on_datasets([datasetDir], config, settings, fitProgress, cancelCheck)
        else:
            cases = self.sceneCases()
            if not cases:
                raise InputError("no segmented cases in the scene (segmentations with a reference volume)")
            samples = []
            for volume, segmentationNode in cases:
                samples += case_slices(
                    np.array(slicer.util.arrayFromVolume(volume)),
                    self.labelArray(volume, segmentationNode),
                    self.spacingPerArrayAxis(volume),
                    volume.GetName(),
                )
            protector, history = fit_protector(samples, config, settings, fitProgress, cancelCheck)
        logging.info(f"UMedProtect: fitted a protector in {len(history)} steps")
        return save_protector(protector, outputPath)


#
# Self-test
#


class UMedProtectTest(ScriptedLoadableModuleTest):
    """Offline self-test: synthetic volume + segmentation, preview, export; run with 'Reload and Test'."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_PreviewAndExport()

    def test_PreviewAndExport(self) -> None:
        from umedprotect.phantoms import phantom_volume
        from umedprotect.regions import contour_band

        self.delayDisplay(_("Building a synthetic volume and segmentation"))
        logic = UMedProtectLogic()
        logic.ensureDependencies(askConfirmation=False)
        image, lesions = phantom_volume((10, 48, 40), n_lesions=2, rng=3)
        image = np.round(image).astype(np.int16)
        ijkToRAS = np.array([[0.0, -0.7, 0.0, 12.0], [0.8, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 4.0], [0, 0, 0, 1]])
        volume = slicer.util.addVolumeFromArray(image, ijkToRAS=ijkToRAS, name="UMedProtectTestVolume")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "UMedProtectTestSegmentation")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentIds = []
        for value in (1, 2):
            segmentId = segmentation.GetSegmentation().AddEmptySegment(f"lesion {value}")
            slicer.util.updateSegmentBinaryLabelmapFromArray((lesions == value).astype(np.uint8), segmentation, segmentId, volume)
            segmentIds.append(segmentId)
        before = np.array(slicer.util.arrayFromVolume(volume))

        self.delayDisplay(_("Preview"))
        settings = ProtectionSettings(epsilon=4.0, bandRadius=3, device="cpu")
        output = logic.process(volume, segmentation, None, settings)
        logic.showPreview(volume, output.heatmapVolume, 0.6)
        protected = slicer.util.arrayFromVolume(output.protectedVolume)
        heatmap = slicer.util.arrayFromVolume(output.heatmapVolume)

        inputMatrix, protectedMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(inputMatrix)
        output.protectedVolume.GetIJKToRASMatrix(protectedMatrix)
        self.assertTrue(np.allclose(slicer.util.arrayFromVTKMatrix(inputMatrix), slicer.util.arrayFromVTKMatrix(protectedMatrix)))
        self.assertEqual(protected.dtype, before.dtype)
        self.assertEqual(output.protectedVolume.GetImageData().GetScalarType(), volume.GetImageData().GetScalarType())
        self.assertEqual(heatmap.dtype, np.float32)
        change = np.abs(protected.astype(np.float64) - before)
        self.assertLessEqual(change.max(), output.metrics["budget_native"] + 1e-9)
        self.assertGreater(change.max(), 0)
        region = np.zeros(image.shape, dtype=bool)
        for k in range(image.shape[0]):  # slices along the coarsest (k) axis
            region[k] = (lesions[k] > 0) | contour_band(lesions[k], settings.bandRadius)
        self.assertFalse(change[~region].any(), "voxels outside ROI + contour band changed")
        np.testing.assert_allclose(heatmap, change, atol=1e-3)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)

        self.delayDisplay(_("Export"))
        with tempfile.TemporaryDirectory() as folder:
            path = logic.saveVolume(output.protectedVolume, pathlib.Path(folder) / "protected.nrrd")
            reloaded = logic.loadVolume(path)
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(reloaded), protected)
            self.assertTrue(np.allclose(reloaded.GetSpacing(), volume.GetSpacing()))
            self.assertTrue(np.allclose(reloaded.GetOrigin(), volume.GetOrigin()))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)
        logging.info("UMedProtect self-test passed")
        self.delayDisplay(_("Test passed"))
