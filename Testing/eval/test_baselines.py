"""Baseline protection methods: they run, keep the budget after rounding and the labels, follow the region rule."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_nnunet_dataset

from umedprotect import io
from umedprotect.errors import InputError
from umedprotect.nnunet import read_dataset
from umedprotect_eval.baselines import METHOD_NAMES, BaselineSettings, _ar_coefficients, _ar_field, build_case_protector

TINY = BaselineSettings(
    surrogate_steps=4,
    batch_size=2,
    patch_size=32,
    em_rounds=1,
    em_train_steps=2,
    em_pgd_steps=1,
    pgd_steps=1,
    sep_checkpoints=2,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return read_dataset(write_nnunet_dataset(tmp_path_factory.mktemp("base") / "Dataset", n_train=2, shape=(4, 32, 32)))


def _case(dataset, k: int = 0):
    case = dataset.training[k]
    image = io.read_image(case.images[0])
    array, spacing = io.to_array(image)
    labels, _ = io.to_array(io.read_label(case.label, image))
    return array, labels, spacing


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_runs_within_budget_and_keeps_labels(dataset, method):
    image, labels, spacing = _case(dataset)
    labels_before = labels.copy()
    protect = build_case_protector(method, dataset, epsilon=4.0, device="cpu", seed=0, settings=TINY)
    result = protect(image, labels, spacing=spacing)
    assert result.protected.dtype == image.dtype and result.protected.shape == image.shape
    change = np.abs(result.protected.astype(np.float64) - image.astype(np.float64))
    assert 0 < change.max() <= result.budget
    assert result.budget == pytest.approx(4 / 255 * result.window.width)
    np.testing.assert_array_equal(labels, labels_before)
    axis = result.slice_axis
    roi_slices = np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1).any(axis=1)
    unchanged_slices = np.moveaxis(change, axis, 0)[~roi_slices]
    assert roi_slices.any() and (~roi_slices).any()
    assert not unchanged_slices.any(), "slices without ROI must stay bit-identical"
    assert not change[~result.region].any()
    outside_roi = change[labels == 0]
    if method == "random":
        assert not outside_roi.any()  # ROI only
    else:
        assert outside_roi.any()  # image-wide on ROI slices (LSP/AR: background is the second class)
    assert result.metrics["psnr_db"] > 30


def own_region(labels: np.ndarray, axis: int, method: str) -> np.ndarray:
    """The rule, built here: ``random`` changes the ROI only, the others every voxel of a slice holding ROI."""
    if method == "random":
        return labels != 0
    roi_slices = np.moveaxis(labels != 0, axis, 0).reshape(labels.shape[axis], -1).any(axis=1)
    shape = [1] * labels.ndim
    shape[axis] = labels.shape[axis]
    return np.broadcast_to(roi_slices.reshape(shape), labels.shape)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_is_confined_to_its_own_region_and_budget_computed_here(dataset, method):
    """Region and budget from the test's own rule and percentiles, not from what the method reports."""
    image, labels, spacing = _case(dataset, 1)
    result = build_case_protector(method, dataset, epsilon=6.0, device="cpu", seed=1, settings=TINY)(
        image, labels, spacing=spacing
    )
    axis = int(np.argmax(spacing))
    lo, hi = np.percentile(image.astype(np.float64), [0.5, 99.5])
    change = result.protected.astype(np.float64) - image.astype(np.float64)
    region = own_region(labels, axis, method)
    assert not change[~region].any()
    assert (change[region] != 0).mean() > 0.3
    assert 1 <= np.abs(change).max() <= np.floor(6.0 / 255 * (hi - lo))  # int16: whole levels within ε


@pytest.mark.parametrize("method", ["random", "lsp", "ar"])
def test_training_free_methods_are_deterministic_with_a_seed(dataset, method):
    image, labels, spacing = _case(dataset)
    first = build_case_protector(method, dataset, 4.0, "cpu", seed=3)(image, labels, spacing=spacing)
    second = build_case_protector(method, dataset, 4.0, "cpu", seed=3)(image, labels, spacing=spacing)
    other = build_case_protector(method, dataset, 4.0, "cpu", seed=4)(image, labels, spacing=spacing)
    np.testing.assert_array_equal(first.protected, second.protected)
    assert not np.array_equal(first.protected, other.protected)


