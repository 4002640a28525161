"""The bundled rings (``--codes rings``): contour-following codes, chosen by name, recorded, refused beside a file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_image

from umedprotect.array_protection import protect_array
from umedprotect.cli import main
from umedprotect.errors import InputError
from umedprotect.methods import bundled_protector_path, setup_method
from umedprotect.protector_file import RINGS_PROTECTOR_PATH, read_protector_file
from umedprotect.regions import edge_depth
from umedprotect.settings import ProtectionSettings


def _square(size=64, side=40):
    image = np.random.default_rng(0).normal(300.0, 30.0, (size, size)).astype(np.float32)
    image[0, :2] = 0.0, 1000.0  # a value range the change never reaches, so nothing is clipped
    labels = np.zeros((size, size), np.uint8)
    start = (size - side) // 2
    labels[start : start + side, start : start + side] = 1
    return image, labels


def test_the_rings_follow_the_contour_where_the_fill_tiles_do_not():
    image, labels = _square()
    depth = np.rint(edge_depth(labels)).astype(int)
    rings = read_protector_file(RINGS_PROTECTOR_PATH)
    assert rings.config.code_init == "rings" and rings.generators_silent
    for protector, follows in ((rings, True), (None, False)):
        change = protect_array(image, labels, protector, min_psnr=20, strength=0, device="cpu").change
        assert not change[labels == 0].any()
        spread = max(np.ptp(change[(labels > 0) & (depth == d)]) for d in range(1, 12))
        assert (spread < 1e-3 * np.abs(change).max()) == follows  # one value per depth below the edge
        if follows:  # and it alternates in sign as the depth grows
            by_depth = [change[(labels > 0) & (depth == d)][0] for d in range(1, 13)]
            assert 2 <= np.count_nonzero(np.diff(np.sign(by_depth))) <= 6


def test_the_codes_choose_the_bundled_protector_and_are_recorded():
    assert bundled_protector_path(ProtectionSettings(codes="rings")) == RINGS_PROTECTOR_PATH
    assert bundled_protector_path(ProtectionSettings(codes="rings", victim_spacing=(1.0, 1.0))) == RINGS_PROTECTOR_PATH
    setup = setup_method("umed", ProtectionSettings(codes="rings", device="cpu"))
    assert setup.protector_info["path"] == "bundled rings" and setup.parameters["codes"] == "rings"
    assert "codes" not in setup_method("umed", ProtectionSettings(device="cpu")).parameters


def test_the_codes_are_refused_beside_a_protector_file_and_for_a_baseline():
    with pytest.raises(InputError) as error:
        ProtectionSettings(codes="rings", protector="fitted.safetensors")
    assert error.value.option == "codes"
    with pytest.raises(InputError) as error:
        ProtectionSettings(codes="dots")
    assert error.value.option == "codes"
    with pytest.raises(InputError, match="umed method only") as error:
        setup_method("random", ProtectionSettings(codes="rings", device="cpu"))
    assert error.value.option == "codes"


def test_protect_with_the_rings_reports_them(tmp_path, capsys):
    image, labels = _square()
    image_path, mask_path = write_image(image, tmp_path / "ct.nrrd"), write_image(labels, tmp_path / "mask.nrrd")
    out, report = tmp_path / "out.nrrd", tmp_path / "r.json"
    assert (
        main(["protect", str(image_path), str(mask_path), "-o", str(out), "--codes", "rings", "--report", str(report)])
        == 0
    )
    data = json.loads(report.read_text())
    assert data["protector"]["path"] == "bundled rings" and data["protector"]["summary"]["code_init"] == "rings"
    assert data["parameters"]["codes"] == "rings"
    argv = ["protect", str(image_path), str(mask_path), "-o", str(tmp_path / "x.nrrd"), "--codes", "rings"]
    assert main([*argv, "--protector", str(RINGS_PROTECTOR_PATH)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("--codes chooses a bundled protector: leave it out with a protector file")
    )
    assert not (tmp_path / "x.nrrd").exists()


def test_fill_and_rings_add_up_each_held_to_its_share_of_the_floor():
    image, labels = _square()
    setup = setup_method("umed", ProtectionSettings(codes="fill+rings", min_psnr=40, device="cpu"))
    shares = setup.parameters["fill_min_psnr"], setup.parameters["rings_min_psnr"]
    assert shares[0] == 52 and sum(10 ** (-s / 10) for s in shares) == pytest.approx(1e-4, rel=1e-3)
    assert setup.protector_info["path"] == "bundled fill+rings"
    assert [part["path"] for part in setup.protector_info["parts"]] == ["bundled default", "bundled rings"]
    result = setup.case_protector(image, labels)
    fill = setup_method("umed", ProtectionSettings(min_psnr=shares[0], device="cpu")).case_protector(image, labels)
    rings = setup_method("umed", ProtectionSettings(codes="rings", min_psnr=shares[1], device="cpu"))
    both = fill.change + rings.case_protector(image, labels).change
    assert fill.change.any() and (both != fill.change).any()
    np.testing.assert_allclose(result.change, result.metrics["change_scale"] * both, atol=1e-3)
    assert result.metrics["psnr_db"] >= 40 and not result.change[labels == 0].any()


def test_fill_and_rings_need_a_floor_that_leaves_the_rings_energy():
    ProtectionSettings(codes="fill+rings", min_psnr=51.9)
    with pytest.raises(InputError, match="below 52 dB") as error:
        ProtectionSettings(codes="fill+rings", min_psnr=52)
    assert error.value.option == "min_psnr"
