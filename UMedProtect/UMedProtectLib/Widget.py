"""The module panel: the .ui bound to the parameter node, and the buttons' actions.

Protection, preview and fitting run on a worker thread behind a modal progress dialog with Cancel
(``BackgroundWork.DialogRunner``); the inputs are locked meanwhile. Dependency prompts come before
that, with the normal cursor.
"""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from umedprotect.errors import Cancelled, InputError
from umedprotect.settings import OPTIONS

from .BackgroundWork import DialogRunner
from .Logic import ProtectionOutput, UMedProtectLogic
from .Parameters import LIMITS, UMedProtectParameterNode, pathOrNone, protectionSettings

LIB_MODULES = ("Parameters", "BackgroundWork", "DicomExport", "Logic", "Widget")  # import order, for Reload
SETTING_WIDGETS = {  # parameter -> (setting of the settings table, its spin box, its label)
    "epsilon": ("epsilon", "epsilonSpinBox", "epsilonLabel"),
    "bandRadius": ("band_radius", "bandRadiusSpinBox", "bandRadiusLabel"),
    "minPsnr": ("min_psnr", "minPsnrSpinBox", "limitVisibilityCheckBox"),
}
INPUT_SECTIONS = (
    "inputsCollapsibleButton",
    "settingsCollapsibleButton",
    "resultsCollapsibleButton",
    "fitCollapsibleButton",
)
PANEL_LABELS = {"protector": "Protector"}  # settings named by errors that are not in the settings table


@dataclass(frozen=True)
class ControlStates:
    """Which controls can be used in a given panel state."""

    canProtect: bool
    canShowProtected: bool  # the latest result was computed from the current input (shown, exported to DICOM)
    canFit: bool
    protectorPathEnabled: bool
    codesEnabled: bool
    minPsnrEnabled: bool
    fitDatasetPathEnabled: bool


def controlStates(parameters: UMedProtectParameterNode | None) -> ControlStates:
    """The control states for ``parameters`` (all off without a parameter node)."""
    p = parameters
    if p is None:
        return ControlStates(False, False, False, False, False, False, False)
    return ControlStates(
        canProtect=bool(p.inputVolume and p.segmentation and (p.allSegments or p.segmentIds)),
        canShowProtected=UMedProtectLogic.outputOf(p.protectedVolume, p.inputVolume) is not None,
        canFit=pathOrNone(p.fitOutputPath) is not None,
        protectorPathEnabled=not p.useDefaultProtector,
        codesEnabled=p.useDefaultProtector,
        minPsnrEnabled=p.limitVisibility,
        fitDatasetPathEnabled=p.fitFromFolder,
    )


def applySettingsTable(ui) -> None:
    """Names, ranges, decimals and steps of the settings' widgets, from the settings table."""
    for name, (setting, boxName, labelName) in SETTING_WIDGETS.items():
        option, limits, box = OPTIONS[setting], LIMITS[name], getattr(ui, boxName)
        getattr(ui, labelName).setText(f"{option.label}:")
        if limits.decimals:
            box.setDecimals(limits.decimals)
        box.setRange(limits.minimum, limits.maximum)
        box.setSingleStep(limits.step)


def errorText(error: InputError) -> str:
    """An input error in the panel's terms: the name of the setting at fault in front of it."""
    option = OPTIONS.get(error.option or "")
    label = option.label if option is not None else PANEL_LABELS.get(error.option or "")
    return f"{label}: {error}" if label else str(error)


