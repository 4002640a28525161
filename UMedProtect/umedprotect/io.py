"""Reading and writing images and masks (SimpleITK, DICOM series, Slicer ``.seg.nrrd``).

Every problem with a user's file is an :class:`InputError` whose one-line message names the file.
Inputs are only read; outputs are written through :func:`atomic.atomic_path` and checked against
the reference geometry and pixel type before they are renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import dicom_masks, dicom_series
from .atomic import atomic_path
from .errors import InputError
from .metrics import SLAB_VOXELS

OUTPUT_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")  # single-file formats keeping geometry and pixel type
SEGMENTATION_ENDING = ".seg.nrrd"
RASTER_ENDINGS = (".png", ".tif", ".tiff")  # 2D formats that often carry no pixel size
SUPPORTED_PIXEL_TYPES = {
    sitk.sitkUInt8,
    sitk.sitkInt8,
    sitk.sitkUInt16,
    sitk.sitkInt16,
    sitk.sitkUInt32,
    sitk.sitkInt32,
    sitk.sitkUInt64,
    sitk.sitkInt64,
    sitk.sitkFloat32,
    sitk.sitkFloat64,
}
SPACING_RTOL = 1e-4  # relative spacing difference still counted as the same grid
DIRECTION_ATOL = 1e-4
ORIGIN_TOL = 1e-3  # in units of the smallest voxel spacing
BYTES_PER_VOXEL_OVERHEAD = 4  # mask (up to 2 bytes), region map, comparisons
SLAB_WORKING_SET = 12 * 8 * SLAB_VOXELS  # float64 arrays of the metrics over one slab
MEMORY_ENV = "UMEDPROTECT_MEMORY_LIMIT_MB"  # overrides the available-memory reading (for tests)
NIFTI_TYPES = {  # NIfTI datatype code -> numpy type
    2: "u1",
    4: "i2",
    8: "i4",
    16: "f4",
    64: "f8",
    256: "i1",
    512: "u2",
    768: "u4",
    1024: "i8",
    1280: "u8",
}
ITK_READER_KEYS = "ITK_original_"  # metadata of ITK's header reader that a read image does not carry
FRAME_OF_REFERENCE_TAG = "0020|0052"  # DICOM FrameOfReferenceUID, kept on images read from DICOM
GZIP_LEVEL = 2  # ISA-L's default level (of 0-3): within 2 % of zlib's level 6 in size on CT, five times faster

_digests: dict[tuple[int, int, int, int], str] = {}  # SHA-256 of files read or written whole, by device, inode,
# size and modification time: hashed while their bytes were in memory, not read again for reports and manifests


def read_image(path: str | os.PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read a 2D image or 3D volume (any SimpleITK format, or a DICOM series folder) and validate it.

    Refuses 4D, vector/RGB, complex and other unusual images, images too large for the available
    memory (estimated from the header before reading), NaN/Inf voxels and constant images.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        files = dicom_series_files(path, series_uid)
        opened = dicom_series.decoded_files(files)
    else:
        if series_uid is not None:
            raise InputError(f"applies to DICOM folders only ({path} is a file)", option="series_uid")
        opened = contextlib.nullcontext([str(path)])
    with opened as files:
        header = _check_header(path, files)
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            try:
                image = reader.Execute()
            except RuntimeError:
                raise InputError(f"{path}: cannot read the image data (file truncated or corrupt)") from None
            _keep_frame_of_reference(image, files[0])
        else:
            image = _read_file(Path(files[0]), header, path, "image")
    _check_structure(path, image)
    _check_values(path, image)
    return image


def read_header(path: str | os.PathLike) -> sitk.ImageFileReader:
    """Validated header of an image file (format, dimension, components, pixel type, memory).

    A NIfTI file's data are checked too (complete, finite), since SimpleITK would read them silently.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    header = _check_header(path, [str(path)])
    if _is_nifti(path):
        _read_nifti_data(path)
    return header


