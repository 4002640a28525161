"""Fetch the real data of shared/DATA.md and build nnU-Net v2 raw datasets for the study.

    python -m benchmarks.prepare_data [--data-dir benchmarks/data] [--only 001 002 ...] [--overwrite]

Sources (fetched with ``pip download`` from PyPI into DATA_DIR/downloads, extracted to
DATA_DIR/sources; nothing is committed):
  pyradiomics 3.0.1 source package (BSD-3-Clause): brain MRI (brain1, brain2), breast MRI (breast1),
    chest CT (lung1, lung2) with manual lesion masks.
  stardist 0.9.1 wheel (BSD-3-Clause): a 2D fluorescence microscopy image of nuclei with its mask.
  TotalSegmentator 2.18.0 source package (Apache-2.0): abdominal CT (example_ct_sm, 3 mm), a second
    CT as a DICOM series (512x512, 0.98 mm), abdominal MR (example_mr_sm, 3 mm). Their masks are
    TotalSegmentator's own predictions, not manual labels.

Datasets written to DATA_DIR/nnUNet_raw (the split is declared in each dataset.json under "split"):
  Dataset001_PyradiomicsLesions  2D lesion slices (each labelled slice is a case). Split by
      subject: train brain1, breast1, lung2; test brain2, lung1. CT slices are cropped to 256x256
      around the subject's lesion centroid (the same box for every slice of a subject).
  Dataset002_TotalSegCT  2D abdominal CT slices, labels liver, spleen, kidney (left+right), stomach.
      Split by subject: train example_ct_sm (3 mm); test the DICOM CT resampled to 3 mm.
  Dataset004_TotalSegCTLiver  the Dataset002 slices with the liver as the only label (binary: the
      task a short victim training learns well enough for its ratio to mean something).
  Dataset005_TotalSegCTLiverBlocks  liver slices of one subject (example_ct, the 112-slice scan that
      example_ct_sm is the top of; mask example_seg_fast_force_split). Split by slice blocks: test
      the liver slices at positions 10-14 and 28-32 (cranio-caudal order), one slice left out on
      each side of a test block, train the rest. No change of subject or contrast phase between
      train and test (Dataset004's test subject is contrast-enhanced: liver 89 HU against 45 HU),
      so the clean victim generalises and the ratio measures the protection, not the domain gap.
  Dataset006_TotalSegCTBlocks  the Dataset005 slices and split with all four organs labelled
      (example_seg_fast_force_split): the same images with a multi-organ label set.
  Dataset007_TotalSegCTRibsBlocks  many small objects: the ribs (one label, 10-15 separate ribs of about
      100 pixels per slice) in the 2D axial slices of the DICOM CT series (512x512, 0.98 mm, 20 slices);
      one subject, split by slice blocks: test slices 8-11, slices 7 and 12 left out, train the rest.
  Dataset008_TotalSegCTManyOrgansBlocks  the Dataset005 slices and split with twelve structures labelled
      (liver, spleen, each kidney, stomach, pancreas, colon, aorta, inferior vena cava, vertebrae, each
      autochthon muscle): more labels than the fill codes have distinct tiles.
  Dataset015_TotalSegCTLiverSlabs3D  Dataset005's subject as 3D volumes (liver only, 3 mm isotropic):
      split by slabs along its liver slices in cranio-caudal order, test positions 15-26 as one volume,
      one slice left out on each side, train the slices below (with the 10 under the liver) and above, in
      slabs of 8 slices (5 volumes).
  Dataset003_TotalSegMR  2D abdominal MR slices, same four labels. One subject only: split by slice
      blocks, train slices 0-13, test slices 16-19 (two slices left out between the blocks).
  Dataset011_PyradiomicsLesions3D  the Dataset001 subjects as 3D volumes (same split and crop).
  Dataset016_PyradiomicsNodulesBlocks  small lesions: the lung nodules of the two chest CTs (lung1, lung2;
      0.25-5 % of each 256x256 crop) as 2D slices, CT, split by slice blocks within each subject: test
      lung2's nodule slices 19-20 (18 and 21 left out) and lung1's 34 (33 left out), train the rest.
  Dataset012_TotalSegCT3D  the Dataset002 subjects as 3D volumes (same split and resampling).
  Dataset017_StardistNucleiTiles  many small objects in 2D microscopy: stardist 0.9.1's fluorescence image of
      nuclei (512x512, 16-bit storage, values 0-235; from the 2018 Data Science Bowl, BBBC038) with its manual
      instance mask as one label, in 4 x 4 tiles of 128x128 (6-16 nuclei each); split by tile rows: test the
      bottom row, train the rest. Not CT: victims z-score each case.
  Dataset900_Phantoms2D  synthetic phantom slices (offline, exact masks): 16 train, 6 test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import tifffile

from umedprotect.atomic import atomic_path
from umedprotect.phantoms import phantom_slice

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATA_DIR = ROOT / "benchmarks" / "data"
PACKAGES = {  # name: (version, folder of its data in the package, wheel or source package)
    "pyradiomics": ("3.0.1", "pyradiomics-3.0.1/data/", False),
    "totalsegmentator": ("2.18.0", "totalsegmentator-2.18.0/tests/reference_files/", False),
    "stardist": ("0.9.1", "stardist/data/images/", True),
}
WHEEL_PLATFORM = ("--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--abi", "cp311")  # any would do
NUCLEI_TILE = 128  # Dataset017: tile side, pixels (the 512x512 image in 4 x 4 tiles)
LESION_TRAIN, LESION_TEST = ("brain1", "breast1", "lung2"), ("brain2", "lung1")
CROP = 256  # in-plane crop of the 512x512 lung CTs, pixels
ORGANS = {"liver": (5,), "spleen": (1,), "kidney": (2, 3), "stomach": (6,)}  # TotalSegmentator v2 ids
ORGAN_GROUPS = tuple(ORGANS.values())
MANY_ORGANS = {  # Dataset008: twelve structures of the abdomen, each in most of the liver slices
    "liver": (5,),
    "spleen": (1,),
    "kidney_right": (2,),
    "kidney_left": (3,),
    "stomach": (6,),
    "pancreas": (7,),
    "colon": (20,),
    "aorta": (52,),
    "inferior_vena_cava": (63,),
    "vertebrae": tuple(range(25, 51)),
    "autochthon_left": (86,),
    "autochthon_right": (87,),
}
ORGAN_SPACING = 3.0  # mm, isotropic, for the CT test subject (as the training subject)
MR_TRAIN_SLICES, MR_TEST_SLICES = range(0, 14), range(16, 20)
LIVER_TEST_BLOCKS = (range(10, 15), range(28, 33))  # Dataset005: positions among the liver slices
RIBS = (range(92, 116),)  # TotalSegmentator v2 ids of the ribs (left and right 1-12), one label
RIB_TEST_SLICES = range(8, 12)  # Dataset007: slices of the DICOM CT series
NODULE_TEST_SLICES = {"lung2": ((19, 20), (18, 21)), "lung1": ((34,), (33,))}  # Dataset016: (test, left out)
LIVER_TEST_SLAB = range(15, 27)  # Dataset015: positions among the liver slices
SLAB_SLICES = 8  # Dataset015: slices per training volume


def fetch(package: str, data_dir: Path) -> Path:
    """Download the package with pip (once) and extract its data files; return the data folder."""
    version, member_prefix, wheel = PACKAGES[package]
    downloads, sources = data_dir / "downloads", data_dir / "sources"
    target = sources / member_prefix
    if target.is_dir():
        return target
    pattern = f"{package}-{version}*.whl" if wheel else f"{package}-{version}.tar.gz"
    if not any(downloads.glob(pattern)):
        downloads.mkdir(parents=True, exist_ok=True)
        binary = ["--only-binary", ":all:", *WHEEL_PLATFORM] if wheel else ["--no-binary", package]
        command = [sys.executable, "-m", "pip", "download", "--no-deps", *binary, "--no-build-isolation"]
        print("fetching", package, version, "from PyPI", flush=True)
        subprocess.run([*command, f"{package}=={version}", "-d", str(downloads)], check=True, stdout=subprocess.DEVNULL)
    downloaded = min(downloads.glob(pattern))
    if wheel:
        with zipfile.ZipFile(downloaded) as archive:
            archive.extractall(sources, [name for name in archive.namelist() if name.startswith(member_prefix)])
    else:
        with tarfile.open(downloaded) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(member_prefix) and (m.isfile() or m.isdir())]
            tar.extractall(sources, members=members, filter="data")
    return target


def _read_lps(path: Path) -> sitk.Image:
    """A volume reoriented to LPS, so that every subject's axial slices show the same orientation."""
    return sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")


