"""Trust in the protector file format, read without torch: the config's ranges and wording, the checks on the
weights, the checksum and what a read file reports.

The files here are written byte by byte (8-byte header length, JSON header, float32 data), not with the
product's writer, so the reader is checked against the format itself.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from umedprotect.errors import InputError
from umedprotect.protector_file import (
    DEFAULT_PROTECTOR_PATH,
    DIGEST_KEY,
    GENERATOR_HEADS,
    METADATA_KEY,
    ProtectorConfig,
    ProtectorFile,
    check_config_values,
    invalid_config_values,
    read_protector_file,
    weights_digest,
)

# name: (accepted at and within its bounds, refused beyond them or for their type)
CONFIG_RANGES = {
    "epsilon": ([1e-6, 4, 64], [0, -1, 64.5, "4", None]),
    "band_radius": ([0, 32], [-1, 33, 2.0]),
    "texture_floor": ([0, 0.5, 1], [-0.01, 1.01, "0"]),
    "texture_window": ([1, 31], [0, 32, 5.0]),
    "cdc_theta": ([0, 1], [-0.1, 1.1]),
    "base_channels": ([1, 128], [0, 129, 8.0]),
    "levels": ([1, 6], [0, 7]),
    "code_period": ([1, 64], [0, 65]),
    "code_classes": ([2, 256], [1, 257]),
    "code_init": (["normal", "blobs", "rings", "fill"], ["stripes", None]),
    "generator_gain": ([0, 10], [-0.5, 10.5]),
    "min_psnr": ([None, 20, 120], [19.9, 121, "50"]),
    "percentiles": ([[0, 100], [0.5, 99.5]], [[50, 50], [-1, 50], [1, 101], [1, 2, 3], {}]),
    "package_version": (["1.0"], [1]),
    "training": ([{}], [[]]),
}


def write_file(path: Path, weights: dict, metadata: dict, header_bytes: int | None = None) -> Path:
    """A safetensors file of float32 ``weights``; ``header_bytes``: pad the JSON header to this length."""
    header, offset, body = {"__metadata__": metadata}, 0, b""
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name], dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        body += array.tobytes()
        offset += array.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * ((header_bytes or len(raw) + (-len(raw) % 8)) - len(raw))
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


def small_weights(config: ProtectorConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    weights = {key: np.zeros((1, 4, 1, 1) if "weight" in key else (1,), np.float32) for key in GENERATOR_HEADS}
    weights["codes"] = rng.normal(size=config.code_shape()).astype(np.float32)
    weights["contour.stem.weight"] = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    return weights


def metadata_for(config: ProtectorConfig, weights: dict) -> dict:
    return {METADATA_KEY: config.to_json(), DIGEST_KEY: weights_digest(weights)}


@pytest.mark.parametrize("name", sorted(CONFIG_RANGES))
def test_each_config_value_is_accepted_within_its_range_and_refused_beyond(name, tmp_path):
    accepted, refused = CONFIG_RANGES[name]
    for value in accepted:
        assert invalid_config_values({name: value}) == [], value
        text = json.dumps({**json.loads(ProtectorConfig().to_json()), name: value})
        expected = tuple(value) if name == "percentiles" else value
        assert getattr(ProtectorConfig.from_json(text, "ok"), name) == expected
    for value in refused:
        assert invalid_config_values({name: value}) == [name], value
        text = json.dumps({**json.loads(ProtectorConfig().to_json()), name: value})
        with pytest.raises(InputError, match=f"{tmp_path}: invalid protector config value {name}="):
            ProtectorConfig.from_json(text, str(tmp_path))


def test_invalid_values_are_named_in_table_order_and_absent_or_unknown_keys_are_left_alone():
    assert invalid_config_values({}) == []
    assert invalid_config_values({"levels": 0, "mystery": -1, "epsilon": 0, "code_period": 8}) == ["epsilon", "levels"]


def test_out_of_range_values_are_worded_with_the_options_range_or_their_own_name():
    with pytest.raises(InputError, match=r"out of range \(0, 64\]") as error:
        check_config_values({"levels": 3, "epsilon": 65})
    assert error.value.option == "epsilon"
    with pytest.raises(InputError, match="out of range") as error:
        check_config_values({"epsilon": 8, "levels": 9})
    assert error.value.option == "levels"
    check_config_values({"epsilon": 8, "levels": 6, "code_init": "rings"})


def test_a_config_round_trips_through_its_canonical_json():
    config = ProtectorConfig(epsilon=6.5, code_init="rings", code_period=5, percentiles=(1.0, 99.0), min_psnr=None)
    text = config.to_json()
    assert list(json.loads(text)) == sorted(json.loads(text))  # sorted keys: the same config, the same text
    again = ProtectorConfig.from_json(text, "here")
    assert again == config and isinstance(again.percentiles, tuple) and again.min_psnr is None
    older = json.loads(ProtectorConfig(min_psnr=55.0).to_json())
    del older["min_psnr"], older["percentiles"]  # written before the floor and the percentiles were stored
    restored = ProtectorConfig.from_json(json.dumps(older), "old")
    assert restored.min_psnr is None and restored.percentiles == ProtectorConfig().percentiles


@pytest.mark.parametrize("text, message", [("[1, 2]", "must be a JSON object"), ("{", "not valid JSON")])
def test_a_config_that_is_no_json_object_is_refused_naming_its_file(text, message):
    with pytest.raises(InputError, match=f"^somewhere.safetensors: protector config .*{message}"):
        ProtectorConfig.from_json(text, "somewhere.safetensors")


def test_code_shapes_are_a_profile_for_rings_and_a_square_tile_otherwise():
    assert ProtectorConfig(code_init="rings", code_classes=5, code_period=7).code_shape() == (5, 7)
    for code_init in ("normal", "blobs", "fill"):
        assert ProtectorConfig(code_init=code_init, code_classes=5, code_period=7).code_shape() == (5, 7, 7)


def test_the_summary_reports_the_config_the_parameter_count_and_the_size():
    weights = {"codes": np.zeros((10, 10, 10), np.float32), "head": np.zeros((3, 4), np.float32)}
    summary = ProtectorFile(ProtectorConfig(epsilon=5.0), weights, "x").summary()
    assert summary["parameters"] == 1012 and summary["size_mb"] == 0.004  # 4048 bytes, to the kB
    assert summary["epsilon"] == 5.0 and summary["code_init"] == "normal"
    assert set(summary) == set(json.loads(ProtectorConfig().to_json())) | {"parameters", "size_mb"}
    big = ProtectorFile(ProtectorConfig(), {"codes": np.zeros(300_000, np.float32)}, "y").summary()
    assert big["size_mb"] == 1.144  # 1,200,000 bytes = 1.1444 MiB


def test_the_weights_digest_is_pinned_and_covers_names_shapes_and_float32_values():
    weights = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([0.5], np.float32)}
    digest = weights_digest(weights)
    assert digest == "7ed76a18a2e059605dfc506e2cb9552ee31befd9b7ee5dd4e9352e6bde6df1e9"
    assert weights_digest({k: v.astype(np.float64) for k, v in weights.items()}) == digest  # float32 values
    assert weights_digest(dict(reversed(weights.items()))) == digest  # in name order
    assert weights_digest({**weights, "b": weights["b"].reshape(3, 2)}) != digest
    assert weights_digest({"c": weights["b"], "a": weights["a"]}) != digest
    assert weights_digest({**weights, "a": np.array([0.25], np.float32)}) != digest


def test_a_file_read_reports_its_config_weights_and_path(tmp_path):
    config = ProtectorConfig(code_classes=3, code_period=4, epsilon=7.0)
    weights = small_weights(config)
    path = write_file(tmp_path / "mine.safetensors", weights, metadata_for(config, weights))
    read = read_protector_file(path)
    assert read.config == config and read.source == str(path)
    assert sorted(read.weights) == sorted(weights) and all(np.array_equal(read.weights[k], weights[k]) for k in weights)
    assert read.generators_silent
    assert read_protector_file(str(path)).source == str(path)


def test_the_bundled_protector_is_read_when_no_path_is_given():
    bundled = read_protector_file()
    assert bundled.source == str(DEFAULT_PROTECTOR_PATH) and bundled.config.code_init == "fill"


def test_a_header_length_starting_with_the_pickle_byte_is_still_a_valid_file(tmp_path):
    config = ProtectorConfig(code_classes=3, code_period=4)
    weights = small_weights(config)
    metadata = metadata_for(config, weights)
    length = struct.unpack("<Q", write_file(tmp_path / "x80.safetensors", weights, metadata).read_bytes()[:8])[0]
    path = write_file(tmp_path / "x80.safetensors", weights, metadata, header_bytes=(length // 256 + 1) * 256 + 0x80)
    assert path.read_bytes()[:1] == b"\x80" and path.read_bytes()[8:9] == b"{"
    assert read_protector_file(path).config == config


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_a_missing_path_or_a_folder_is_not_a_protector_file(tmp_path, what):
    path = tmp_path / "nothing.safetensors"
    if what == "folder":
        path.mkdir()
    with pytest.raises(InputError, match=f"^{path}: protector file not found"):
        read_protector_file(path)


def test_a_file_without_metadata_has_no_config(tmp_path):
    path = write_file(tmp_path / "bare.safetensors", {"codes": np.zeros(3, np.float32)}, {})
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    del header["__metadata__"]  # no metadata at all, not an empty one
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])
    with pytest.raises(InputError, match="has no UMedProtect config"):
        read_protector_file(path)


@pytest.mark.parametrize("head", GENERATOR_HEADS)
def test_a_file_missing_a_generator_head_is_refused_before_anything_reads_it(tmp_path, head):
    config = ProtectorConfig(code_classes=3, code_period=4)
    weights = small_weights(config)
    del weights[head]
    path = write_file(tmp_path / "headless.safetensors", weights, metadata_for(config, weights))
    with pytest.raises(InputError, match=rf"missing \['{head}'\], wrong shape \[\]"):
        read_protector_file(path)


def test_codes_of_the_wrong_shape_for_the_config_are_refused(tmp_path):
    config = ProtectorConfig(code_classes=3, code_period=4, code_init="rings")
    weights = small_weights(ProtectorConfig(code_classes=3, code_period=4))  # square tiles, not a profile
    path = write_file(tmp_path / "tiles.safetensors", weights, metadata_for(config, weights))
    with pytest.raises(InputError, match=r"missing \[\], wrong shape \['codes'\]"):
        read_protector_file(path)


def test_config_problems_name_the_file(tmp_path):
    config = ProtectorConfig(code_classes=3, code_period=4)
    weights = small_weights(config)
    metadata = {**metadata_for(config, weights), METADATA_KEY: config.to_json().replace('"levels": 3', '"levels": 0')}
    path = write_file(tmp_path / "levels.safetensors", weights, metadata)
    with pytest.raises(InputError, match=f"^{path}: invalid protector config value levels=0"):
        read_protector_file(path)


def test_a_live_generator_head_is_seen_and_a_missing_checksum_is_refused(tmp_path):
    config = ProtectorConfig(code_classes=3, code_period=4)
    for head in GENERATOR_HEADS:
        weights = small_weights(config)
        weights[head] = weights[head] + np.float32(0.5)
        path = write_file(tmp_path / "live.safetensors", weights, metadata_for(config, weights))
        assert not read_protector_file(path).generators_silent, head
    path = write_file(tmp_path / "unsigned.safetensors", weights, {METADATA_KEY: config.to_json()})
    with pytest.raises(InputError, match="checksum mismatch"):
        read_protector_file(path)