def read_label(
    path: str | os.PathLike,
    reference: sitk.Image | sitk.ImageFileReader,
    resample: bool = False,
    hint: str | None = None,
    segments: list[str] | None = None,
) -> sitk.Image:
    """Read a label map (or a Slicer ``.seg.nrrd``, DICOM SEG or RTSTRUCT) on the grid of ``reference`` (or a header).

    Size or geometry differences beyond a small tolerance are an InputError unless ``resample``,
    which resamples the mask onto the image grid with nearest neighbour. ``.seg.nrrd`` segments
    become labels 1, 2, ... in file order and are always resampled onto the image grid; so are the
    segments of a DICOM SEG and the ROIs of an RTSTRUCT (labels: their segment or ROI numbers;
    ``segments`` selects some by name or number, see :mod:`dicom_masks`).
    Within tolerance, the reference's geometry is copied onto the mask. A mismatch error names the
    ``resample_mask`` option, or, where resampling is not offered, ends with ``hint``.
    """
    path = Path(path)
    option = "resample_mask" if hint is None else None
    hint = hint or ""
    frame = frame_of_reference(reference)
    if isinstance(reference, sitk.ImageFileReader):
        reference = _grid_of(reference)
    kind = dicom_masks.mask_kind(path)
    if kind:
        return _resample_like(dicom_masks.read_mask(path, kind, reference, frame, segments), reference, path)
    if segments is not None:
        raise InputError(f"applies to DICOM SEG and RTSTRUCT masks only, not to {path}", option="segments")
    if path.name.lower().endswith(SEGMENTATION_ENDING):
        return _resample_like(_read_segmentation(path), reference, path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; a mask must be a single label-map file")
    label = _read_file(path, _check_header(path, [str(path)]), path, "mask")
    _check_structure(path, label)
    values = sitk.GetArrayViewFromImage(label)
    if np.issubdtype(values.dtype, np.floating) and not (np.isfinite(values).all() and np.all(np.mod(values, 1) == 0)):
        raise InputError(f"{path}: mask has non-integer values; a label map is expected")
    if values.size and values.min() < 0:
        raise InputError(f"{path}: mask has negative values; a label map is expected")
    if label.GetSize() != reference.GetSize():
        if not resample:
            raise InputError(
                f"{path}: mask size {label.GetSize()} does not match image size {reference.GetSize()}{hint}",
                option=option,
            )
        return _resample_like(label, reference, path)
    problem = geometry_difference(label, reference)
    if problem and _is_unplaced_raster(path, label):
        problem = None  # a PNG/TIFF mask without pixel size, drawn on the image's pixels: it takes the image's grid
    if problem:
        if not resample:
            raise InputError(f"{path}: mask {problem}{hint}", option=option)
        return _resample_like(label, reference, path)
    label.CopyInformation(reference)
    return label


def _fmt(values) -> str:
    """Coordinates as a short readable tuple, e.g. (0.781, 0.781, 6.5)."""
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def geometry_difference(
    image: sitk.Image | sitk.ImageFileReader, reference: sitk.Image | sitk.ImageFileReader
) -> str | None:
    """Describe how ``image``'s grid differs from ``reference`` beyond the tolerance, or None."""
    if image.GetSize() != reference.GetSize():
        return f"size {image.GetSize()} differs from {reference.GetSize()}"
    spacing, ref_spacing = np.array(image.GetSpacing()), np.array(reference.GetSpacing())
    if not np.allclose(spacing, ref_spacing, rtol=SPACING_RTOL, atol=0):
        return f"spacing {_fmt(spacing)} differs from the image spacing {_fmt(ref_spacing)}"
    origin, ref_origin = np.array(image.GetOrigin()), np.array(reference.GetOrigin())
    if np.max(np.abs(origin - ref_origin)) > ORIGIN_TOL * ref_spacing.min():
        return f"origin {_fmt(origin)} differs from the image origin {_fmt(ref_origin)}"
    if np.max(np.abs(np.array(image.GetDirection()) - np.array(reference.GetDirection()))) > DIRECTION_ATOL:
        return "direction differs from the image direction"
    return None


def to_array(image: sitk.Image, copy: bool = True) -> tuple[np.ndarray, tuple[float, ...]]:
    """Voxels as a numpy array in (z, y, x) order and the spacing per numpy axis.

    ``copy=False``: a read-only view of the image's own buffer (no second copy of a large volume);
    keep ``image`` alive while the view is used.
    """
    voxels = sitk.GetArrayFromImage(image) if copy else sitk.GetArrayViewFromImage(image)
    return voxels, tuple(reversed(image.GetSpacing()))


def check_output_path(
    path: str | os.PathLike, overwrite: bool = False, endings: tuple[str, ...] = OUTPUT_ENDINGS
) -> Path:
    """Validate an output file name before any work: known format, writable folder, no clobbering."""
    path = Path(path)
    if not path.name.lower().endswith(endings):
        raise InputError(f"{path}: unsupported output format; use one of {', '.join(endings)}")
    if path.is_dir():
        raise InputError(f"{path}: output is an existing folder")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: output already exists", option="overwrite")
    check_writable_dir(path.parent)
    return path


def is_dicom_output(output: str | os.PathLike, output_format: str = "auto") -> bool:
    """Whether ``output`` is a DICOM series folder: format ``dicom``, or an existing folder, or a name ending with /."""
    return output_format == "dicom" or str(output).endswith(("/", os.sep)) or Path(output).is_dir()


def check_writable_dir(folder: str | os.PathLike) -> Path:
    """InputError unless ``folder`` exists (or can be created under a writable parent) and is writable: a file is
    made there and removed (permission bits alone pass root, and folders like /proc take no files)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(existing)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise InputError(f"{folder}: output folder is not writable") from None
    return folder


def write_like(
    array: np.ndarray,
    reference: sitk.Image,
    path: str | os.PathLike,
    overwrite: bool = False,
    endings: tuple[str, ...] = OUTPUT_ENDINGS,
) -> Path:
    """Write ``array`` atomically with exactly the size, spacing, origin, direction and pixel type of ``reference``.

    The written file is read back (header only) and compared with ``reference`` before it is
    renamed into place, so a file under the final name always has the right geometry.
    """
    path = check_output_path(path, overwrite, endings)
    expected = tuple(reversed(reference.GetSize()))
    if array.shape != expected:
        raise ValueError(f"array shape {array.shape} does not match the reference {expected}")
    reference_dtype = sitk.GetArrayViewFromImage(reference).dtype
    if array.dtype != reference_dtype:
        raise ValueError(f"array dtype {array.dtype} differs from the reference pixel type {reference_dtype}")
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            try:
                _write_image_file(image, tmp)
            except RuntimeError:
                raise InputError(f"{path}: this image cannot be written in this format; use .nrrd or .mha") from None
            written = _read_information(tmp)
            problem = geometry_difference(written, reference)
            if problem or written.GetPixelID() != reference.GetPixelID():
                raise InputError(
                    f"{path}: the output format cannot store this image exactly ({problem or 'pixel type changed'}); "
                    "use .nrrd or .mha"
                )
    except FileExistsError:
        raise InputError(f"{path}: output already exists", option="overwrite") from None
    except PermissionError:
        raise InputError(f"{path.parent}: output folder is not writable") from None
    return path


def _write_image_file(image: sitk.Image, path: Path) -> None:
    """SimpleITK writes the file (compressed); a .nii.gz is written uncompressed beside it, then gzipped."""
    if not path.name.lower().endswith(".nii.gz"):
        sitk.WriteImage(image, str(path), useCompression=True)
        return
    plain = path.with_name(path.name[: -len(".gz")])
    try:
        sitk.WriteImage(image, str(plain), useCompression=False)
        write_gzip(plain, path)
    finally:
        plain.unlink(missing_ok=True)


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (remembered from when this process read or wrote the whole file)."""
    with open(path, "rb") as handle:
        key = _file_key(os.fstat(handle.fileno()))
        if key in _digests:
            return _digests[key]
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_key(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _read_whole(path: Path) -> bytes:
    """A file's bytes, its SHA-256 remembered for :func:`sha256`."""
    with open(path, "rb") as handle:
        raw = handle.read()
        _digests[_file_key(os.fstat(handle.fileno()))] = hashlib.sha256(raw).hexdigest()
    return raw


def write_gzip(source: Path, destination: Path, chunk: int = 1 << 24) -> None:
    """Gzip ``source`` into ``destination`` with ISA-L (several times faster than zlib, about as small), ``chunk``
    bytes at a time, without a name or time in the header: the same content gives the same bytes. Its SHA-256 is
    remembered."""
    from isal import isal_zlib

    compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)  # gzip wrapper
    digest = hashlib.sha256()
    with open(source, "rb") as plain, open(destination, "wb") as handle:
        for block in iter(lambda: plain.read(chunk), b""):
            out = compressor.compress(block)
            handle.write(out)
            digest.update(out)
        out = compressor.flush()
        handle.write(out)
        digest.update(out)
        handle.flush()
        _digests[_file_key(os.fstat(handle.fileno()))] = digest.hexdigest()


def image_info(image: sitk.Image | sitk.ImageFileReader) -> dict:
    """Geometry and pixel type of an image or a header, for reports and manifests."""
    return {
        "size": list(image.GetSize()),
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
        "pixel_type": sitk.GetPixelIDValueAsString(image.GetPixelID()),
    }


def memory_needed(n_voxels: int, bytes_per_voxel: int) -> int:
    """Estimated peak memory (bytes) to read and protect an image of this size and pixel size.

    The image, its voxels, the protected copy and the copy written, the mask and the region map;
    protection and metrics work slab by slab beyond that (:data:`metrics.SLAB_VOXELS`).
    """
    return n_voxels * (4 * bytes_per_voxel + BYTES_PER_VOXEL_OVERHEAD) + SLAB_WORKING_SET


def available_memory() -> int:
    """Bytes of memory available now (``UMEDPROTECT_MEMORY_LIMIT_MB`` overrides)."""
    if os.environ.get(MEMORY_ENV):
        return int(float(os.environ[MEMORY_ENV]) * 2**20)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def copy_file(source: str | os.PathLike, destination: str | os.PathLike, overwrite: bool = False) -> str:
    """Copy bytes atomically; return the SHA-256, checked equal on both sides."""
    source, destination = Path(source), Path(destination)
    expected = sha256(source)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(destination, overwrite=overwrite) as tmp:
            shutil.copyfile(source, tmp)
            if sha256(tmp) != expected:
                raise OSError(f"{destination}: copy does not match {source} (hash differs)")
    except FileExistsError:
        raise InputError(f"{destination}: output already exists", option="overwrite") from None
    return expected


def input_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder's files (``name  hash`` lines, sorted) for a DICOM folder."""
    path = Path(path)
    if path.is_dir():
        lines = "".join(f"{p.relative_to(path)}  {sha256(p)}\n" for p in sorted(path.rglob("*")) if p.is_file())
        return hashlib.sha256(lines.encode()).hexdigest()
    return sha256(path)


def write_json(data: dict, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``data`` as indented JSON atomically (non-finite floats become strings like "inf")."""
    path = Path(path)
    text = json.dumps(_json_safe(data), indent=2, sort_keys=False, allow_nan=False) + "\n"
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except FileExistsError:
        raise InputError(f"{path}: output already exists", option="overwrite") from None
    return path


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from a file; InputError naming the file when it is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a JSON object is expected")
    return data


def json_roundtrip(data: dict) -> dict:
    """``data`` as it reads back from :func:`write_json` (tuples become lists, inf becomes "inf")."""
    return json.loads(json.dumps(_json_safe(data), allow_nan=False))


def software_versions() -> dict[str, str]:
    """Versions of the package and of the libraries that determine the output bytes (torch's without importing it)."""
    from importlib.metadata import version

    from . import __version__

    return {
        "umedprotect": __version__,
        "python": platform.python_version(),
        "torch": version("torch"),
        "SimpleITK": sitk.Version.VersionString(),
        "numpy": np.__version__,
    }


def dicom_series_files(folder: Path, series_uid: str | None) -> list[str]:
    """The files of a DICOM series in a folder, in SimpleITK's slice order (the only series, or ``series_uid``)."""
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise InputError(f"{folder}: folder holds no DICOM series (a mask or image must be a file or a DICOM folder)")
    if series_uid is None:
        if len(uids) > 1:
            raise InputError(
                f"must name one of the {len(uids)} DICOM series ({', '.join(uids)}) in {folder}", option="series_uid"
            )
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InputError(f"{folder}: no DICOM series {series_uid!r} here (found {', '.join(uids)})")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))


def _is_unplaced_raster(path: Path, image: sitk.Image) -> bool:
    """A 2D PNG/TIFF with no pixel size or position: unit spacing, zero origin, identity direction."""
    return (
        path.name.lower().endswith(RASTER_ENDINGS)
        and image.GetDimension() == 2
        and image.GetSpacing() == (1.0, 1.0)
        and image.GetOrigin() == (0.0, 0.0)
        and image.GetDirection() == (1.0, 0.0, 0.0, 1.0)
    )


def frame_of_reference(image: sitk.Image | sitk.ImageFileReader) -> str | None:
    """The DICOM FrameOfReferenceUID of an image read from DICOM, or None."""
    if image.HasMetaDataKey(FRAME_OF_REFERENCE_TAG):
        return image.GetMetaData(FRAME_OF_REFERENCE_TAG).strip().rstrip("\0") or None
    return None


def _keep_frame_of_reference(image: sitk.Image, first_file: str) -> None:
    """Copy the series' FrameOfReferenceUID onto the image (SimpleITK's series reader drops the tags)."""
    uid = frame_of_reference(_read_information(first_file))
    if uid:
        image.SetMetaData(FRAME_OF_REFERENCE_TAG, uid)


def _read_information(path: str | os.PathLike) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _grid_of(header: sitk.ImageFileReader) -> sitk.Image:
    """An empty uint8 image on the grid a header describes."""
    grid = sitk.Image(header.GetSize(), sitk.sitkUInt8)
    grid.SetSpacing(header.GetSpacing())
    grid.SetOrigin(header.GetOrigin())
    grid.SetDirection(header.GetDirection())
    return grid


def _check_header(path: Path, files: list[str]) -> sitk.ImageFileReader:
    """Validate what the header says (format, dimension, components, pixel type, memory) before reading voxels."""
    try:
        info = _read_information(files[0])
    except RuntimeError:
        raise InputError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    _check_structure(path, info)
    size = info.GetSize()
    n_voxels = int(np.prod(size, dtype=np.int64)) * len(files)
    bytes_per_voxel = np.dtype(_numpy_dtype(info.GetPixelID())).itemsize
    needed, available = memory_needed(n_voxels, bytes_per_voxel), available_memory()
    if needed > available:
        raise InputError(
            f"{path}: image of {size} voxels needs about {needed / 2**30:.1f} GiB of memory, "
            f"only {available / 2**30:.1f} GiB available"
        )
    return info


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _read_file(path: Path, header: sitk.ImageFileReader, shown: Path, what: str) -> sitk.Image:
    """The voxels of one image file (``shown`` names it in errors; ``what`` is "image" or "mask").

    A NIfTI file is decompressed and checked once (:func:`_read_nifti_data`) and its stored values become
    the image, on the header's grid and with its metadata, as SimpleITK would read them; a NIfTI with
    scaled values (scl_slope, scl_inter) or other formats are read by SimpleITK.
    """
    values = _read_nifti_data(path) if _is_nifti(path) else None
    shape = tuple(reversed(header.GetSize()))
    native = _numpy_dtype(header.GetPixelID())
    if (
        values is not None
        and values.dtype.newbyteorder("=") == native
        and values.size == np.prod(shape, dtype=np.int64)
    ):
        image = sitk.GetImageFromArray(values.reshape(shape).astype(native, copy=False))
        image.SetSpacing(header.GetSpacing())
        image.SetOrigin(header.GetOrigin())
        image.SetDirection(header.GetDirection())
        for key in header.GetMetaDataKeys():
            if not key.startswith(ITK_READER_KEYS):  # not text, and not set on images SimpleITK reads
                image.SetMetaData(key, header.GetMetaData(key))
        return image
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"{shown}: cannot read the {what} data (file truncated or corrupt)") from None


