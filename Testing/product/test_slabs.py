"""Slab by slab along the slicing axis gives what one slab (the whole volume in memory) gives."""

from __future__ import annotations

import numpy as np
import pytest

from umedprotect.array_protection import protect_array
from umedprotect.metrics import changed_box, image_quality, ssim
from umedprotect.phantoms import phantom_volume

SPACINGS = {0: (3.0, 1.0, 1.0), 2: (1.0, 1.0, 2.5)}  # slicing axis -> spacing per numpy axis


@pytest.mark.parametrize("dtype", ["int16", "float32"])
@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("options", [{}, {"min_psnr": 58.0, "label_values": [1]}], ids=["default", "floor-labels"])
def test_tiny_slabs_protect_exactly_as_one_slab(random_protector, dtype, axis, options):
    image, labels = phantom_volume((11, 48, 40), n_lesions=2, rng=4)
    image, labels = (np.moveaxis(a, 0, axis) for a in (image, labels))  # the lesions span slices along ``axis``
    image = (image * 7).astype(dtype)
    run = dict(spacing=SPACINGS[axis], device="cpu", batch_size=3, **options)
    whole = protect_array(image, labels, random_protector, slab_slices=10_000, **run)
    slabbed = protect_array(image, labels, random_protector, slab_slices=2, **run)
    assert whole.metrics["slices_protected"] >= 4 and whole.metrics["max_abs_change"] > 0
    assert np.array_equal(slabbed.protected, whole.protected)
    assert np.array_equal(slabbed.region, whole.region)
    ssim_whole, ssim_slabbed = whole.metrics.pop("ssim"), slabbed.metrics.pop("ssim")
    assert ssim_slabbed == pytest.approx(ssim_whole, rel=1e-12, abs=1e-12)
    assert slabbed.metrics == whole.metrics  # PSNR (whole, per slice), max change, fraction, scale: exactly


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_metrics_by_slabs_match_the_whole_volume(rng, axis):
    original = rng.integers(-1000, 1000, (9, 30, 26)).astype(np.int16)
    protected = original.copy()
    protected[2:7, 5:20, 4:22] += rng.integers(-3, 4, (5, 15, 18)).astype(np.int16)
    whole = image_quality(original, protected, axis)
    for slab in (1, 2, 4):
        assert changed_box(original, protected, 7, axis, slab) == changed_box(original, protected, 7, axis)
        by_slabs = image_quality(original, protected, axis, slab)
        assert by_slabs.pop("ssim") == pytest.approx(whole["ssim"], rel=1e-12)
        assert by_slabs == {k: v for k, v in whole.items() if k != "ssim"}
    assert ssim(original, protected, axis) == whole["ssim"] < 1


def test_nothing_changed_reads_as_identical_by_slabs(rng):
    original = rng.normal(size=(6, 10, 10))
    assert image_quality(original, original.copy(), 0, 2) == {
        "psnr_db": float("inf"),
        "ssim": 1.0,
        "max_abs_change": 0.0,
        "fraction_changed": 0.0,
    }
