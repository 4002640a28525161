"""The panel's bindings: the parameter node (types and ranges enforced as Slicer does, limits from the
product's settings table), the settings it produces, which controls it enables, and the .ui widgets."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import slicer_shim

slicer_shim.import_module()
import slicer  # noqa: E402  (slicer-core, after the shim)

from umedprotect.errors import InputError  # noqa: E402
from umedprotect.protector_file import read_protector_file  # noqa: E402
from umedprotect.settings import DEVICE_CHOICES, OPTIONS, ProtectionSettings  # noqa: E402
from UMedProtectLib.Logic import SOURCE_ATTRIBUTE  # noqa: E402
from UMedProtectLib.Parameters import LIMITS, UMedProtectParameterNode, protectionSettings  # noqa: E402
from UMedProtectLib.Widget import SETTING_WIDGETS, controlStates, errorText  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
UI_FILE = ROOT / "UMedProtect" / "Resources" / "UI" / "UMedProtect.ui"
WIDGET_TYPES = {  # the Qt class a parameter's type needs in the .ui (Slicer's GUI connectors)
    float: {"QDoubleSpinBox", "ctkSliderWidget"},
    int: {"QSpinBox"},
    bool: {"QCheckBox", "QPushButton"},
    str: {"QComboBox"},
    pathlib.Path: {"ctkPathLineEdit"},
}


@pytest.fixture
def scene():
    return slicer_shim.bootstrap_scene()


def test_epsilon_takes_the_products_whole_range_in_free_entry():
    p = UMedProtectParameterNode()
    assert (p.epsilon, p.device, p.limitVisibility) == (8.0, OPTIONS["device"].default, False)
    option = OPTIONS["epsilon"]
    for value in (LIMITS["epsilon"].minimum, 6.3, option.high):
        p.epsilon = value
        assert protectionSettings(p).epsilon == value  # the product accepts every value the panel does
    for value in (option.low, option.high + 0.1):
        with pytest.raises(ValueError):
            p.epsilon = value
    assert LIMITS["epsilon"].step <= 0.1 and LIMITS["epsilon"].decimals >= 1
    with pytest.raises(TypeError):
        p.epsilon = "6.3"


def test_the_untouched_budget_of_the_bundled_protector_is_the_products_default():
    p = UMedProtectParameterNode()
    config = read_protector_file().config
    assert p.useDefaultProtector and (p.epsilon, p.bandRadius) == (config.epsilon, config.band_radius)
    settings = protectionSettings(p)  # the protector's budget, raised to the strength where needed
    assert settings.epsilon is None and settings.band_radius is None
    p.useDefaultProtector, p.protectorPath = False, "fitted.safetensors"
    settings = protectionSettings(p)  # another protector: the panel's values, as shown
    assert (settings.epsilon, settings.band_radius) == (p.epsilon, p.bandRadius)


@pytest.mark.parametrize(("parameter", "setting"), [("bandRadius", "band_radius"), ("minPsnr", "min_psnr")])
def test_other_limits_are_the_settings_tables(parameter, setting):
    option, p = OPTIONS[setting], UMedProtectParameterNode()
    assert (LIMITS[parameter].minimum, LIMITS[parameter].maximum) == (option.low, option.high)
    setattr(p, parameter, option.high)
    with pytest.raises(ValueError):
        setattr(p, parameter, option.high + 1)
    with pytest.raises(ValueError):
        setattr(p, parameter, option.low - 1)


def test_device_choices_are_the_products():
    p = UMedProtectParameterNode()
    for device in DEVICE_CHOICES:
        p.device = device
    with pytest.raises(ValueError):
        p.device = "tpu"


def test_the_codes_choose_a_bundled_protector_and_only_that():
    p = UMedProtectParameterNode()
    assert p.codes == "fill" and protectionSettings(p).codes is None  # the bundled default
    p.codes = "rings"
    assert protectionSettings(p).codes == "rings" and controlStates(p).codesEnabled
    p.codes = "fill+rings"
    assert protectionSettings(p).codes == "fill+rings"
    with pytest.raises(ValueError):
        p.codes = "dots"
    p.useDefaultProtector, p.protectorPath = False, "fitted.safetensors"
    assert protectionSettings(p).codes is None and not controlStates(p).codesEnabled


def test_protection_settings_follow_the_panel():
    p = UMedProtectParameterNode()
    p.epsilon, p.bandRadius, p.minPsnr, p.device = 6.3, 3, 45.0, "cpu"
    assert protectionSettings(p) == ProtectionSettings(epsilon=6.3, band_radius=3, device="cpu")
    p.limitVisibility = True
    assert protectionSettings(p).min_psnr == 45.0
    p.useDefaultProtector = False
    with pytest.raises(InputError) as raised:
        protectionSettings(p)
    assert errorText(raised.value).startswith("Protector: choose a protector file")
    p.protectorPath = pathlib.Path("/data/fitted.safetensors")
    assert protectionSettings(p).protector == "/data/fitted.safetensors"


def test_errors_name_the_setting_as_the_panel_does():
    assert (
        errorText(InputError("70 is out of range", option="epsilon"))
        == f"{OPTIONS['epsilon'].label}: 70 is out of range"
    )
    assert errorText(InputError("no segments selected")) == "no segments selected"


def test_show_protected_is_offered_only_for_a_result_of_the_current_input(scene):
    p = UMedProtectParameterNode()
    assert controlStates(p).canProtect is False and controlStates(None).canShowProtected is False
    first = slicer.util.addVolumeFromArray(np.zeros((2, 4, 4), np.int16), name="first")
    second = slicer.util.addVolumeFromArray(np.zeros((2, 4, 4), np.int16), name="second")
    result = slicer.util.addVolumeFromArray(np.ones((2, 4, 4), np.int16), name="first protected")
    result.SetAttribute(SOURCE_ATTRIBUTE, first.GetID())
    p.inputVolume, p.protectedVolume = first, result
    p.segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    states = controlStates(p)
    assert states.canProtect and states.canShowProtected
    p.inputVolume = second
    assert not controlStates(p).canShowProtected
    p.allSegments, p.segmentIds = False, []
    assert not controlStates(p).canProtect
    p.segmentIds = ["Segment_1"]
    assert controlStates(p).canProtect
    with pytest.raises(TypeError):
        p.inputVolume = p.segmentation


def test_each_bound_widget_suits_its_parameter_and_carries_its_limits():
    root = ET.parse(UI_FILE).getroot()
    parameters = UMedProtectParameterNode.allParameters
    widgets = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                widgets[prop.findtext("string")] = widget
    for name, widget in widgets.items():
        kind, validators, _ = parameters[name]
        expected = WIDGET_TYPES.get(kind)
        if expected is not None:
            assert widget.get("class") in expected, f"{name}: {widget.get('class')} cannot hold a {kind}"
            if kind is str:
                assert validators, f"{name}: a combo box needs a Choice"
        else:
            assert widget.get("class") == "qMRMLNodeComboBox", name
        if name in LIMITS:
            values = {
                p.get("name"): float(p[0].text)
                for p in widget.findall("property")
                if p.get("name") in ("minimum", "maximum")
            }
            assert values == {"minimum": LIMITS[name].minimum, "maximum": LIMITS[name].maximum}, name
    assert set(SETTING_WIDGETS) == set(LIMITS)


def test_the_ui_loads_in_qt_and_takes_the_settings_tables_limits():
    """The real .ui in PySide6 (offscreen): the panel's applySettingsTable sets names, ranges, decimals, steps."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from PySide6.QtCore import QFile
        from PySide6.QtUiTools import QUiLoader
        from PySide6.QtWidgets import QApplication, QWidget
        import slicer_shim
        slicer_shim.import_module()
        from UMedProtectLib.Widget import SETTING_WIDGETS, applySettingsTable
        app = QApplication([])
        widget = QUiLoader().load(QFile({str(UI_FILE)!r}))
        ui = type("Ui", (), {{w.objectName(): w for w in widget.findChildren(QWidget)}})
        applySettingsTable(ui)
        found = {{}}
        for name, (setting, box, label) in SETTING_WIDGETS.items():
            box = getattr(ui, box)
            found[name] = [box.minimum(), box.maximum(), box.singleStep(), getattr(box, "decimals", lambda: 0)(),
                           getattr(ui, label).text()]
            box.setValue(6.3)
            found[name].append(box.value())
        print(json.dumps(found))
        """
    )
    paths = os.pathsep.join([str(ROOT / "Testing" / "slicer_module"), str(ROOT / "UMedProtect")])
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": paths}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (setting, _box, _label) in SETTING_WIDGETS.items():
        limits = LIMITS[name]
        assert found[name][:5] == [
            limits.minimum,
            limits.maximum,
            limits.step,
            limits.decimals,
            f"{OPTIONS[setting].label}:",
        ]
    assert found["epsilon"][5] == 6.3  # free entry keeps the docs' recommended value
