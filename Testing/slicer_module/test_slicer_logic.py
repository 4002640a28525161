"""UMedProtectLogic on real MRML nodes (slicer-core, Qt-free): geometry, pixel type, heatmap, metrics,
the runner that does the computing (in place, or on a worker thread), and Cancel.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import slicer_shim

UMedProtect = slicer_shim.import_module()
import slicer  # noqa: E402  (slicer-core, after the shim)
import vtk  # noqa: E402

from umedprotect.errors import Cancelled, InputError  # noqa: E402
from umedprotect.metrics import image_quality  # noqa: E402
from umedprotect.phantoms import phantom_volume  # noqa: E402
from umedprotect.protector import save_protector  # noqa: E402
from umedprotect.regions import contour_band  # noqa: E402
from umedprotect.settings import ProtectionSettings  # noqa: E402
from umedprotect.victim_units import ct_unit, strength_text  # noqa: E402
from UMedProtectLib.BackgroundWork import DialogRunner, DirectRunner  # noqa: E402
from UMedProtectLib.Logic import HEATMAP_COLOR_NODE_ID, UMedProtectLogic  # noqa: E402

# Rotated axes, anisotropic spacing (k coarsest), non-zero origin.
IJK_TO_RAS = np.array([[0.0, -0.7, 0.0, 12.5], [0.8, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 4.0], [0.0, 0.0, 0.0, 1.0]])
BAND = 3


@pytest.fixture
def scene():
    return slicer_shim.bootstrap_scene()


@pytest.fixture
def protector_file(tmp_path, random_protector):
    return str(save_protector(random_protector, tmp_path / "random.safetensors"))


@pytest.fixture
def case(scene):
    """int16 volume with two lesion segments; returns (volume, segmentation, segment ids, image, lesions)."""
    image, lesions = phantom_volume((8, 40, 36), n_lesions=2, rng=5)
    image = np.round(image).astype(np.int16)
    volume = slicer.util.addVolumeFromArray(image, ijkToRAS=IJK_TO_RAS, name="ct")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "lesions")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    ids = []
    for value in (1, 2):
        segment_id = segmentation.GetSegmentation().AddEmptySegment(f"lesion {value}")
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            (lesions == value).astype(np.uint8), segmentation, segment_id, volume
        )
        ids.append(segment_id)
    assert {1, 2} <= set(np.unique(lesions))
    return volume, segmentation, ids, image, lesions


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def region_of(lesions: np.ndarray) -> np.ndarray:
    """ROI ∪ contour band, slice by slice along the coarsest (k) axis."""
    return np.stack([(s > 0) | contour_band(s, BAND) for s in lesions])


def settings(protector_file: str) -> ProtectionSettings:
    return ProtectionSettings(protector=protector_file, epsilon=4.0, band_radius=BAND, device="cpu")


def test_process_returns_protected_and_heatmap_nodes_with_the_input_geometry(case, protector_file):
    volume, segmentation, _, image, lesions = case
    matrix_before = ijk_to_ras(volume)
    output = UMedProtectLogic().process(volume, segmentation, None, settings(protector_file))

    protected_node, heatmap_node = output.protectedVolume, output.heatmapVolume
    assert protected_node.GetName() == "ct protected" and heatmap_node.GetName() == "ct perturbation"
    for node in (protected_node, heatmap_node):
        assert np.array_equal(ijk_to_ras(node), matrix_before)
        assert node.GetSpacing() == volume.GetSpacing() and node.GetOrigin() == volume.GetOrigin()
        assert node.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    assert protected_node.GetImageData().GetScalarType() == volume.GetImageData().GetScalarType()
    assert heatmap_node.GetImageData().GetScalarType() == vtk.VTK_FLOAT

    protected = slicer.util.arrayFromVolume(protected_node)
    change = np.abs(protected.astype(np.float64) - image)
    assert protected.dtype == np.int16
    assert 0 < change.max() <= output.metrics["budget_native"]
    assert not change[~region_of(lesions)].any(), "voxels outside ROI + contour band changed"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(heatmap_node), change, atol=1e-4)
    expected = image_quality(image, protected)
    for key in ("psnr_db", "ssim", "max_abs_change", "fraction_changed"):
        assert output.metrics[key] == pytest.approx(expected[key])

    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), image)  # input untouched
    assert np.array_equal(ijk_to_ras(volume), matrix_before)
    display = heatmap_node.GetDisplayNode()
    assert display.GetColorNodeID() == HEATMAP_COLOR_NODE_ID
    assert display.GetWindowLevelMax() == pytest.approx(change.max(), rel=1e-5)


def test_only_the_selected_segments_are_protected(case, protector_file):
    volume, segmentation, ids, image, lesions = case
    logic = UMedProtectLogic()
    second = logic.process(volume, segmentation, [ids[1]], settings(protector_file))
    changed = slicer.util.arrayFromVolume(second.protectedVolume) != image
    assert changed.any()
    assert not changed[~region_of(np.where(lesions == 2, 2, 0))].any()
    assert not changed[region_of(np.where(lesions == 1, 1, 0)) & ~region_of(np.where(lesions == 2, 2, 0))].any()

    both = logic.process(volume, segmentation, ids, settings(protector_file))
    changed_both = slicer.util.arrayFromVolume(both.protectedVolume) != image
    assert changed_both[lesions == 1].any() and changed_both[lesions == 2].any()
    assert both.protectedVolume.GetID() != second.protectedVolume.GetID()  # every run without a node makes a new one


def test_visibility_floor_is_passed_to_the_backend(case, protector_file):
    volume, segmentation, _, image, _ = case
    logic = UMedProtectLogic()
    free = logic.process(volume, segmentation, None, settings(protector_file))
    floor = free.metrics["psnr_db"] + 3.0
    capped = logic.process(volume, segmentation, None, replace(settings(protector_file), min_psnr=floor))
    assert capped.metrics["psnr_db"] >= floor and capped.metrics["change_scale"] < 1
    assert image_quality(image, slicer.util.arrayFromVolume(capped.protectedVolume))["psnr_db"] >= floor


def test_label_array_gives_each_selected_segment_its_own_label(case):
    volume, segmentation, ids, _, lesions = case
    labels = UMedProtectLogic.labelArray(volume, segmentation, [ids[1], ids[0]])
    np.testing.assert_array_equal(labels, np.select([lesions == 2, lesions == 1], [1, 2], 0))


def test_bad_selections_are_input_errors(case, scene, protector_file):
    volume, segmentation, ids, _, _ = case
    logic = UMedProtectLogic()
    empty_id = segmentation.GetSegmentation().AddEmptySegment("empty")
    with pytest.raises(InputError, match="no segment 'nope'"):
        logic.process(volume, segmentation, ["nope"], settings(protector_file))
    with pytest.raises(InputError, match="empty on the grid"):
        logic.process(volume, segmentation, [empty_id], settings(protector_file))
    with pytest.raises(InputError, match="no segments selected"):
        logic.process(volume, segmentation, [], settings(protector_file))
    with pytest.raises(InputError, match="protector file not found"):
        logic.process(volume, segmentation, ids, ProtectionSettings(protector="/nonexistent.safetensors"))


def test_preview_nodes_are_reused_only_for_the_same_input(case, protector_file):
    volume, segmentation, _, image, _ = case
    logic = UMedProtectLogic()
    first = logic.process(volume, segmentation, None, settings(protector_file), protectedName="ct protected preview")
    assert logic.outputOf(first.protectedVolume, volume) is first.protectedVolume
    again = logic.process(
        volume,
        segmentation,
        None,
        settings(protector_file),
        protectedVolume=logic.outputOf(first.protectedVolume, volume),
        heatmapVolume=logic.outputOf(first.heatmapVolume, volume),
    )
    assert again.protectedVolume.GetID() == first.protectedVolume.GetID()
    assert again.heatmapVolume.GetID() == first.heatmapVolume.GetID()
    other = slicer.util.addVolumeFromArray(image, ijkToRAS=IJK_TO_RAS, name="other")
    assert logic.outputOf(first.protectedVolume, other) is None


def test_progress_reaches_the_runner_in_order(case, protector_file):
    volume, segmentation, _, _, _ = case
    reports = []
    UMedProtectLogic(DirectRunner(lambda f, m: reports.append((f, m)))).process(
        volume, segmentation, None, settings(protector_file)
    )
    fractions = [f for f, _m in reports]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and np.all(np.diff(fractions) >= 0)
    assert reports[0][1] == "Loading the protector..." and reports[-1][1].startswith("Protecting slices: ")


class CancellingView:
    """A progress dialog whose Cancel is pressed at the first report; records the threads it saw."""

    def __init__(self, title: str) -> None:
        self.shown = 0

    def show(self, fraction: float, message: str) -> None:
        self.shown += 1

    def cancelled(self) -> bool:
        return self.shown > 0

    def processEvents(self) -> None:
        pass

    def close(self) -> None:
        pass


def volume_ids(scene) -> list[str]:
    return [
        scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetID()
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
    ]


@pytest.mark.parametrize("runner", [DirectRunner(cancelled=lambda: True), DialogRunner(CancellingView, 0.001)])
def test_a_cancelled_run_creates_and_changes_no_node(case, scene, protector_file, runner):
    volume, segmentation, _, image, _ = case
    preview = UMedProtectLogic().process(volume, segmentation, None, settings(protector_file))
    before_ids = volume_ids(scene)
    preview_voxels = np.array(slicer.util.arrayFromVolume(preview.protectedVolume))
    with pytest.raises(Cancelled):
        UMedProtectLogic(runner).process(
            volume,
            segmentation,
            None,
            replace(settings(protector_file), epsilon=8.0),
            protectedVolume=preview.protectedVolume,
            heatmapVolume=preview.heatmapVolume,
        )
    assert volume_ids(scene) == before_ids
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(preview.protectedVolume), preview_voxels)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), image)


def test_the_computing_runs_on_a_worker_thread_and_gives_the_same_result(case, protector_file):
    volume, segmentation, _, _, _ = case
    threads = []

    class RecordingView(CancellingView):
        def cancelled(self) -> bool:
            return False

    def recording(title, work):
        def recorded(progress, cancelled):
            threads.append(threading.get_ident())
            return work(progress, cancelled)

        return DialogRunner(RecordingView, 0.001)(title, recorded)

    in_place = UMedProtectLogic().process(volume, segmentation, None, settings(protector_file))
    threaded = UMedProtectLogic(recording).process(volume, segmentation, None, settings(protector_file))
    assert threads and threads[0] != threading.get_ident()
    np.testing.assert_array_equal(
        slicer.util.arrayFromVolume(threaded.protectedVolume), slicer.util.arrayFromVolume(in_place.protectedVolume)
    )


def test_single_slice_volume_is_protected_as_a_2d_image(scene, protector_file):
    from umedprotect.phantoms import phantom_slice

    image, lesions = phantom_slice((40, 44), n_lesions=1, rng=2)
    volume = slicer.util.addVolumeFromArray(image[None], ijkToRAS=np.diag([0.5, 0.6, 0.4, 1.0]), name="xray")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("lesion")
    slicer.util.updateSegmentBinaryLabelmapFromArray(lesions[None].astype(np.uint8), segmentation, segment_id, volume)
    output = UMedProtectLogic().process(volume, segmentation, None, settings(protector_file))
    protected = slicer.util.arrayFromVolume(output.protectedVolume)
    assert protected.shape == (1, 40, 44) and protected.dtype == np.float32
    changed = protected[0] != image
    assert changed.any() and not changed[~((lesions > 0) | contour_band(lesions, BAND))].any()


@pytest.mark.parametrize("ending", [".nrrd", ".nii.gz"])
def test_saved_file_keeps_voxels_geometry_and_pixel_type(case, protector_file, tmp_path, ending):
    volume, segmentation, _, _, _ = case
    logic = UMedProtectLogic()
    output = logic.process(volume, segmentation, None, settings(protector_file))
    path = logic.saveVolume(output.protectedVolume, tmp_path / f"protected{ending}")
    saved = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), slicer.util.arrayFromVolume(output.protectedVolume))
    assert saved.GetPixelID() == sitk.sitkInt16
    np.testing.assert_allclose(saved.GetSpacing(), volume.GetSpacing(), rtol=1e-6)
    lps = np.diag([-1.0, -1.0, 1.0])  # files are LPS, Slicer is RAS
    np.testing.assert_allclose(saved.GetOrigin(), lps @ np.array(volume.GetOrigin()), atol=1e-4)
    direction = np.zeros((3, 3))
    volume.GetIJKToRASDirections(direction)
    np.testing.assert_allclose(np.array(saved.GetDirection()).reshape(3, 3), lps @ direction, atol=1e-6)
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]  # no temporary file left behind

    with pytest.raises(InputError, match="already exists"):
        logic.saveVolume(output.protectedVolume, path, overwrite=False)
    with pytest.raises(InputError, match="unsupported file type"):
        logic.saveVolume(output.protectedVolume, tmp_path / "protected.png")


def test_in_slicer_self_test_passes_with_the_bundled_protector(scene):
    from umedprotect.protector_file import DEFAULT_PROTECTOR_PATH

    assert DEFAULT_PROTECTOR_PATH.is_file()
    result = UMedProtect.UMedProtectTest("runTest").run()
    assert result.wasSuccessful(), result.failures + result.errors


SMALL_FIT = {
    "steps": 2,
    "batch_size": 2,
    "patch_size": 32,
    "surrogate_steps": 1,
    "surrogate_channels": 4,
    "device": "cpu",
}


def test_fit_on_the_segmented_cases_in_the_scene(case, tmp_path):
    from umedprotect.protector import load_protector

    volume, _, _, _, _ = case
    unsegmented = slicer.util.addVolumeFromArray(np.zeros((2, 8, 8), np.int16), name="not a case")
    logic = UMedProtectLogic()
    assert [v.GetID() for v, _s in logic.sceneCases()] == [volume.GetID()]
    assert unsegmented.GetID() not in [v.GetID() for v, _s in logic.sceneCases()]
    reports = []
    logic.runner = DirectRunner(lambda f, m: reports.append(f))
    path = logic.fit(str(tmp_path / "fitted.safetensors"), epsilon=6.0, bandRadius=2, **SMALL_FIT)
    fitted = load_protector(path)
    assert (fitted.config.epsilon, fitted.config.band_radius) == (6.0, 2)
    assert fitted.config.training["cases"] == ["ct"]
    assert reports[0] == 0.0 and reports[-1] == 1.0


def test_fit_on_an_nnunet_folder_and_bad_requests(scene, nnunet_dataset, tmp_path):
    from umedprotect.protector import load_protector

    logic = UMedProtectLogic()
    path = logic.fit(str(tmp_path / "fitted.safetensors"), datasetDir=str(nnunet_dataset), **SMALL_FIT)
    assert load_protector(path).config.training["datasets"] == [str(nnunet_dataset)]
    with pytest.raises(InputError, match="no segmented cases in the scene"):
        logic.fit(str(tmp_path / "other.safetensors"), **SMALL_FIT)
    with pytest.raises(InputError, match="unsupported file type"):
        logic.fit(str(tmp_path / "fitted.pt"), datasetDir=str(nnunet_dataset), **SMALL_FIT)
    with pytest.raises(InputError, match="output folder not found"):
        logic.fit(str(tmp_path / "missing" / "fitted.safetensors"), datasetDir=str(nnunet_dataset), **SMALL_FIT)


def test_a_cancelled_fit_writes_no_file(case, tmp_path):
    target = tmp_path / "fitted.safetensors"
    with pytest.raises(Cancelled):
        UMedProtectLogic(DialogRunner(CancellingView, 0.001)).fit(str(target), **SMALL_FIT)
    assert list(tmp_path.iterdir()) == []


def test_preview_puts_the_heatmap_over_the_input_in_every_slice_view(case, scene, protector_file):
    volume, segmentation, _, _, _ = case
    views = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    logic = UMedProtectLogic()
    output = logic.process(volume, segmentation, None, settings(protector_file))
    logic.showPreview(volume, output.heatmapVolume, 0.35)
    for view in views:
        assert view.GetBackgroundVolumeID() == volume.GetID()
        assert view.GetForegroundVolumeID() == output.heatmapVolume.GetID()
        assert view.GetForegroundOpacity() == pytest.approx(0.35)


def test_a_ct_volume_is_measured_in_its_foreground_std_and_the_strength_reported(case, protector_file):
    volume, segmentation, _, image, lesions = case
    logic = UMedProtectLogic()
    output = logic.process(volume, segmentation, None, replace(settings(protector_file), epsilon=None))
    metrics = output.metrics
    assert metrics["victim_normalisation"] == "zscore" and metrics["strength"] == 0.15  # no air: not a CT
    assert metrics["victim_unit"] == pytest.approx(float(image.astype(np.float64).std()), rel=1e-3)
    assert strength_text(metrics).startswith(f"{metrics['change_victim_units']:.2f} victim units")
    with_air = image.copy()
    with_air[:, :3, :] = -1000  # air above the body: a CT in HU
    assert not lesions[:, :3, :].any()
    ct = slicer.util.addVolumeFromArray(with_air, ijkToRAS=IJK_TO_RAS, name="ct with air")
    metrics = logic.process(ct, segmentation, None, replace(settings(protector_file), epsilon=None)).metrics
    assert metrics["victim_normalisation"] == "ct" and metrics["strength"] == 0.6
    assert metrics["victim_unit"] == pytest.approx(ct_unit(with_air[lesions > 0]), rel=1e-6)
    fixed = logic.process(volume, segmentation, None, settings(protector_file))  # a given budget is kept
    assert "strength" not in fixed.metrics and strength_text(fixed.metrics) is None
