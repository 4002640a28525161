"""Import ``UMedProtect.py`` outside 3D Slicer: stand-ins for what only the Slicer application has.

``install(slicer)`` adds to a ``slicer`` package (the Qt-free ``slicer-core`` wheel, or a fake one made
by :func:`fake_slicer`) the pieces the module file imports at load time and that live in the
application only: ``ScriptedLoadableModule`` base classes, ``i18n``, ``parameterNodeWrapper``, and
empty ``qt``/``ctk`` modules. The Module, Widget and parameter-node classes are then importable but
inert; the Logic runs on real MRML nodes when ``slicer`` is slicer-core (see :func:`bootstrap_scene`).
"""

from __future__ import annotations

import sys
import types
import unittest
from unittest import mock


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        pass


class _Annotation:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def fake_slicer() -> types.ModuleType:
    """A ``slicer`` package whose unknown attributes are mocks (no MRML at all); with ``slicer.util``."""
    slicer = _module("slicer", __path__=[])
    slicer.__getattr__ = lambda name: mock.MagicMock(name=f"slicer.{name}")
    slicer.util = _module("slicer.util", VTKObservationMixin=type("VTKObservationMixin", (), {}))
    slicer.util.__getattr__ = lambda name: mock.MagicMock(name=f"slicer.util.{name}")
    sys.modules["slicer"] = slicer
    sys.modules["slicer.util"] = slicer.util
    sys.modules.setdefault("vtk", mock.MagicMock(name="vtk"))
    return slicer


def install(slicer: types.ModuleType) -> None:
    """Add the application-only modules to ``slicer`` and ``sys.modules``."""
    submodules = {
        "ScriptedLoadableModule": _module(
            "slicer.ScriptedLoadableModule",
            ScriptedLoadableModule=ScriptedLoadableModule,
            ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
            ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
            ScriptedLoadableModuleTest=ScriptedLoadableModuleTest,
        ),
        "i18n": _module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text),
        "parameterNodeWrapper": _module(
            "slicer.parameterNodeWrapper",
            parameterNodeWrapper=lambda cls: cls,
            WithinRange=_Annotation,
            Choice=_Annotation,
        ),
    }
    for name, module in submodules.items():
        setattr(slicer, name, module)
        sys.modules[f"slicer.{name}"] = module
    for name in ("qt", "ctk"):
        sys.modules.setdefault(name, mock.MagicMock(name=name))


def bootstrap_scene():
    """A fresh MRML scene with the application, colours, volumes and segmentations logic (slicer-core).

    Sets ``slicer.mrmlScene`` and a minimal ``slicer.modules`` as ``slicer.util`` expects them.
    """
    import slicer

    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(application)
    colors.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colors)
    logics = {"colors": colors}
    for name, cls in (("volumes", slicer.vtkSlicerVolumesLogic), ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
        application.SetModuleLogic(name.capitalize(), logic)
        logics[name] = logic
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(
        **{name: types.SimpleNamespace(logic=(lambda logic=logic: logic)) for name, logic in logics.items()}
    )
    slicer._umedprotect_logics = (application, logics)  # keep the logic objects alive with the scene
    return scene


def import_module_with_slicer_core():
    """``UMedProtect`` (the module file) on top of slicer-core; skips the test when slicer-core is missing."""
    import importlib

    import pytest

    pytest.importorskip("slicer_core", reason="slicer-core (pip install slicer-core==5.12.4.0) is not installed")
    import slicer
    import vtk

    vtk.vtkObject.GlobalWarningDisplayOff()
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
    install(slicer)
    return importlib.import_module("UMedProtect")