def write_image(image: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def slice_image(volume: sitk.Image, z: int) -> sitk.Image:
    """Axial slice ``z`` of a volume as a 2D image keeping its in-plane spacing (origin 0, identity)."""
    array = sitk.GetArrayViewFromImage(volume)[z]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(volume.GetSpacing()[:2])
    return image


def write_dataset(
    folder: Path, name: str, labels: dict[str, int], channel: str, train: list, test: list, split: str
) -> None:
    """``train``/``test``: lists of (case_id, image, label) SimpleITK images; (re)writes the nnU-Net layout."""
    if folder.exists():
        shutil.rmtree(folder)  # a rebuilt dataset must not keep cases of an earlier build
    for sub, cases in (("Tr", train), ("Ts", test)):
        for case_id, image, label in cases:
            write_image(image, folder / f"images{sub}" / f"{case_id}_0000.nii.gz")
            write_image(label, folder / f"labels{sub}" / f"{case_id}.nii.gz")
    meta = {
        "name": name,
        "channel_names": {"0": channel},
        "labels": labels,
        "numTraining": len(train),
        "file_ending": ".nii.gz",
        "split": split,
        "training_cases": [c[0] for c in train],
        "test_cases": [c[0] for c in test],
    }
    with atomic_path(folder / "dataset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{folder.name}: {len(train)} training and {len(test)} test cases", flush=True)


def _lesion_volume(source: Path, subject: str) -> tuple[sitk.Image, sitk.Image]:
    """Image and binary lesion mask of a pyradiomics subject; 512x512 CTs cropped around the lesion."""
    image = _read_lps(source / f"{subject}_image.nrrd")
    label = sitk.Resample(
        sitk.ReadImage(str(source / f"{subject}_label.nrrd")), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0
    )
    label = sitk.GetImageFromArray((sitk.GetArrayViewFromImage(label) > 0).astype(np.uint8))
    label.CopyInformation(image)
    size = image.GetSize()
    if size[0] > CROP and size[1] > CROP:
        ys, xs = np.nonzero(sitk.GetArrayViewFromImage(label).any(axis=0))
        cy, cx = int(ys.mean()), int(xs.mean())
        y0 = int(np.clip(cy - CROP // 2, 0, size[1] - CROP))
        x0 = int(np.clip(cx - CROP // 2, 0, size[0] - CROP))
        box = ([x0, y0, 0], [CROP, CROP, size[2]])
        image, label = sitk.RegionOfInterest(image, box[1], box[0]), sitk.RegionOfInterest(label, box[1], box[0])
    return image, label


def lesion_datasets(data_dir: Path, out: Path, which: set[str]) -> None:
    source = fetch("pyradiomics", data_dir)
    volumes = {s: _lesion_volume(source, s) for s in LESION_TRAIN + LESION_TEST}
    labels = {"background": 0, "lesion": 1}
    split = "by subject: train brain1, breast1, lung2; test brain2, lung1 (pyradiomics 3.0.1 data)"

    def labelled_slices(subject: str) -> list[tuple[int, tuple]]:
        """(z, case) for every axial slice of ``subject`` that holds lesion, in slice order."""
        image, label = volumes[subject]
        zs = np.flatnonzero(sitk.GetArrayViewFromImage(label).any(axis=(1, 2)))
        return [(int(z), (f"{subject}_z{z:03d}", slice_image(image, int(z)), slice_image(label, int(z)))) for z in zs]

    if "001" in which:

        def slices(subjects):
            return [case for s in subjects for _, case in labelled_slices(s)]

        write_dataset(
            out / "Dataset001_PyradiomicsLesions",
            "PyradiomicsLesions",
            labels,
            "MRI/CT",
            slices(LESION_TRAIN),
            slices(LESION_TEST),
            split + "; each labelled axial slice is a case",
        )
    if "016" in which:
        train, test = [], []
        for s, (test_zs, left_out) in NODULE_TEST_SLICES.items():
            for z, case in labelled_slices(s):
                if z not in left_out:
                    (test if z in test_zs else train).append(case)
        write_dataset(
            out / "Dataset016_PyradiomicsNodulesBlocks",
            "PyradiomicsNodulesBlocks",
            labels,
            "CT",
            train,
            test,
            "by slice blocks within each subject (lung1, lung2; pyradiomics 3.0.1 data): test lung2 nodule slices "
            "19-20 and lung1 34, slices 18, 21 and 33 left out, train the rest",
        )
    if "011" in which:

        def as_cases(subjects):
            return [(s, *volumes[s]) for s in subjects]

        write_dataset(
            out / "Dataset011_PyradiomicsLesions3D",
            "PyradiomicsLesions3D",
            labels,
            "MRI/CT",
            as_cases(LESION_TRAIN),
            as_cases(LESION_TEST),
            split,
        )


def _organ_labels(seg: sitk.Image, image: sitk.Image, groups: tuple = ORGAN_GROUPS) -> sitk.Image:
    """TotalSegmentator labels on ``image``'s grid, the ids of ``groups`` mapped to 1, 2, ... (by default
    1 liver, 2 spleen, 3 kidney, 4 stomach)."""
    seg = sitk.Resample(seg, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)  # masks may be stored flipped
    raw = sitk.GetArrayViewFromImage(seg)
    out = np.zeros(raw.shape, np.uint8)
    for value, ids in enumerate(groups, start=1):
        out[np.isin(raw, ids)] = value
    labels = sitk.GetImageFromArray(out)
    labels.CopyInformation(image)
    return labels


def _resample(image: sitk.Image, spacing: float, interpolator: int, default: float) -> sitk.Image:
    new_spacing = (spacing,) * 3
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), new_spacing)]
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        new_spacing,
        image.GetDirection(),
        default,
        image.GetPixelID(),
    )


def organ_datasets(data_dir: Path, out: Path, which: set[str]) -> None:
    source = fetch("totalsegmentator", data_dir)
    labels = {"background": 0, **{name: i for i, name in enumerate(ORGANS, start=1)}}

    def organ_slices(image, label, prefix, zs):
        return [
            (f"{prefix}_z{z:03d}", slice_image(image, z), slice_image(label, z))
            for z in zs
            if sitk.GetArrayViewFromImage(label)[z].any()
        ]

    if which & {"002", "004", "007", "012"}:  # the second CT subject, a DICOM series
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(source / "example_ct_dicom")))
        dicom = sitk.DICOMOrient(sitk.Cast(reader.Execute(), sitk.sitkInt16), "LPS")
    if which & {"002", "004", "012"}:
        train_image = _read_lps(source / "example_ct_sm.nii.gz")
        train_label = _organ_labels(sitk.ReadImage(str(source / "example_seg.nii.gz")), train_image)
        test_label = _organ_labels(sitk.ReadImage(str(source / "example_seg_dicom.nii.gz")), dicom)
        test_image = _resample(dicom, ORGAN_SPACING, sitk.sitkLinear, -1024)
        test_label = _resample(test_label, ORGAN_SPACING, sitk.sitkNearestNeighbor, 0)
        split = "by subject: train example_ct_sm (3 mm); test the example_ct_dicom series resampled to 3 mm"
        if "002" in which:
            write_dataset(
                out / "Dataset002_TotalSegCT",
                "TotalSegCT",
                labels,
                "CT",
                organ_slices(train_image, train_label, "ct_sm", range(train_image.GetSize()[2])),
                organ_slices(test_image, test_label, "ct_dicom", range(test_image.GetSize()[2])),
                split + "; each axial slice with an organ is a case",
            )
        if "004" in which:

            def liver(label):
                return sitk.Cast(label == 1, sitk.sitkUInt8)

            write_dataset(
                out / "Dataset004_TotalSegCTLiver",
                "TotalSegCTLiver",
                {"background": 0, "liver": 1},
                "CT",
                organ_slices(train_image, liver(train_label), "ct_sm", range(train_image.GetSize()[2])),
                organ_slices(test_image, liver(test_label), "ct_dicom", range(test_image.GetSize()[2])),
                split + "; each axial slice with liver is a case",
            )
        if "012" in which:
            write_dataset(
                out / "Dataset012_TotalSegCT3D",
                "TotalSegCT3D",
                labels,
                "CT",
                [("ct_sm", train_image, train_label)],
                [("ct_dicom", test_image, test_label)],
                split,
            )
    if "007" in which:
        ribs = _organ_labels(sitk.ReadImage(str(source / "example_seg_dicom.nii.gz")), dicom, RIBS)
        left_out = {RIB_TEST_SLICES.start - 1, RIB_TEST_SLICES.stop}
        train = [z for z in range(dicom.GetSize()[2]) if z not in set(RIB_TEST_SLICES) | left_out]
        write_dataset(
            out / "Dataset007_TotalSegCTRibsBlocks",
            "TotalSegCTRibsBlocks",
            {"background": 0, "rib": 1},
            "CT",
            organ_slices(dicom, ribs, "ct_dicom", train),
            organ_slices(dicom, ribs, "ct_dicom", RIB_TEST_SLICES),
            "one subject (example_ct_dicom, 0.98 mm in-plane): by slice blocks, test axial slices 8-11, "
            "slices 7 and 12 left out, train the rest; each slice holds 10-15 separate ribs",
        )
    if which & {"005", "006", "008", "015"}:
        image = _read_lps(source / "example_ct.nii.gz")
        seg = sitk.ReadImage(str(source / "example_seg_fast_force_split.nii.gz"))
        organs = _organ_labels(seg, image)
        liver = sitk.Cast(organs == 1, sitk.sitkUInt8)
        zs = [z for z in range(image.GetSize()[2]) if sitk.GetArrayViewFromImage(liver)[z].any()]
        tested = {i for block in LIVER_TEST_BLOCKS for i in block}
        left_out = {i for block in LIVER_TEST_BLOCKS for i in (block.start - 1, block.stop)}
        test = [z for i, z in enumerate(zs) if i in tested]
        train = [z for i, z in enumerate(zs) if i not in tested | left_out]
        split = (
            "one subject (example_ct, 3 mm): by slice blocks of its liver slices in cranio-caudal order, "
            "test positions 10-14 and 28-32, one slice left out on each side of a test block, train the rest"
        )
        if "005" in which:
            write_dataset(
                out / "Dataset005_TotalSegCTLiverBlocks",
                "TotalSegCTLiverBlocks",
                {"background": 0, "liver": 1},
                "CT",
                organ_slices(image, liver, "ct", train),
                organ_slices(image, liver, "ct", test),
                split,
            )
        if "006" in which:
            write_dataset(
                out / "Dataset006_TotalSegCTBlocks",
                "TotalSegCTBlocks",
                labels,
                "CT",
                organ_slices(image, organs, "ct", train),
                organ_slices(image, organs, "ct", test),
                split + "; all four organs labelled",
            )
        if "008" in which:
            many = _organ_labels(seg, image, tuple(MANY_ORGANS.values()))
            write_dataset(
                out / "Dataset008_TotalSegCTManyOrgansBlocks",
                "TotalSegCTManyOrgansBlocks",
                {"background": 0, **{name: i for i, name in enumerate(MANY_ORGANS, start=1)}},
                "CT",
                organ_slices(image, many, "ct", train),
                organ_slices(image, many, "ct", test),
                split + "; twelve structures labelled",
            )
        if "015" in which:
            test = zs[LIVER_TEST_SLAB.start : LIVER_TEST_SLAB.stop]
            below = range(zs[0] - 10, zs[LIVER_TEST_SLAB.start - 1])
            above = range(zs[LIVER_TEST_SLAB.stop + 1], zs[-1] + 1)

            def slab(name, z_range):
                box = ([0, 0, z_range[0]], [*image.GetSize()[:2], len(z_range)])
                return name, *(sitk.RegionOfInterest(volume, box[1], box[0]) for volume in (image, liver))

            train = [
                slab(f"ct_z{zs_slab[0]:03d}", zs_slab)
                for z_range in (below, above)
                for zs_slab in (z_range[i : i + SLAB_SLICES] for i in range(0, len(z_range), SLAB_SLICES))
            ]
            write_dataset(
                out / "Dataset015_TotalSegCTLiverSlabs3D",
                "TotalSegCTLiverSlabs3D",
                {"background": 0, "liver": 1},
                "CT",
                train,
                [slab(f"ct_z{test[0]:03d}", range(test[0], test[-1] + 1))],
                "one subject (example_ct, 3 mm): by slabs of its liver slices in cranio-caudal order, test "
                "positions 15-26 as one volume, one slice left out on each side, train the slices below (with "
                "the 10 under the liver) and above, in slabs of 8 slices",
            )
    if "003" in which:
        image = _read_lps(source / "example_mr_sm.nii.gz")
        label = _organ_labels(sitk.ReadImage(str(source / "example_seg_mr.nii.gz")), image)
        write_dataset(
            out / "Dataset003_TotalSegMR",
            "TotalSegMR",
            labels,
            "MR",
            organ_slices(image, label, "mr", MR_TRAIN_SLICES),
            organ_slices(image, label, "mr", MR_TEST_SLICES),
            "one subject (example_mr_sm): by slice blocks, train axial slices 0-13, test 16-19",
        )