def _read_nifti_data(path: Path) -> np.ndarray | None:
    """A NIfTI file's voxels in file order (x fastest), checked, since SimpleITK would read bad data silently.

    ITK reads truncated files (missing voxels become garbage) and turns NaN/Inf voxels into 0.
    This checks the gzip stream, the data length and, for float data, that every voxel is finite.
    The voxels are None when the file scales its values or stores a type SimpleITK converts.
    """
    from isal import igzip, isal_zlib

    try:
        raw = _read_whole(path)
        content = igzip.decompress(raw) if path.name.lower().endswith(".gz") else raw
    except (OSError, EOFError, isal_zlib.error):
        raise InputError(f"{path}: cannot read the image data (compressed stream truncated or corrupt)") from None
    del raw
    for order in "<>":
        sizeof_hdr = struct.unpack(f"{order}i", content[:4])[0] if len(content) >= 4 else 0
        if sizeof_hdr == 348 and len(content) >= 348:  # NIfTI-1
            dims = struct.unpack(f"{order}8h", content[40:56])
            datatype, bitpix = struct.unpack(f"{order}2h", content[70:74])
            offset = int(struct.unpack(f"{order}f", content[108:112])[0])
            slope, intercept = struct.unpack(f"{order}2f", content[112:120])
            break
        if sizeof_hdr == 540 and len(content) >= 540:  # NIfTI-2
            datatype, bitpix = struct.unpack(f"{order}2h", content[12:16])
            dims = struct.unpack(f"{order}8q", content[16:80])
            offset = struct.unpack(f"{order}q", content[168:176])[0]
            slope, intercept = struct.unpack(f"{order}2d", content[176:192])
            break
    else:
        raise InputError(f"{path}: not a NIfTI file (bad header)")
    n_values = int(np.prod([max(d, 1) for d in dims[1 : 1 + max(min(dims[0], 7), 0)]], dtype=np.int64))
    offset = max(offset, sizeof_hdr)
    expected = offset + n_values * bitpix // 8
    if len(content) < expected:
        raise InputError(
            f"{path}: file is truncated ({len(content)} of {expected} bytes); the image data is incomplete"
        )
    if datatype not in NIFTI_TYPES:
        return None
    values = np.frombuffer(content, dtype=order + NIFTI_TYPES[datatype], count=n_values, offset=offset)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InputError(f"{path}: image contains NaN or infinite voxels")
    return values if slope in (0.0, 1.0) and intercept == 0.0 else None


