"""UMedProtect backend: contour- and texture-aware protection of segmentation datasets.

Pure Python (numpy, torch, SimpleITK); never imports slicer, qt or vtk.
"""

__version__ = "0.1.0"