def test_float_images_use_the_full_budget(dataset):
    image, labels, spacing = _case(dataset)
    image = image.astype(np.float32) + 0.25
    result = build_case_protector("lsp", dataset, 2.0, "cpu", seed=0)(image, labels, spacing=spacing)
    change = np.abs(result.protected.astype(np.float64) - image.astype(np.float64))
    assert change.max() == pytest.approx(result.budget, rel=1e-3)
    assert change.max() <= result.budget


@pytest.mark.parametrize("seed", range(6))
def test_ar_field_over_a_whole_slice_is_bounded_and_spatially_correlated(seed):
    rng = np.random.default_rng(seed)
    field = _ar_field(_ar_coefficients(rng), (512, 500), rng)
    assert field.shape == (512, 500) and np.isfinite(field).all()
    assert np.abs(field).max() < 8 * field.std()  # no corner of the slice takes the whole budget
    neighbours = ((field[:, 1:], field[:, :-1]), (field[1:], field[:-1]), (field[1:, 1:], field[:-1, :-1]))
    assert max(abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in neighbours) > 0.5


def test_unknown_method_and_bad_epsilon_are_input_errors(dataset):
    with pytest.raises(InputError, match="unknown method 'xyz'"):
        build_case_protector("xyz", dataset, 4.0)
    for epsilon in (0.0, 65.0):  # the range of the settings table
        with pytest.raises(InputError, match=r"out of range \(0, 64\]") as error:
            build_case_protector("lsp", dataset, epsilon)
        assert error.value.option == "epsilon"


def test_setup_method_dispatches_to_the_baseline_with_its_settings(dataset):
    from umedprotect.methods import method_names, setup_method
    from umedprotect.settings import ProtectionSettings

    assert set(METHOD_NAMES) <= set(method_names())
    image, labels, spacing = _case(dataset)
    settings = BaselineSettings(lsp_patch=4)
    protection = ProtectionSettings(epsilon=2.0, seed=3, device="cpu")
    setup = setup_method("lsp", protection, dataset, method_settings=settings)
    direct = build_case_protector("lsp", dataset, 2.0, "cpu", seed=3, settings=settings)
    default = build_case_protector("lsp", dataset, 2.0, "cpu", seed=3)
    result = setup.case_protector(image, labels, spacing=spacing)
    np.testing.assert_array_equal(result.protected, direct(image, labels, spacing=spacing).protected)
    assert not np.array_equal(result.protected, default(image, labels, spacing=spacing).protected)
    assert (setup.method, setup.protector_info) == ("lsp", None)
    assert setup.parameters == {"epsilon": 2.0, "labels": None, "seed": 3}
    assert setup_method("random", ProtectionSettings(device="cpu"), dataset).parameters["epsilon"] == 4.0


def test_a_baseline_given_min_psnr_is_held_to_it_in_every_slice_as_umed_is(dataset):
    from umedprotect.methods import setup_method
    from umedprotect.metrics import slice_psnrs
    from umedprotect.settings import ProtectionSettings

    image, labels, spacing = _case(dataset)
    free = setup_method("random", ProtectionSettings(epsilon=16.0, device="cpu"), dataset)
    held = setup_method("random", ProtectionSettings(epsilon=16.0, min_psnr=50.0, device="cpu"), dataset)
    loud, quiet = (s.case_protector(image, labels, spacing=spacing) for s in (free, held))
    axis = loud.slice_axis
    assert min(slice_psnrs(image, loud.protected, axis)) < 50.0
    assert min(slice_psnrs(image, quiet.protected, axis)) >= 50.0
    assert quiet.metrics["psnr_db_slice_min"] >= 50.0 and 0 < quiet.metrics["change_scale"] < 1
    same_sign = np.sign(quiet.change) == np.sign(loud.change)
    assert same_sign[quiet.change != 0].all() and np.abs(quiet.change).max() < np.abs(loud.change).max()
    assert held.parameters == {"epsilon": 16.0, "labels": None, "seed": 0, "min_psnr": 50.0}