def nuclei_dataset(data_dir: Path, out: Path) -> None:
    """Dataset017: stardist's fluorescence microscopy image (DSB 2018) in 128x128 tiles, the nuclei as one label."""
    source = fetch("stardist", data_dir)
    image = tifffile.imread(source / "img2d.tif")
    nuclei = (tifffile.imread(source / "mask2d.tif") > 0).astype(np.uint8)
    rows = image.shape[0] // NUCLEI_TILE
    train, test = [], []
    for row in range(rows):
        for col in range(image.shape[1] // NUCLEI_TILE):
            box = np.s_[row * NUCLEI_TILE : (row + 1) * NUCLEI_TILE, col * NUCLEI_TILE : (col + 1) * NUCLEI_TILE]
            case = (f"nuclei_r{row}c{col}", *(sitk.GetImageFromArray(a[box]) for a in (image, nuclei)))
            (test if row == rows - 1 else train).append(case)
    write_dataset(
        out / "Dataset017_StardistNucleiTiles",
        "StardistNucleiTiles",
        {"background": 0, "nucleus": 1},
        "fluorescence microscopy",
        train,
        test,
        "one 512x512 fluorescence microscopy image (stardist 0.9.1's test image, from the 2018 Data Science "
        "Bowl) in 4 x 4 tiles of 128x128: test the bottom row of tiles, train the rest; 6-16 nuclei per tile",
    )


def phantom_dataset(out: Path, n_train: int = 16, n_test: int = 6, size: int = 96) -> None:
    """Synthetic 2D phantoms (int16, two lesion labels), always available offline."""

    def cases(seeds, prefix):
        result = []
        for k in seeds:
            image, labels = phantom_slice((size, size), n_lesions=2, rng=k)
            img = sitk.GetImageFromArray(np.round(image).astype(np.int16))
            img.SetSpacing((0.8, 0.8))
            lab = sitk.GetImageFromArray(labels)
            lab.CopyInformation(img)
            result.append((f"{prefix}{k:03d}", img, lab))
        return result

    write_dataset(
        out / "Dataset900_Phantoms2D",
        "Phantoms2D",
        {"background": 0, "lesion1": 1, "lesion2": 2},
        "CT",
        cases(range(n_train), "phantom"),
        cases(range(1000, 1000 + n_test), "phantom"),
        "synthetic: independent random phantoms (seeds 0-15 train, 1000-1005 test)",
    )


DATASETS = ("001", "002", "003", "004", "005", "006", "007", "008", "011", "012", "015", "016", "017", "900")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where downloads and datasets go")
    parser.add_argument("--only", nargs="+", choices=DATASETS, default=list(DATASETS), help="datasets to build")
    args = parser.parse_args(argv)
    out = args.data_dir / "nnUNet_raw"
    which = set(args.only)
    if which & {"001", "011", "016"}:
        lesion_datasets(args.data_dir, out, which)
    if which & {"002", "003", "004", "005", "006", "007", "008", "012", "015"}:
        organ_datasets(args.data_dir, out, which)
    if "017" in which:
        nuclei_dataset(args.data_dir, out)
    if "900" in which:
        phantom_dataset(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
