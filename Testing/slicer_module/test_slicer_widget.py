"""The real panel class (UMedProtectWidget) on real MRML nodes, with stand-ins for its Qt widgets and the app.

Its buttons' actions: inputs locked while the work runs, results bound to the input they came from,
Cancel and refused inputs leave the scene as it was, output files checked before any work, and
dependency prompts not under a wait cursor.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import slicer_shim

slicer_shim.import_module()
import slicer  # noqa: E402  (slicer-core, after the shim)

from umedprotect.errors import Cancelled, InputError  # noqa: E402
from umedprotect.phantoms import phantom_volume  # noqa: E402
from UMedProtectLib.BackgroundWork import DirectRunner  # noqa: E402
from UMedProtectLib.Logic import UMedProtectLogic  # noqa: E402
from UMedProtectLib.Parameters import UMedProtectParameterNode  # noqa: E402
from UMedProtectLib.Widget import INPUT_SECTIONS, UMedProtectWidget  # noqa: E402


class Control:
    """A Qt widget as the panel uses it: ``enabled`` and ``text``."""

    def __init__(self) -> None:
        self.enabled, self.text = True, ""


class Ui:
    """``slicer.util.childWidgetVariables`` of the .ui: one Control per widget name used."""

    def __getattr__(self, name: str) -> Control:
        control = Control()
        setattr(self, name, control)
        return control


class App:
    """``slicer.app``: counts wait-cursor overrides."""

    def __init__(self) -> None:
        self.waitCursors = 0

    def setOverrideCursor(self, cursor) -> None:
        self.waitCursors += 1

    def restoreOverrideCursor(self) -> None:
        self.waitCursors -= 1

    def testingEnabled(self) -> bool:
        return False

    def layoutManager(self):
        return None


class RecordingRunner(DirectRunner):
    """Runs the work in place; records which input sections were enabled meanwhile."""

    def __init__(self, cancelled: bool = False) -> None:
        super().__init__(cancelled=lambda: cancelled)
        self.sectionsEnabledDuringWork: list[bool] = []
        self.ui = None

    def __call__(self, title, work):
        self.sectionsEnabledDuringWork += [getattr(self.ui, name).enabled for name in INPUT_SECTIONS]
        return super().__call__(title, work)


@pytest.fixture
def panel(monkeypatch, tmp_path, protector_file):
    scene = slicer_shim.bootstrap_scene()
    app, errors = App(), []
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: errors.append(text))
    image, lesions = phantom_volume((6, 36, 32), n_lesions=1, rng=4)
    volume = slicer.util.addVolumeFromArray(np.round(image).astype(np.int16), name="ct")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "lesion")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentId = segmentation.GetSegmentation().AddEmptySegment("lesion")
    slicer.util.updateSegmentBinaryLabelmapFromArray((lesions > 0).astype(np.uint8), segmentation, segmentId, volume)

    widget = UMedProtectWidget()
    widget.ui, runner = Ui(), RecordingRunner()
    runner.ui = widget.ui
    widget.logic = UMedProtectLogic(runner)
    p = UMedProtectParameterNode()
    p.inputVolume, p.segmentation, p.device = volume, segmentation, "cpu"
    p.useDefaultProtector, p.protectorPath = False, protector_file
    widget._parameterNode = p
    return types.SimpleNamespace(widget=widget, p=p, scene=scene, app=app, errors=errors, runner=runner, tmp=tmp_path)


def volumes(scene) -> list[str]:
    count = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    return [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName() for i in range(count)]


def test_preview_locks_the_inputs_while_it_runs_and_binds_its_result_to_the_input(panel):
    widget, p = panel.widget, panel.p
    widget.onPreviewButton()
    assert panel.runner.sectionsEnabledDuringWork == [False] * len(INPUT_SECTIONS)
    assert all(getattr(widget.ui, name).enabled for name in INPUT_SECTIONS)
    assert p.previewVolume is p.protectedVolume and p.previewVolume.GetName() == "ct protected preview"
    assert widget.ui.toggleProtectedButton.enabled and widget.ui.statusLabel.text.startswith("Preview ready")
    assert "dB" in widget.ui.psnrValueLabel.text and panel.errors == []
    first = p.previewVolume.GetID()
    widget.onPreviewButton()
    assert p.previewVolume.GetID() == first  # a new preview of the same input updates its volume
    assert volumes(panel.scene) == ["ct", "ct protected preview", "ct perturbation"]

    view = panel.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    p.showProtected = True
    widget.onToggleProtected(True)  # as the bound button's toggled(bool)
    assert view.GetBackgroundVolumeID() == p.protectedVolume.GetID()
    other = slicer.util.addVolumeFromArray(np.zeros((2, 4, 4), np.int16), name="other")
    p.inputVolume = other
    widget._updateControls()  # as on the parameter node's ModifiedEvent
    assert p.showProtected is False and not widget.ui.toggleProtectedButton.enabled
    widget.onToggleProtected(False)
    assert view.GetBackgroundVolumeID() == other.GetID()
    widget.onToggleProtected(True)  # the result of "ct" is never shown for "other"
    assert view.GetBackgroundVolumeID() == other.GetID()


def test_cancel_leaves_the_scene_as_it_was_and_unlocks_the_inputs(panel):
    panel.widget.logic.runner = runner = RecordingRunner(cancelled=True)
    runner.ui = panel.widget.ui
    panel.widget.onExportButton()
    assert volumes(panel.scene) == ["ct"]
    assert panel.widget.ui.statusLabel.text.startswith("Cancelled")
    assert all(getattr(panel.widget.ui, name).enabled for name in INPUT_SECTIONS)


def test_refused_inputs_are_named_and_nothing_runs(panel):
    p = panel.p
    p.exportPath = panel.tmp / "protected.png"
    panel.widget.onExportButton()
    p.useDefaultProtector, p.exportPath = False, panel.tmp / "missing" / "protected.nrrd"
    panel.widget.onExportButton()
    p.protectorPath = ""
    panel.widget.onExportButton()
    assert [e.split(":")[0] for e in panel.errors] == [
        str(panel.tmp / "protected.png"),
        str(panel.tmp / "missing"),
        "Protector",
    ]
    assert panel.runner.sectionsEnabledDuringWork == [] and volumes(panel.scene) == ["ct"]


def test_export_saves_the_new_volume_to_the_chosen_file(panel):
    panel.p.exportPath = panel.tmp / "protected.nrrd"
    panel.widget.onExportButton()
    assert volumes(panel.scene) == ["ct", "ct protected", "ct perturbation"]
    assert (panel.tmp / "protected.nrrd").is_file() and "saved it to" in panel.widget.ui.statusLabel.text
    assert panel.app.waitCursors == 0


def test_dependency_prompts_are_not_under_a_wait_cursor(panel, monkeypatch):
    cursors = []
    monkeypatch.setattr(
        panel.widget.logic, "ensureDependencies", lambda askConfirmation: cursors.append(panel.app.waitCursors)
    )
    panel.widget.onPreviewButton()
    panel.widget.onDetectDevicesButton()
    assert cursors == [0, 0]

    def refuse(askConfirmation):
        raise RuntimeError("PyTorch is required")

    monkeypatch.setattr(panel.widget.logic, "ensureDependencies", refuse)
    with pytest.raises(RuntimeError):  # shown to the user, then raised to Slicer's console
        panel.widget.onPreviewButton()
    assert panel.errors[-1].endswith("PyTorch is required") and panel.app.waitCursors == 0


def test_export_to_dicom_is_offered_for_a_result_of_the_input_and_adds_it_to_the_database(panel):
    widget, p = panel.widget, panel.p
    widget.logic.dicom = dicom = slicer_shim.FakeDicomServices()
    widget._updateControls()
    assert not widget.ui.exportDicomButton.enabled
    widget.onPreviewButton()
    assert widget.ui.exportDicomButton.enabled

    widget.onExportDicomButton()
    ((volume, tags, _),) = dicom.exported  # a volume not loaded from DICOM: Slicer's exporter
    assert volume is p.protectedVolume and tags["SeriesDescription"] == "ct [UMedProtect]"
    assert tags["SeriesInstanceUID"] in widget.ui.statusLabel.text and len(dicom.imported) == 1
    assert all(getattr(widget.ui, name).enabled for name in INPUT_SECTIONS) and panel.errors == []
    assert panel.app.waitCursors == 0

    p.inputVolume = slicer.util.addVolumeFromArray(np.zeros((2, 4, 4), np.int16), name="other")
    widget._updateControls()
    assert not widget.ui.exportDicomButton.enabled
    widget.onExportDicomButton()  # the result of "ct" is never exported for "other"
    assert len(dicom.exported) == 1


def test_export_to_dicom_names_a_refused_folder_and_a_cancel(panel, monkeypatch):
    widget = panel.widget
    widget.logic.dicom = slicer_shim.FakeDicomServices()
    widget.onPreviewButton()

    def refuse(protected, source):
        raise InputError("Slicer's DICOM database is not open")

    monkeypatch.setattr(widget.logic, "exportProtectedToDicom", refuse)
    widget.onExportDicomButton()
    assert panel.errors == ["Slicer's DICOM database is not open"]

    def cancel(protected, source):
        raise Cancelled("cancelled")

    monkeypatch.setattr(widget.logic, "exportProtectedToDicom", cancel)
    widget.onExportDicomButton()
    assert widget.ui.statusLabel.text.startswith("Cancelled")
