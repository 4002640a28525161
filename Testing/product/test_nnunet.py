"""nnU-Net v2 raw layout: discovery of cases and validation of dataset.json and paths."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import write_nnunet_dataset

from umedprotect.errors import InputError
from umedprotect.nnunet import read_dataset


def edit_meta(root, **changes):
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del meta[key]
    (root / "dataset.json").write_text(json.dumps(meta))


def test_reads_training_and_test_cases(nnunet_dataset):
    dataset = read_dataset(nnunet_dataset)
    assert [c.case_id for c in dataset.training] == ["case000", "case001", "case002"]
    assert [c.case_id for c in dataset.test] == ["case003"]
    assert dataset.training[1].images == [dataset.root / "imagesTr" / "case001_0000.nii.gz"]
    assert dataset.training[1].label == dataset.root / "labelsTr" / "case001.nii.gz"
    assert dataset.test[0].label == dataset.root / "labelsTs" / "case003.nii.gz"
    assert dataset.labels == {"background": 0, "lesion1": 1, "lesion2": 2}
    assert dataset.label_values == {0, 1, 2} and dataset.channels == 1 and dataset.file_ending == ".nii.gz"
    assert dataset.relative(dataset.training[0].images[0]).as_posix() == "imagesTr/case000_0000.nii.gz"


def test_multi_channel_cases_and_optional_test_labels(tmp_path):
    root = write_nnunet_dataset(tmp_path / "D", n_train=2, n_test=2, file_ending=".mha")
    for path in sorted((root / "imagesTr").iterdir()) + sorted((root / "imagesTs").iterdir()):
        shutil.copy(path, path.with_name(path.name.replace("_0000", "_0001")))
    edit_meta(root, channel_names={"0": "T1", "1": "T2"})
    (root / "labelsTs" / "case003.mha").unlink()
    dataset = read_dataset(root)
    assert [p.name for p in dataset.training[0].images] == ["case000_0000.mha", "case000_0001.mha"]
    assert dataset.test[0].label is not None and dataset.test[1].label is None
    shutil.rmtree(root / "labelsTs")
    shutil.rmtree(root / "imagesTs")
    assert read_dataset(root).test == []


def test_explicit_dataset_entries(nnunet_dataset):
    entries = {"a": {"images": ["imagesTr/case002_0000.nii.gz"], "label": "labelsTr/case002.nii.gz"}}
    edit_meta(nnunet_dataset, dataset=entries, numTraining=1)
    dataset = read_dataset(nnunet_dataset)
    assert [c.case_id for c in dataset.training] == ["a"]
    assert dataset.training[0].images[0].name == "case002_0000.nii.gz"


def test_hidden_partial_files_are_ignored(nnunet_dataset):
    (nnunet_dataset / "imagesTr" / ".case000_0000.nii.gz.x1.partial.nii.gz").write_bytes(b"")
    assert len(read_dataset(nnunet_dataset).training) == 3


def break_missing_json(root):
    (root / "dataset.json").unlink()


def break_json_syntax(root):
    (root / "dataset.json").write_text('{"labels": ')


def break_json_list(root):
    (root / "dataset.json").write_text("[1, 2]")


def break_missing_key(root):
    edit_meta(root, file_ending=None)


def break_file_ending(root):
    edit_meta(root, file_ending="nii.gz")


def break_channel_names(root):
    edit_meta(root, channel_names={"1": "CT"})


def break_region_labels(root):
    edit_meta(root, labels={"background": 0, "whole": [1, 2]})


def break_no_background(root):
    edit_meta(root, labels={"lesion": 1})


def break_num_training(root):
    edit_meta(root, numTraining=5)


def break_missing_label(root):
    (root / "labelsTr" / "case001.nii.gz").unlink()


def break_missing_channel(root):
    edit_meta(root, channel_names={"0": "T1", "1": "T2"})


def break_unexpected_file(root):
    (root / "imagesTr" / "notes.txt").write_text("x")


def break_no_images(root):
    shutil.rmtree(root / "imagesTr")


def break_traversal(root):
    entries = {"a": {"images": ["../outside_0000.nii.gz"], "label": "labelsTr/case000.nii.gz"}}
    edit_meta(root, dataset=entries, numTraining=1)


def break_absolute(root):
    entries = {"a": {"images": [str(root / "imagesTr" / "case000_0000.nii.gz")], "label": "labelsTr/case000.nii.gz"}}
    edit_meta(root, dataset=entries, numTraining=1)


def break_symlink_outside(root):
    outside = root.parent / "outside_0000.nii.gz"
    shutil.copy(root / "imagesTr" / "case000_0000.nii.gz", outside)
    (root / "imagesTr" / "case000_0000.nii.gz").unlink()
    os.symlink(outside, root / "imagesTr" / "case000_0000.nii.gz")


def break_symlinked_folder(root):
    shutil.move(root / "labelsTr", root.parent / "labelsTr")
    os.symlink(root.parent / "labelsTr", root / "labelsTr")


@pytest.mark.parametrize(
    "breaker, message",
    [
        (break_missing_json, "dataset.json not found"),
        (break_json_syntax, "dataset.json is not valid JSON"),
        (break_json_list, "must be a JSON object"),
        (break_missing_key, r"lacks required keys \['file_ending'\]"),
        (break_file_ending, "file_ending 'nii.gz'"),
        (break_channel_names, "channel_names"),
        (break_region_labels, "region-based labels are not"),
        (break_no_background, "background as 0"),
        (break_num_training, "numTraining is 5 but 3"),
        (break_missing_label, "case001.nii.gz: label file for case 'case001' not found"),
        (break_missing_channel, r"has channels \[0\], expected \[0, 1\]"),
        (break_unexpected_file, "notes.txt: unexpected entry"),
        (break_no_images, "imagesTr: folder not found"),
        (break_traversal, "escapes the dataset folder"),
        (break_absolute, "escapes the dataset folder"),
        (break_symlink_outside, "points outside the dataset folder"),
        (break_symlinked_folder, "points outside the dataset folder"),
    ],
)
def test_invalid_datasets_are_refused_with_a_clear_message(nnunet_dataset, breaker, message):
    breaker(nnunet_dataset)
    with pytest.raises(InputError, match=message):
        read_dataset(nnunet_dataset)


def test_symlink_inside_the_dataset_is_allowed(nnunet_dataset):
    image = nnunet_dataset / "imagesTr" / "case000_0000.nii.gz"
    (nnunet_dataset / "store").mkdir()
    shutil.move(image, nnunet_dataset / "store" / image.name)
    os.symlink(nnunet_dataset / "store" / image.name, image)
    assert len(read_dataset(nnunet_dataset).training) == 3


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="dataset folder not found"):
        read_dataset(tmp_path / "nope")
