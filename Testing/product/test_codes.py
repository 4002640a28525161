"""The codes applied in numpy (silent generators, no torch) equal the torch module's output, for every code kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from umedprotect.array_protection import change_maker, protect_array
from umedprotect.codes import CodePerturbation
from umedprotect.phantoms import phantom_volume
from umedprotect.protector import Protector, as_protector_file
from umedprotect.protector_file import CODE_INITS, ProtectorConfig
from umedprotect.regions import region_maps


@pytest.mark.parametrize("code_init", CODE_INITS)
def test_numpy_codes_equal_the_module_output(code_init):
    torch.manual_seed(0)
    config = ProtectorConfig(code_init=code_init, code_period=4, code_classes=4, band_radius=3)
    module = Protector(config).eval()
    image, labels = phantom_volume((3, 40, 36), n_lesions=3, rng=1)
    labels = np.where(labels > 0, 1 + np.arange(labels.size).reshape(labels.shape) // 700 % 3, 0).astype(np.int32)
    image_norm = ((image - image.min()) / np.ptp(image)).astype(np.float32)
    maps = np.stack(
        [region_maps(i, lab, 3, config.texture_floor, config.texture_window) for i, lab in zip(image_norm, labels)]
    )
    assert len(np.unique(labels)) == 4 and maps[:, 4].any()  # three labels and a band outside them
    expected = module.perturb_crops(image_norm, maps, labels, (5, 7), 8.0)
    found = change_maker(as_protector_file(module))(image_norm, maps, labels, (5, 7), 8.0)
    assert isinstance(change_maker(module), CodePerturbation)  # a silent module is applied in numpy too
    assert np.abs(expected).max() > 0.02
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-7)
    if code_init in ("fill", "dots"):  # codes of the bundled protectors: the same bits
        assert np.array_equal(found, expected)


def test_live_generators_run_the_module_and_a_silent_one_gives_the_same_protection_either_way(random_protector):
    image, labels = phantom_volume((4, 48, 48), n_lesions=2, rng=3)
    image = image.astype(np.int16)
    via_module = protect_array(image, labels, random_protector, device="cpu").protected
    via_file = protect_array(image, labels, as_protector_file(random_protector), device="cpu").protected
    assert np.array_equal(via_module, via_file) and not np.array_equal(via_module, image)
    with torch.no_grad():
        random_protector.texture.head.bias.fill_(0.5)
    assert not random_protector.generators_silent and not as_protector_file(random_protector).generators_silent
    assert change_maker(random_protector, "cpu") == random_protector.perturb_crops
    live = protect_array(image, labels, random_protector, device="cpu").protected
    assert not np.array_equal(live, via_module)
