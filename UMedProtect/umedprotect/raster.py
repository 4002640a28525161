"""2D grey-level PNG and TIFF (8 or 16 bit): protected in, same format and bit depth out.

SimpleITK reads both (and refuses colour through :func:`io.read_image`'s one-channel check); a mask
without pixel size, drawn on the image's pixels, takes the image's grid (:func:`io.read_label`).
PNG is written by SimpleITK (which keeps the pixel size in its pHYs chunk); TIFF by tifffile,
copying the source's resolution tags and ImageJ description, so a microscope's pixel size stays
exactly as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .io import OUTPUT_ENDINGS, RASTER_ENDINGS

PNG_ENDINGS, TIFF_ENDINGS = RASTER_ENDINGS[:1], RASTER_ENDINGS[1:]
TIFF_KEPT_TAGS = ("XResolution", "YResolution", "ResolutionUnit", "ImageDescription")


def is_tiff(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(TIFF_ENDINGS)


def is_raster(path: str | os.PathLike) -> bool:
    """A PNG or TIFF file name."""
    return str(path).lower().endswith(RASTER_ENDINGS)


def output_endings(image_path: str | os.PathLike) -> tuple[str, ...]:
    """Output endings accepted for an input: the volume formats, and its own format for a PNG or TIFF."""
    for endings in (PNG_ENDINGS, TIFF_ENDINGS):
        if str(image_path).lower().endswith(endings):
            return OUTPUT_ENDINGS + endings
    return OUTPUT_ENDINGS


def check_raster_output(output: str | os.PathLike, dimension: int) -> None:
    """InputError when a PNG or TIFF output is asked for an image that is not 2D."""
    if is_raster(output) and dimension != 2:
        raise InputError(
            f"{output}: PNG and TIFF outputs hold 2D images only; this image is {dimension}D (use .nrrd or .mha)"
        )


def write_tiff_like(
    array: np.ndarray, source: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write ``array`` as a TIFF atomically with ``source``'s resolution tags and description; read back to check."""
    import tifffile

    path = Path(path)
    with tifffile.TiffFile(source) as tiff:
        page = tiff.pages[0]
        tags = {name: page.tags[name].value for name in TIFF_KEPT_TAGS if name in page.tags}
        compressed = page.compression != tifffile.COMPRESSION.NONE
    if array.dtype != page.dtype or array.shape != page.shape:
        raise ValueError(f"array {array.dtype} {array.shape} differs from the source {page.dtype} {page.shape}")
    options = {"compression": "zlib" if compressed else None, "photometric": "minisblack", "metadata": None}
    if "XResolution" in tags and "YResolution" in tags:
        options.update(resolution=(tags["XResolution"], tags["YResolution"]), resolutionunit=tags.get("ResolutionUnit"))
    if "ImageDescription" in tags:
        options["description"] = tags["ImageDescription"]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            tifffile.imwrite(tmp, array, **options)
            with tifffile.TiffFile(tmp) as written:
                kept = {
                    name: written.pages[0].tags[name].value for name in TIFF_KEPT_TAGS if name in written.pages[0].tags
                }
                if kept != tags or not np.array_equal(written.asarray(), array):
                    raise OSError(f"{path}: the written TIFF does not read back as written")
    except FileExistsError:
        raise InputError(f"{path}: output already exists", option="overwrite") from None
    return path
