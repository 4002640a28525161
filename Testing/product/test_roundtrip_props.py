"""Property-based round trips of the image I/O: any size, spacing, origin, direction, pixel type, format."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from umedprotect import io

DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]
# Tolerance on geometry per format: MetaImage stores doubles exactly; NRRD stores spacing x direction
# (the last digit may move); NIfTI stores float32 and a quaternion (the input is first rounded to it).
GEOMETRY_ATOL = {".mha": 0.0, ".nrrd": 1e-12, ".nii.gz": 1e-6}


@st.composite
def images(draw):
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    if np.prod(shape) < 2:
        shape = (2,) + shape[1:]
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        array = (rng.normal(size=shape) * 10 ** rng.uniform(-3, 6)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    flat = array.reshape(-1)
    flat[0], flat[-1] = (0, 1) if flat[0] == flat[-1] else (flat[0], flat[-1])  # never constant
    spacing = draw(st.lists(st.floats(0.05, 20.0, allow_subnormal=False), min_size=ndim, max_size=ndim))
    origin = draw(st.lists(st.floats(-500.0, 500.0, allow_subnormal=False), min_size=ndim, max_size=ndim))
    q, r = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    direction = q * np.sign(np.diag(r))  # random orthonormal matrix, reflections included
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction.ravel().tolist())
    return image


def assert_geometry_close(a: sitk.Image, b: sitk.Image, atol: float):
    assert a.GetSize() == b.GetSize() and a.GetPixelID() == b.GetPixelID()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=atol, atol=0)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=atol, atol=atol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=atol)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(image=images(), ending=st.sampled_from(sorted(GEOMETRY_ATOL)))
def test_read_then_write_like_reproduces_voxels_geometry_and_pixel_type(image, ending):
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / f"in{ending}"
        sitk.WriteImage(image, str(source))
        read = io.read_image(source)
        array, spacing = io.to_array(read)
        assert spacing == tuple(reversed(read.GetSpacing()))
        out = io.write_like(array, read, Path(folder) / f"out{ending}")
        back = sitk.ReadImage(str(out))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
        assert_geometry_close(back, read, GEOMETRY_ATOL[ending])
        assert_geometry_close(back, image, GEOMETRY_ATOL[ending])
        assert sorted(p.name for p in Path(folder).iterdir()) == sorted([source.name, out.name])


@settings(max_examples=20, deadline=None, derandomize=True)
@given(image=images())
def test_a_mask_on_the_image_grid_reads_back_unchanged_with_or_without_resampling(image):
    labels = (sitk.GetArrayFromImage(image) % 3).astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        mask = sitk.GetImageFromArray(labels)
        mask.CopyInformation(image)
        sitk.WriteImage(mask, str(Path(folder) / "mask.mha"))
        for resample in (False, True):
            read = io.read_label(Path(folder) / "mask.mha", image, resample=resample)
            np.testing.assert_array_equal(sitk.GetArrayFromImage(read), labels)
            assert io.geometry_difference(read, image) is None
