"""Protector files never run code: pickles are refused, damaged or forged safetensors are refused."""

from __future__ import annotations

import json
import pickle
import re
import struct
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from safetensors.numpy import load_file as load_numpy

from umedprotect.errors import InputError
from umedprotect.protector import load_protector
from umedprotect.protector_file import DIGEST_KEY, METADATA_KEY, weights_digest


class CreatesMarker:
    """Unpickling this object opens (creates) the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def split(path: Path) -> tuple[dict, bytes]:
    """safetensors = 8-byte little-endian header length, JSON header, raw tensor data."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def join(header: dict, body: bytes, path: Path) -> Path:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


def edit_config(source: Path, target: Path, **changes) -> Path:
    header, body = split(source)
    config = json.loads(header["__metadata__"][METADATA_KEY])
    config.update(changes)
    header["__metadata__"][METADATA_KEY] = json.dumps(config)
    return join(header, body, target)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", ["evil.safetensors", "evil.pt"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, writer, name):
    marker = tmp_path / "marker-created-by-pickle"
    path = tmp_path / name
    if writer == "pickle":
        path.write_bytes(pickle.dumps(CreatesMarker(marker)))
    else:
        torch.save({"state_dict": CreatesMarker(marker)}, path)
    assert not marker.exists()
    with pytest.raises(InputError, match="pickle/zip-based PyTorch files are refused"):
        load_protector(path)
    assert not marker.exists()


def test_pickle_payload_without_the_usual_magic_bytes_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "p.safetensors"
    path.write_bytes(b"\x00" * 8 + pickle.dumps(CreatesMarker(marker), protocol=0))  # protocol 0 has no 0x80
    with pytest.raises(InputError, match="not a valid safetensors protector file"):
        load_protector(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 7, 8, 100, 0.5, 0.99])
def test_truncated_file_is_refused(tmp_path, protector_file, keep):
    data = protector_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(InputError, match="cut.safetensors"):
        load_protector(cut)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format_version": 99}, "format version 99 is not supported"),
        ({"format": "something-else"}, "not a UMedProtect protector"),
        ({"epsilon": -1}, "invalid protector config value epsilon"),
        ({"band_radius": "3; import os"}, "invalid protector config value band_radius"),
        ({"__class__": "os.system"}, "unknown protector config keys"),
        ({"base_channels": 16}, "weights do not match its config"),
        ({"levels": 2}, "weights do not match its config"),
    ],
)
def test_forged_config_is_refused(tmp_path, protector_file, changes, message):
    with pytest.raises(InputError, match=message):
        load_protector(edit_config(protector_file, tmp_path / "forged.safetensors", **changes))


def test_config_that_is_not_json_is_refused(tmp_path, protector_file):
    header, body = split(protector_file)
    header["__metadata__"][METADATA_KEY] = "{'epsilon': 4"
    with pytest.raises(InputError, match="not valid JSON"):
        load_protector(join(header, body, tmp_path / "bad.safetensors"))
    del header["__metadata__"][METADATA_KEY]
    with pytest.raises(InputError, match="has no UMedProtect config"):
        load_protector(join(header, body, tmp_path / "bare.safetensors"))


def test_wrong_tensor_names_shapes_dtypes_and_values_are_refused(tmp_path, protector_file):
    header, body = split(protector_file)
    names = sorted(k for k in header if k != "__metadata__")
    assert names[0] == "codes"  # read without torch: the codes and the generator heads are checked first
    renamed = dict(header)
    renamed["evil.codes"] = renamed.pop("codes")
    with pytest.raises(InputError, match=r"missing \['codes'\]"):
        load_protector(join(renamed, body, tmp_path / "renamed.safetensors"))
    weights = {("evil." if k == names[1] else "") + k: v for k, v in load_numpy(str(protector_file)).items()}
    renamed = {("evil." if k == names[1] else "") + k: v for k, v in header.items()}
    renamed["__metadata__"] = {**header["__metadata__"], DIGEST_KEY: weights_digest(weights)}  # a forged checksum
    with pytest.raises(InputError, match="unexpected"):  # the networks' weights: checked when they are built
        load_protector(join(renamed, body, tmp_path / "renamed.safetensors"))

    reshaped = json.loads(json.dumps(header))
    shape = reshaped[names[0]]["shape"]
    reshaped[names[0]]["shape"] = [int(torch.tensor(shape).prod())] if len(shape) > 1 else [1, *shape]
    with pytest.raises(InputError, match="wrong shape"):
        load_protector(join(reshaped, body, tmp_path / "reshaped.safetensors"))

    inconsistent = json.loads(json.dumps(header))
    inconsistent[names[0]]["data_offsets"][1] += 4  # overlaps the next tensor
    with pytest.raises(InputError, match="not a valid safetensors"):
        load_protector(join(inconsistent, body, tmp_path / "offsets.safetensors"))

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(protector_file))
    metadata = header["__metadata__"]
    half = {k: v.half() for k, v in tensors.items()}
    save_file(half, str(tmp_path / "half.safetensors"), metadata=metadata)
    with pytest.raises(InputError, match="is not finite float32"):
        load_protector(tmp_path / "half.safetensors")
    poisoned = dict(tensors)
    poisoned[names[0]] = torch.full_like(tensors[names[0]], float("nan"))
    save_file(poisoned, str(tmp_path / "nan.safetensors"), metadata=metadata)
    with pytest.raises(InputError, match="is not finite float32"):
        load_protector(tmp_path / "nan.safetensors")


def test_edited_weights_with_valid_structure_are_refused(tmp_path, protector_file):
    from safetensors.torch import load_file, save_file

    header, _ = split(protector_file)
    tensors = load_file(str(protector_file))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.01  # same names, shapes, dtype, finite values
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=header["__metadata__"])
    with pytest.raises(InputError, match="checksum mismatch"):
        load_protector(tmp_path / "edited.safetensors")


def test_torch_load_is_never_called_without_weights_only():
    """Every ``torch.load(`` in the code must pass ``weights_only=True``; no pickle loading at all."""
    offenders = []
    for path in sorted((ROOT / "UMedProtect").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\s*\(", text):
            call = text[match.end() : match.end() + 400]
            depth, end = 1, 0
            for end, char in enumerate(call):  # noqa: B007 - ``end`` is read after the loop
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0:
                    break
            if not re.search(r"weights_only\s*=\s*True", call[:end]):
                offenders.append(f"{path.relative_to(ROOT)}: torch.load without weights_only=True")
        for pattern in (
            r"pickle\.loads?\s*\(",
            r"allow_pickle\s*=\s*True",
            r"torch\.jit\.load\s*\(",
            r"(?<![.\w])eval\s*\(",
            r"(?<![.\w])exec\s*\(",
        ):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert offenders == []