def _check_structure(path: Path, image: sitk.Image | sitk.ImageFileReader) -> None:
    dimension = image.GetDimension()
    if dimension not in (2, 3):
        raise InputError(f"{path}: {dimension}D images are not supported (2D images and 3D volumes only)")
    components = (
        image.GetNumberOfComponents()
        if isinstance(image, sitk.ImageFileReader)
        else image.GetNumberOfComponentsPerPixel()
    )
    if components != 1:
        raise InputError(
            f"{path}: has {components} components per voxel (RGB, vector or complex); "
            "only single-channel grey-level images are supported"
        )
    if image.GetPixelID() not in SUPPORTED_PIXEL_TYPES:
        raise InputError(f"{path}: pixel type {sitk.GetPixelIDValueAsString(image.GetPixelID())} is not supported")
    if 0 in image.GetSize():
        raise InputError(f"{path}: image is empty (size {image.GetSize()})")


def _check_values(path: Path, image: sitk.Image) -> None:
    values = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise InputError(f"{path}: image contains NaN or infinite voxels")
    if values.min() == values.max():
        raise InputError(f"{path}: image is constant; there is nothing to protect")


def _numpy_dtype(pixel_id: int) -> np.dtype:
    return sitk.GetArrayViewFromImage(sitk.Image([1] * 2, pixel_id)).dtype


