"""Instant commands: the package, ``--help``, option errors and input errors import no heavy or research code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

HEAVY = ("torch", "scipy", "matplotlib", "umedprotect_eval.evaluation", "umedprotect_eval.training")
PLUGINS = ("umedprotect_eval.cli",)  # a command of the product's own does not look the add-ons up
CLI_RUN = """
import json, sys
from umedprotect.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported_after(code: str, *args: str) -> tuple[dict, str]:
    """Run ``code`` in a fresh interpreter; its JSON line on stdout, and its stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "UMedProtect"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", code, *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_importing_the_package_imports_neither_the_evaluation_side_nor_heavy_libraries():
    result, _ = imported_after("import json, sys, umedprotect; print(json.dumps({'modules': sorted(sys.modules)}))")
    modules = set(result["modules"])
    assert not {m for m in modules if m.split(".")[0] == "umedprotect_eval"}
    assert not modules & {"torch", "numpy", "SimpleITK", "scipy"}


@pytest.mark.parametrize(
    "argv, code, heavy",
    [
        (["--help"], 0, HEAVY + ("numpy", "SimpleITK")),
        (["protect", "--help"], 0, HEAVY + PLUGINS + ("SimpleITK",)),
        (["verify", "--help"], 0, HEAVY + PLUGINS),
        (["protect-dataset", "--help"], 0, HEAVY + PLUGINS),
        (["protect", "in.nii.gz", "mask.nii.gz"], 2, HEAVY + PLUGINS + ("SimpleITK",)),  # -o missing: option error
        (["protect", "missing.nii.gz", "mask.nii.gz", "-o", "{tmp}/out.nii.gz"], 2, HEAVY + PLUGINS),  # input error
    ],
    ids=["help", "protect-help", "verify-help", "protect-dataset-help", "option-error", "file-not-found"],
)
def test_help_and_errors_answer_without_heavy_imports(tmp_path, argv, code, heavy):
    result, stderr = imported_after(CLI_RUN, *[a.format(tmp=tmp_path) for a in argv])
    assert result["code"] == code, stderr
    assert set(heavy) & set(result["modules"]) == set()
    if argv[1:2] == ["missing.nii.gz"]:
        assert "missing.nii.gz: file not found" in stderr


def test_the_full_parser_still_lists_every_option_of_every_command():
    from umedprotect.cli import build_parser

    parser = build_parser(["protect", "--help"])
    (lazy,) = [a for a in parser._actions if a.dest == "command"]
    (full,) = [a for a in build_parser()._actions if a.dest == "command"]
    assert list(lazy.choices) == [c for c in full.choices if c != "evaluate"]  # add-ons not looked up
    assert "--epsilon" in lazy.choices["protect"].format_help()
    assert "--method" not in lazy.choices["protect-dataset"].format_help()  # listed only, not built
    assert "--method" in full.choices["protect-dataset"].format_help()
    (top,) = [a for a in build_parser(["--help"])._actions if a.dest == "command"]
    assert list(top.choices) == list(full.choices) and "--method" not in top.choices["protect-dataset"].format_help()


def test_the_slicer_module_ships_no_evaluation_code():
    lines = (ROOT / "UMedProtect" / "CMakeLists.txt").read_text(encoding="utf-8").splitlines()
    listed = [line for line in lines if not line.lstrip().startswith("#")]
    assert any("umedprotect/cli/__init__.py" in line for line in listed)
    assert not [line for line in listed if "umedprotect_eval" in line]


def test_protecting_with_silent_generators_never_imports_torch(tmp_path):
    """The bundled protector's generators are silent: its codes are applied in numpy; live ones need torch."""
    from oracles import live_protector

    from umedprotect.protector import save_protector

    sample = ROOT / "Resources" / "Sample"
    argv = [str(sample / "brain1_image.nrrd"), str(sample / "brain1_label.nrrd"), "--device", "cpu"]
    result, stderr = imported_after(CLI_RUN, "protect", *argv, "-o", str(tmp_path / "codes.nii.gz"))
    assert result["code"] == 0, stderr
    assert "torch" not in result["modules"]
    live = save_protector(live_protector(), tmp_path / "live.safetensors")
    result, stderr = imported_after(
        CLI_RUN, "protect", *argv, "-o", str(tmp_path / "live.nii.gz"), "--protector", str(live)
    )
    assert result["code"] == 0, stderr
    assert "torch" in result["modules"]
