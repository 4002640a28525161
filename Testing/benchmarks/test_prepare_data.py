"""The benchmark datasets built from fetched sources (here from stand-ins written where the fetch leaves them)."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import tifffile

from benchmarks.prepare_data import NUCLEI_TILE, PACKAGES, nuclei_dataset


def test_the_nuclei_image_becomes_tiles_split_by_rows_with_one_label(tmp_path):
    images = tmp_path / "sources" / PACKAGES["stardist"][1]
    images.mkdir(parents=True)
    side = 4 * NUCLEI_TILE
    image = np.arange(side * side, dtype=np.uint16).reshape(side, side) % 236
    instances = np.zeros((side, side), np.uint16)
    instances[10:20, 10:20], instances[400:410, 40:50] = 1, 7  # two nuclei, in the first and the last row of tiles
    tifffile.imwrite(images / "img2d.tif", image)
    tifffile.imwrite(images / "mask2d.tif", instances)
    nuclei_dataset(tmp_path, tmp_path / "raw")
    root = tmp_path / "raw" / "Dataset017_StardistNucleiTiles"
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "fluorescence microscopy"} and meta["labels"] == {
        "background": 0,
        "nucleus": 1,
    }
    assert len(meta["training_cases"]) == 12 and meta["test_cases"] == [f"nuclei_r3c{c}" for c in range(4)]
    tile = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "imagesTr" / "nuclei_r0c0_0000.nii.gz")))
    assert tile.dtype == np.uint16 and np.array_equal(tile, image[:NUCLEI_TILE, :NUCLEI_TILE])
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTs" / "nuclei_r3c0.nii.gz")))
    assert set(np.unique(label)) == {0, 1} and label.sum() == 100  # the instance id 7 became the one label
