"""Import the Slicer module outside 3D Slicer: real MRML from ``slicer-core``, stand-ins for the application.

``slicer-core`` (Kitware's Qt-free MRML wheels, a test dependency: ``pip install slicer-core==5.12.4.0``)
gives real scenes, volumes and segmentations. :func:`install` adds what only the Slicer application
has: the ``ScriptedLoadableModule`` base classes, ``i18n``, an empty ``qt``, and a
``parameterNodeWrapper`` that, like Slicer's, reads the class's type hints and defaults and refuses
values of the wrong type or outside their ``WithinRange``/``Choice`` (it stores them in the
wrapper instead of a MRML node). :func:`bootstrap_scene` makes the scene and module logics that
``slicer.util`` expects.
"""

from __future__ import annotations

import copy
import importlib
import pathlib
import sys
import types
import typing
import unittest
from unittest import mock

import slicer_core  # noqa: F401  (fails here, not later, when slicer-core is missing)


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


class WithinRange:
    """Slicer's validator: ``minimum <= value <= maximum``."""

    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{value} is not within [{self.minimum}, {self.maximum}]")


class Choice:
    """Slicer's validator: ``value in choices``."""

    def __init__(self, choices):
        self.choices = list(choices)

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"{value!r} is not one of {self.choices}")


def _checked_type(name: str, kind, value):
    """``value`` converted as Slicer's serializers do; TypeError when it has the wrong type."""
    if kind is bool or kind is str:
        ok = isinstance(value, kind)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is pathlib.Path:
        ok = isinstance(value, (str, pathlib.PurePath))
        value = pathlib.Path(value) if ok else value
    elif typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, item) for v in value)
        value = list(value) if ok else value
    else:  # a MRML node class
        ok = value is None or isinstance(value, kind)
    if not ok:
        raise TypeError(f"{name}: {value!r} is not a {kind}")
    return value


def _empty_value(kind):
    """Slicer's default for a parameter without one."""
    if typing.get_origin(kind) is list:
        return []
    return {bool: False, int: 0, float: 0.0, str: "", pathlib.Path: pathlib.Path()}.get(kind)


def parameterNodeWrapper(cls):
    """A stand-in for Slicer's decorator: typed, range-checked properties with the class's defaults."""
    parameters = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        kind, validators = hint, ()
        if typing.get_origin(hint) is typing.Annotated:
            kind, validators = hint.__origin__, hint.__metadata__
        default = getattr(cls, name, _empty_value(kind))
        parameters[name] = (kind, validators, default)

    def make_property(name: str) -> property:
        kind, validators, _ = parameters[name]

        def write(self, value):
            value = _checked_type(name, kind, value)
            for validator in validators:
                validator.validate(value)
            self._values[name] = value

        return property(lambda self: self._values[name], write)

    def __init__(self, parameterNode=None):
        self.parameterNode = parameterNode
        self._values = {}
        for name, (_, _, default) in parameters.items():
            setattr(self, name, copy.copy(default))

    for name in parameters:
        setattr(cls, name, make_property(name))
    cls.__init__ = __init__
    cls.allParameters = parameters
    return cls


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def install() -> None:
    """Add the application-only modules to slicer-core's ``slicer`` package and ``sys.modules``."""
    import slicer
    import vtk

    vtk.vtkObject.GlobalWarningDisplayOff()
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
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
            parameterNodeWrapper=parameterNodeWrapper,
            WithinRange=WithinRange,
            Choice=Choice,
        ),
    }
    for name, module in submodules.items():
        setattr(slicer, name, module)
        sys.modules[f"slicer.{name}"] = module
    sys.modules.setdefault("qt", mock.MagicMock(name="qt"))


def bootstrap_scene():
    """A fresh MRML scene with the application, colours, volumes and segmentations logic (slicer-core).

    Sets ``slicer.mrmlScene`` and a minimal ``slicer.modules`` as ``slicer.util`` expects them, and gives every
    volume and segmentation added a subject hierarchy item, as Slicer's subject hierarchy plugins do.
    """
    import slicer
    import vtk

    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(application)
    colors.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colors)
    logics = {"colors": colors}
    for name, cls in (
        ("volumes", slicer.vtkSlicerVolumesLogic),
        ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
        application.SetModuleLogic(name.capitalize(), logic)
        logics[name] = logic
    slicer.mrmlScene = scene
    subjectHierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def addItem(caller, event, node):
        if node.IsA("vtkMRMLVolumeNode") or node.IsA("vtkMRMLSegmentationNode"):
            subjectHierarchy.CreateItem(subjectHierarchy.GetSceneItemID(), node)

    scene.AddObserver(scene.NodeAddedEvent, addItem)
    slicer.modules = types.SimpleNamespace(
        **{name: types.SimpleNamespace(logic=(lambda logic=logic: logic)) for name, logic in logics.items()}
    )
    slicer._umedprotect_logics = (application, logics)  # keep the logic objects alive with the scene
    return scene


def import_module():
    """The module file ``UMedProtect`` (and so ``UMedProtectLib``) on top of slicer-core."""
    install()
    return importlib.import_module("UMedProtect")


class FakeDicomServices:
    """Slicer's DICOM module as ``UMedProtectLib.DicomExport.DicomServices``: a database of instance files, and
    an exporter and an indexer that record what they were given (the exporter writes nothing)."""

    def __init__(self, instanceFiles: dict[str, str] | None = None) -> None:
        self.instanceFiles = dict(instanceFiles or {})
        self.exported: list[tuple] = []  # (volume node, tags, folder)
        self.imported: list[tuple] = []  # (folder, copyFiles, the .dcm files under the folder then)

    def fileForInstance(self, instanceUID: str) -> str:
        return self.instanceFiles.get(instanceUID, "")

    def exportVolume(self, volumeNode, tags: dict[str, str], folder: pathlib.Path) -> None:
        self.exported.append((volumeNode, dict(tags), folder))

    def importFolder(self, folder: pathlib.Path, copyFiles: bool) -> None:
        files = sorted(path.name for path in pathlib.Path(folder).rglob("*.dcm"))
        self.imported.append((pathlib.Path(folder), copyFiles, files))
