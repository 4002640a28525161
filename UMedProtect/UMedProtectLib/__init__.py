"""The UMed Protect Slicer module's parts: parameters, MRML logic, background work and the panel.

``UMedProtect.py`` only registers the module; the product (``umedprotect``) does the computing.
"""
