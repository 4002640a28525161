"""The Slicer extension's files agree with each other and with the code (no Slicer needed).

The .ui loads in Qt and has every widget the panel code uses; every parameter the .ui binds exists;
CMake lists every Python file and resource; the .s4ext and CMake metadata match; the module file
imports without torch (the settings table only), installing torch through the PyTorch extension on
first use; and the acknowledgement cites the paper the README cites.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "UMedProtect"
MODULE_FILE = MODULE_DIR / "UMedProtect.py"
WIDGET_FILE = MODULE_DIR / "UMedProtectLib" / "Widget.py"
PARAMETERS_FILE = MODULE_DIR / "UMedProtectLib" / "Parameters.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "UMedProtect.ui"
S4EXT_KEYWORDS = (
    "scm",
    "scmurl",
    "scmrevision",
    "depends",
    "build_subdirectory",
    "homepage",
    "contributors",
    "category",
    "iconurl",
    "status",
    "description",
    "screenshoturls",
    "enabled",
)


def ui_names_used_by_code() -> set[str]:
    text = WIDGET_FILE.read_text(encoding="utf-8")
    return set(re.findall(r"self\.ui\.(\w+)", text)) | set(
        re.findall(r'"(\w+(?:SpinBox|Label|CheckBox|CollapsibleButton))"', text)
    )


def parameter_node_fields() -> set[str]:
    tree = ast.parse(PARAMETERS_FILE.read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "UMedProtectParameterNode")
    return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}


def cmake_list(name: str) -> list[str]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    body = re.search(rf"set\({name}\s(.*?)\)", text, re.S)
    assert body, f"{name} not set in UMedProtect/CMakeLists.txt"
    return [item.replace("${MODULE_NAME}", "UMedProtect") for item in body.group(1).split()]


def cmake_extension_variables() -> dict[str, str]:
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    return dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))


def s4ext_entries() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "UMedProtect.s4ext").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    return entries


def test_ui_file_loads_in_qt_and_has_every_widget_the_code_uses():
    code = textwrap.dedent(
        f"""
        import json, sys
        from PySide6.QtCore import QFile
        from PySide6.QtUiTools import QUiLoader
        from PySide6.QtWidgets import QApplication, QWidget
        app = QApplication([])
        widget = QUiLoader().load(QFile({str(UI_FILE)!r}))
        if widget is None:
            sys.exit("the .ui file did not load")
        print(json.dumps(sorted(w.objectName() for w in widget.findChildren(QWidget))))
        """
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(__import__("json").loads(done.stdout.strip().splitlines()[-1]))
    used = ui_names_used_by_code()
    assert {
        "previewButton",
        "exportButton",
        "segmentSelectorWidget",
        "epsilonSpinBox",
        "inputsCollapsibleButton",
    } <= used
    assert used - loaded == set(), f"widgets used in Widget.py but missing from the .ui: {sorted(used - loaded)}"


def test_every_parameter_the_ui_binds_is_a_parameter_node_field():
    root = ET.parse(UI_FILE).getroot()
    bound = {prop.findtext("string") for prop in root.iter("property") if prop.get("name") == "SlicerParameterName"}
    fields = parameter_node_fields()
    assert {"inputVolume", "epsilon", "bandRadius", "device", "heatmapOpacity"} <= bound
    assert bound - fields == set(), (
        f"SlicerParameterName values without a parameter node field: {sorted(bound - fields)}"
    )


def test_module_cmake_lists_every_python_file_and_resource():
    scripts = cmake_list("MODULE_PYTHON_SCRIPTS")
    present = {
        str(p.relative_to(MODULE_DIR))
        for p in MODULE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts and "umedprotect_eval" not in p.parts  # the evaluation side is not shipped
    }
    assert len(scripts) == len(set(scripts)), "a script is listed twice"
    assert present - set(scripts) == set(), (
        f"Python files missing from MODULE_PYTHON_SCRIPTS: {sorted(present - set(scripts))}"
    )
    assert set(scripts) - present == set(), f"listed scripts that do not exist: {sorted(set(scripts) - present)}"

    resources = cmake_list("MODULE_PYTHON_RESOURCES")
    shipped = {
        str(p.relative_to(MODULE_DIR))
        for folder in (MODULE_DIR / "Resources", MODULE_DIR / "umedprotect" / "data")
        for p in folder.rglob("*")
        if p.is_file()
    }
    assert "umedprotect/data/default_protector.safetensors" in resources
    missing = sorted(shipped - set(resources))
    assert not missing, f"resources missing from MODULE_PYTHON_RESOURCES: {missing}"
    assert set(resources) - shipped == set(), f"listed resources that do not exist: {sorted(set(resources) - shipped)}"

    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in text
    assert re.search(r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)


def test_s4ext_has_the_keywords_slicer_expects_and_matches_cmake():
    entries = s4ext_entries()
    assert set(S4EXT_KEYWORDS) <= set(entries), f"missing keywords: {sorted(set(S4EXT_KEYWORDS) - set(entries))}"
    assert all(entries[k] for k in S4EXT_KEYWORDS), "every keyword needs a value"
    assert entries["scm"] == "git"
    assert entries["depends"] == "PyTorch"
    variables = cmake_extension_variables()
    for keyword, variable in {
        "homepage": "EXTENSION_HOMEPAGE",
        "category": "EXTENSION_CATEGORY",
        "contributors": "EXTENSION_CONTRIBUTORS",
        "description": "EXTENSION_DESCRIPTION",
        "iconurl": "EXTENSION_ICONURL",
        "screenshoturls": "EXTENSION_SCREENSHOTURLS",
        "depends": "EXTENSION_DEPENDS",
    }.items():
        assert entries[keyword] == variables[variable], f"{keyword} differs from {variable}"
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "add_subdirectory(UMedProtect)" in text and "find_package(Slicer REQUIRED)" in text


def test_icon_and_screenshot_are_pngs_the_metadata_points_to():
    icon = MODULE_DIR / "Resources" / "Icons" / "UMedProtect.png"
    screenshot = ROOT / "Resources" / "Screenshots" / "heatmap_preview.png"
    for path in (icon, screenshot):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = int.from_bytes(icon.read_bytes()[16:20], "big"), int.from_bytes(icon.read_bytes()[20:24], "big")
    assert (width, height) == (128, 128)
    variables = cmake_extension_variables()
    assert variables["EXTENSION_ICONURL"].endswith("/UMedProtect/Resources/Icons/UMedProtect.png")
    assert variables["EXTENSION_SCREENSHOTURLS"].endswith("/Resources/Screenshots/heatmap_preview.png")


def test_module_imports_without_torch_and_installs_it_through_the_pytorch_extension():
    code = textwrap.dedent(
        """
        import sys, types
        sys.modules["torch"] = None  # any 'import torch' fails
        import slicer_shim
        UMedProtect = slicer_shim.import_module()
        loaded = sorted(m for m in sys.modules if m.startswith("umedprotect"))
        assert loaded == ["umedprotect", "umedprotect.errors", "umedprotect.settings"], loaded
        from UMedProtectLib.Logic import TORCH_REQUIREMENT
        calls = []
        class PyTorchUtilsLogic:
            def installTorch(self, **kwargs):
                calls.append(kwargs)
                return None  # the user declined
        sys.modules["PyTorchUtils"] = types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic)
        logic = UMedProtect.UMedProtectLogic()
        try:
            logic.ensureDependencies(askConfirmation=False)
        except RuntimeError as error:
            print("refused:", error)
        assert calls == [dict(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)], calls
        print("ok")
        """
    )
    paths = os.pathsep.join([str(ROOT / "Testing" / "slicer_module"), str(MODULE_DIR)])  # as Slicer's module path
    env = {**os.environ, "PYTHONPATH": paths}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused: PyTorch is required" in done.stdout
    assert done.stdout.strip().endswith("ok")


def test_the_module_file_only_registers_and_the_acknowledgement_cites_the_readme_paper():
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["UMedProtect", "UMedProtectTest"]
    title = re.search(
        r"Safeguarding Medical Image Segmentation[^\"]*Perturbations", (ROOT / "README.md").read_text(encoding="utf-8")
    )
    assert title, "the README no longer cites the paper"
    module_text = " ".join(MODULE_FILE.read_text(encoding="utf-8").replace('"', "").split())
    assert " ".join(title.group(0).split()) in module_text
    assert "Lin et al." in module_text and "2024" in module_text