class ProgressDialog:
    """A modal Slicer progress dialog with Cancel (``BackgroundWork.ProgressView``)."""

    def __init__(self, title: str) -> None:
        self.dialog = slicer.util.createProgressDialog(windowTitle=_("UMed Protect"), labelText=title, maximum=100)
        self.dialog.show()

    def show(self, fraction: float, message: str) -> None:
        self.dialog.value = int(100 * fraction)
        self.dialog.labelText = message

    def cancelled(self) -> bool:
        return bool(self.dialog.wasCanceled)

    def processEvents(self) -> None:
        slicer.app.processEvents()

    def close(self) -> None:
        self.dialog.close()


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
        applySettingsTable(self.ui)
        self.logic = UMedProtectLogic(runner=DialogRunner(ProgressDialog))

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.segmentSelectorWidget.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)
        self.ui.segmentSelectorWidget.connect("segmentSelectionChanged(QStringList)", self.onSegmentSelectionChanged)
        self.ui.previewButton.connect("clicked(bool)", self.onPreviewButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicomButton)
        self.ui.toggleProtectedButton.connect("toggled(bool)", self.onToggleProtected)
        self.ui.heatmapOpacitySliderWidget.connect("valueChanged(double)", self.onHeatmapOpacityChanged)
        self.ui.detectDevicesButton.connect("clicked(bool)", self.onDetectDevicesButton)
        self.ui.fitButton.connect("clicked(bool)", self.onFitButton)
        self.ui.deviceInfoLabel.text = _("not checked yet (PyTorch is loaded on first use)")

        self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the UMedProtectLib modules too (developer mode), then the module."""
        for name in LIB_MODULES:
            module = sys.modules.get(f"UMedProtectLib.{name}")
            if module is not None:
                importlib.reload(module)
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateControls)

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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateControls)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateControls)
            self.ui.segmentSelectorWidget.setCurrentNode(self._parameterNode.segmentation)
            self.ui.segmentSelectorWidget.setSelectedSegmentIDs(list(self._parameterNode.segmentIds))
            self._updateControls()

    def onSegmentationChanged(self, node) -> None:
        if self._parameterNode:
            self._parameterNode.segmentation = node

    def onSegmentSelectionChanged(self, segmentIds) -> None:
        if self._parameterNode:
            self._parameterNode.segmentIds = list(segmentIds)

    def _updateControls(self, caller=None, event=None) -> None:
        p = self._parameterNode
        states = controlStates(p)
        if p and p.showProtected and not states.canShowProtected:
            p.showProtected = False  # the result shown belongs to another input: show this one
        self.ui.previewButton.enabled = states.canProtect
        self.ui.exportButton.enabled = states.canProtect
        self.ui.toggleProtectedButton.enabled = states.canShowProtected
        self.ui.exportDicomButton.enabled = states.canShowProtected
        self.ui.protectorPathLineEdit.enabled = states.protectorPathEnabled
        self.ui.codesComboBox.enabled = states.codesEnabled
        self.ui.minPsnrSpinBox.enabled = states.minPsnrEnabled
        self.ui.fitDatasetPathLineEdit.enabled = states.fitDatasetPathEnabled
        self.ui.fitButton.enabled = states.canFit

    @contextlib.contextmanager
    def _inputsLocked(self) -> Iterator[None]:
        """Lock the panel's inputs while a run goes on (the progress dialog is modal too)."""
        for name in INPUT_SECTIONS:
            getattr(self.ui, name).enabled = False
        try:
            yield
        finally:
            for name in INPUT_SECTIONS:
                getattr(self.ui, name).enabled = True
            self._updateControls()

    def _ensureDependencies(self) -> None:
        """Install missing packages after asking, with the normal cursor (a failure is shown, then raised)."""
        with slicer.util.tryWithErrorDisplay(_("UMed Protect's Python packages are not available.")):
            self.logic.ensureDependencies(askConfirmation=True)

    def _protect(self, preview: bool) -> ProtectionOutput | None:
        """Run the protection with the panel's settings; None when the user cancelled or an input was refused.

        A preview updates this input's preview volume; an export always creates a new volume node.
        """
        from umedprotect.io import OUTPUT_ENDINGS

        self._ensureDependencies()
        p = self._parameterNode
        name = p.inputVolume.GetName()
        with slicer.util.tryWithErrorDisplay(_("Protection failed.")), self._inputsLocked():
            try:
                settings = protectionSettings(p)
                exportPath = None if preview else pathOrNone(p.exportPath)
                if exportPath:
                    self.logic.checkOutputFile(exportPath, OUTPUT_ENDINGS)
                output = self.logic.process(
                    p.inputVolume,
                    p.segmentation,
                    None if p.allSegments else list(p.segmentIds),
                    settings,
                    protectedVolume=self.logic.outputOf(p.previewVolume, p.inputVolume) if preview else None,
                    heatmapVolume=self.logic.outputOf(p.heatmapVolume, p.inputVolume),
                    protectedName=_("{name} protected preview").format(name=name) if preview else None,
                )
            except Cancelled:
                self.ui.statusLabel.text = _("Cancelled: nothing was created or changed.")
                return None
            except InputError as error:
                slicer.util.errorDisplay(errorText(error))
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

    def _showMetrics(self, metrics: dict) -> None:
        from umedprotect.metrics import psnr_text
        from umedprotect.victim_units import strength_text

        self.ui.psnrValueLabel.text = psnr_text(metrics)
        self.ui.ssimValueLabel.text = f"{metrics['ssim']:.4f}"
        self.ui.maxChangeValueLabel.text = _("{change:.3g} (budget {budget:.3g})").format(
            change=metrics["max_abs_change"], budget=metrics["budget_native"]
        )
        self.ui.fractionChangedValueLabel.text = f"{100 * metrics['fraction_changed']:.2f} %"
        self.ui.strengthValueLabel.text = strength_text(metrics) or "-"

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

    def onExportDicomButton(self) -> None:
        """Export the latest protected volume of the input to a new series of its study in the DICOM database.

        The product's writer runs behind the progress dialog; Slicer's exporter and the database import run
        here, on the main thread, where Slicer's DICOM database connection and CLI modules live (under a wait
        cursor: they show no progress).
        """
        p = self._parameterNode
        protected = self.logic.outputOf(p.protectedVolume, p.inputVolume)
        if protected is None:
            return  # no result of this input yet (the button is disabled then)
        failed = _("Export to DICOM failed.")
        with slicer.util.tryWithErrorDisplay(failed, waitCursor=True), self._inputsLocked():
            try:
                output = self.logic.exportProtectedToDicom(protected, p.inputVolume)
            except Cancelled:
                self.ui.statusLabel.text = _("Cancelled: nothing was written to the DICOM database.")
                return
            except InputError as error:
                slicer.util.errorDisplay(errorText(error))
                return
            how = _("every tag of the source kept") if output.sourceTagsKept else _("written by Slicer's exporter")
            self.ui.statusLabel.text = _(
                "Exported '{name}' to the DICOM database as series {series} of study {study} ({how})."
            ).format(name=protected.GetName(), series=output.seriesInstanceUID, study=output.studyInstanceUID, how=how)

    def onToggleProtected(self, showProtected: bool) -> None:
        """Show the protected image of the current input, or the input itself."""
        p = self._parameterNode
        if not p or not p.inputVolume:
            return
        protected = self.logic.outputOf(p.protectedVolume, p.inputVolume)
        if showProtected and protected is None:
            return  # no result of this input yet (the button is disabled then)
        slicer.util.setSliceViewerLayers(background=protected if showProtected else p.inputVolume)

    def onHeatmapOpacityChanged(self, opacity: float) -> None:
        slicer.util.setSliceViewerLayers(foregroundOpacity=opacity)

    def onDetectDevicesButton(self) -> None:
        self._ensureDependencies()
        with slicer.util.tryWithErrorDisplay(_("Could not load PyTorch."), waitCursor=True):
            self.ui.deviceInfoLabel.text = self.logic.describeDevices()

    def onFitButton(self) -> None:
        self._ensureDependencies()
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Fitting the protector failed.")), self._inputsLocked():
            try:
                output = self.logic.fit(
                    pathOrNone(p.fitOutputPath),
                    datasetDir=pathOrNone(p.fitDatasetPath) if p.fitFromFolder else None,
                    epsilon=p.epsilon,
                    bandRadius=p.bandRadius,
                    steps=p.fitSteps,
                    device=p.device,
                )
            except Cancelled:
                self.ui.fitStatusLabel.text = _("Cancelled: no protector file was written.")
                return
            except InputError as error:
                slicer.util.errorDisplay(errorText(error))
                return
            p.protectorPath = pathlib.Path(output)
            p.useDefaultProtector = False
            self.ui.fitStatusLabel.text = _("Saved {path}; it is now the selected protector.").format(path=output)
