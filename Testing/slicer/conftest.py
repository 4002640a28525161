"""Import slicer-core's ``slicer`` package before any test here does.

``slicer`` is a namespace-like package: on import it adopts every ``slicer`` folder found on
``sys.path`` and imports all of its modules. ``Testing/`` is on ``sys.path`` (pytest puts it there
for its conftest), so without this the tests of this folder would be imported as ``slicer``
modules too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import slicer_core  # noqa: F401  (fails here, not later, when slicer-core is missing)

HERE = Path(__file__).resolve().parent
_saved = sys.path[:]
sys.path[:] = [entry for entry in sys.path if (Path(entry or ".") / "slicer").resolve() != HERE]
try:
    import slicer  # noqa: F401
finally:
    sys.path[:] = _saved