def _read_segmentation(path: Path) -> sitk.Image:
    """A Slicer ``.seg.nrrd`` as a label map on its own grid: segment k (file order) -> label k+1."""
    import slicerio

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        segmentation = slicerio.read_segmentation(str(path))
        masks = [slicerio.segment_mask(segmentation, segment) for segment in segmentation["segments"]]
        ijk_to_lps = np.asarray(segmentation["ijkToLPS"], dtype=float)
    except Exception as exc:  # slicerio/pynrrd raise many types for malformed files
        raise InputError(f"{path}: not a readable Slicer segmentation ({type(exc).__name__})") from None
    shape = segmentation["voxels"].shape[-3:]
    labels = np.zeros(shape, dtype=np.uint16 if len(masks) > 255 else np.uint8)
    for value, mask in enumerate(masks, start=1):
        labels[mask] = value
    image = sitk.GetImageFromArray(labels.transpose(2, 1, 0))  # slicerio voxels are (i, j, k)
    axes = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((axes / spacing).ravel().tolist())
    image.SetOrigin(ijk_to_lps[:3, 3].tolist())
    return image


def _resample_like(label: sitk.Image, reference: sitk.Image, source: Path) -> sitk.Image:
    """Nearest-neighbour resampling of a label map onto ``reference``'s grid (3D seg onto 2D image: error)."""
    if label.GetDimension() != reference.GetDimension():
        if label.GetDimension() == 3 and label.GetSize()[2] == 1 and reference.GetDimension() == 2:
            label = label[:, :, 0]
        else:
            raise InputError(
                f"{source}: mask is {label.GetDimension()}D but the image is {reference.GetDimension()}D; "
                "they cannot be aligned"
            )
    return sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value
