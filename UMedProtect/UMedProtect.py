"""UMedProtect: protect segmentation datasets against unauthorised AI training, inside 3D Slicer.

This file registers the module and holds its offline self-test; the parts live in ``UMedProtectLib``
(parameters, logic, background work, panel) and the computing in the product package ``umedprotect``.
torch is imported on first use only, and installed through the PyTorch extension when missing.
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import tempfile

import numpy as np
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from UMedProtectLib.Logic import UMedProtectLogic
from UMedProtectLib.Widget import UMedProtectWidget

__all__ = ["UMedProtect", "UMedProtectLogic", "UMedProtectTest", "UMedProtectWidget"]  # Slicer looks these up here

PAPER = (
    "Lin et al., 'Safeguarding Medical Image Segmentation Datasets against Unauthorized Training via "
    "Contour- and Texture-Aware Perturbations', 2024"
)


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
            "trained on them without permission learns little. Labels are never changed. Preview shows "
            "the |perturbation| heatmap and PSNR/SSIM before exporting."
        )
        self.parent.acknowledgementText = _(
            "Method: {paper} (UMed). Uses PyTorch through the PyTorch extension."
        ).format(paper=PAPER)


class UMedProtectTest(ScriptedLoadableModuleTest):
    """Offline self-test: synthetic volume + segmentation, preview, export to a file and to DICOM (in a temporary
    DICOM database); run with 'Reload and Test'."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_PreviewAndExport()
        self.setUp()
        self.test_ExportToDicom()

    @staticmethod
    def _segmentation(volume, lesions: np.ndarray):
        """A segmentation of ``volume`` with one segment per lesion label."""
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "UMedProtectTestSegmentation")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        for value in (1, 2):
            segmentId = segmentation.GetSegmentation().AddEmptySegment(f"lesion {value}")
            mask = (lesions == value).astype(np.uint8)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segmentId, volume)
        return segmentation

    def _syntheticCase(self):
        """A ready logic, and an int16 volume on a rotated grid with a two-lesion segmentation and its labels."""
        from umedprotect.phantoms import phantom_volume

        self.delayDisplay(_("Building a synthetic volume and segmentation"))
        logic = UMedProtectLogic()
        logic.ensureDependencies(askConfirmation=False)
        image, lesions = phantom_volume((10, 48, 40), n_lesions=2, rng=3)
        image = np.round(image).astype(np.int16)
        ijkToRAS = np.array([[0.0, -0.7, 0.0, 12.0], [0.8, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 4.0], [0, 0, 0, 1]])
        volume = slicer.util.addVolumeFromArray(image, ijkToRAS=ijkToRAS, name="UMedProtectTestVolume")
        return logic, volume, self._segmentation(volume, lesions), lesions

    def test_PreviewAndExport(self) -> None:
        from umedprotect.regions import contour_band
        from umedprotect.settings import ProtectionSettings

        logic, volume, segmentation, lesions = self._syntheticCase()
        before = np.array(slicer.util.arrayFromVolume(volume))

        self.delayDisplay(_("Preview"))
        bandRadius = 3
        output = logic.process(
            volume, segmentation, None, ProtectionSettings(epsilon=4.0, band_radius=bandRadius, device="cpu")
        )
        logic.showPreview(volume, output.heatmapVolume, 0.6)
        protected = slicer.util.arrayFromVolume(output.protectedVolume)
        heatmap = slicer.util.arrayFromVolume(output.heatmapVolume)

        inputMatrix, protectedMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(inputMatrix)
        output.protectedVolume.GetIJKToRASMatrix(protectedMatrix)
        self.assertTrue(
            np.allclose(slicer.util.arrayFromVTKMatrix(inputMatrix), slicer.util.arrayFromVTKMatrix(protectedMatrix))
        )
        self.assertEqual(protected.dtype, before.dtype)
        self.assertEqual(output.protectedVolume.GetImageData().GetScalarType(), volume.GetImageData().GetScalarType())
        self.assertEqual(heatmap.dtype, np.float32)
        change = np.abs(protected.astype(np.float64) - before)
        self.assertLessEqual(change.max(), output.metrics["budget_native"] + 1e-9)
        self.assertGreater(change.max(), 0)
        region = np.zeros(before.shape, dtype=bool)
        for k in range(before.shape[0]):  # slices along the coarsest (k) axis
            region[k] = (lesions[k] > 0) | contour_band(lesions[k], bandRadius)
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

    def test_ExportToDicom(self) -> None:
        """Both DICOM writers, into a temporary DICOM database: Slicer's exporter for a volume made here, then the
        product's writer, with every source tag kept, for that series loaded back from the database."""
        if importlib.util.find_spec("DICOMLib") is None:
            logging.info("UMedProtect self-test: Slicer's DICOM module is not available; DICOM export not tested")
            self.delayDisplay(_("Slicer's DICOM module is not available: DICOM export skipped"))
            return
        import pydicom
        from DICOMLib import DICOMUtils

        from umedprotect.dicom_series import SERIES_SUFFIX
        from umedprotect.settings import ProtectionSettings

        settings = ProtectionSettings(epsilon=4.0, band_radius=3, device="cpu")
        logic, volume, segmentation, lesions = self._syntheticCase()
        with DICOMUtils.TemporaryDICOMDatabase() as database:
            self.delayDisplay(_("Export to DICOM through Slicer's exporter"))
            protected = logic.process(volume, segmentation, None, settings).protectedVolume
            exported = logic.exportProtectedToDicom(protected, volume)
            self.assertFalse(exported.sourceTagsKept)
            self.assertIn(exported.seriesInstanceUID, database.seriesForStudy(exported.studyInstanceUID))
            loaded = slicer.mrmlScene.GetNodeByID(DICOMUtils.loadSeriesByUID([exported.seriesInstanceUID])[0])
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(loaded), slicer.util.arrayFromVolume(protected))

            self.delayDisplay(_("Export to DICOM with the source's tags"))
            protectedAgain = logic.process(loaded, self._segmentation(loaded, lesions), None, settings).protectedVolume
            derived = logic.exportProtectedToDicom(protectedAgain, loaded)
            self.assertTrue(derived.sourceTagsKept)
            self.assertEqual(derived.studyInstanceUID, exported.studyInstanceUID)
            files = database.filesForSeries(derived.seriesInstanceUID)
            self.assertEqual(len(files), len(database.filesForSeries(exported.seriesInstanceUID)))
            header = pydicom.dcmread(files[0], stop_before_pixels=True)
            self.assertEqual((header.StudyInstanceUID, header.ImageType[0]), (exported.studyInstanceUID, "DERIVED"))
            self.assertTrue(header.SeriesDescription.endswith(SERIES_SUFFIX.strip()))
            reloaded = slicer.mrmlScene.GetNodeByID(DICOMUtils.loadSeriesByUID([derived.seriesInstanceUID])[0])
            np.testing.assert_array_equal(
                slicer.util.arrayFromVolume(reloaded), slicer.util.arrayFromVolume(protectedAgain)
            )
        logging.info("UMedProtect DICOM export self-test passed")
        self.delayDisplay(_("DICOM export test passed"))
