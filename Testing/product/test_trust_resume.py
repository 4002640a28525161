"""Resume promises of protect-dataset, each pinned so that removing the check behind it fails a test.

A rerun with another protector, method, parameters or source is refused in one line and touches nothing;
a case whose source image or label changed is redone; a damaged output image or label is repaired;
afterwards the manifest describes exactly what is on disk and ``umedprotect verify`` agrees.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_nnunet_dataset
from oracles import live_protector

from umedprotect import io
from umedprotect.array_protection import ProtectionResult
from umedprotect.cli import main
from umedprotect.dataset_protection import MANIFEST_NAME, protect_dataset
from umedprotect.intensity import Window
from umedprotect.protector import save_protector
from umedprotect.records import ImageGeometry

CASES = ("case000", "case001", "case002")


@pytest.fixture(scope="module")
def protectors(tmp_path_factory):
    folder = tmp_path_factory.mktemp("protectors")
    return [save_protector(live_protector(seed), folder / f"live{seed}.safetensors") for seed in (1, 2)]


@pytest.fixture
def source(tmp_path):
    return write_nnunet_dataset(tmp_path / "Dataset010_Resume", n_train=len(CASES), n_test=1, shape=(4, 24, 24))


def protect(source, out, protector, *options) -> int:
    argv = ["protect-dataset", str(source), "-o", str(out), "--protector", str(protector), "--no-progress"]
    return main([*argv, *options])


def files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_manifest_describes_the_disk(out, source, capsys) -> dict:
    """Every file on disk is listed with its hash, every listed file exists, inputs hashed as they are now."""
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["status"] == "complete"
    listed = {"dataset.json": manifest["dataset_json"]["sha256"]}
    for case_id, entry in manifest["cases"].items():
        assert entry["status"] == "protected", case_id
        for record in entry["images"]:
            listed[record["output"]] = record["output_sha256"]
            assert record["input_sha256"] == io.sha256(source / record["input"])
        listed[entry["label"]["path"]] = entry["label"]["sha256"]
        assert entry["label"]["sha256"] == io.sha256(source / entry["label"]["path"])
    for item in manifest["test"]:
        listed.update({record["path"]: record["sha256"] for record in item["files"]})
    on_disk = {name: io.sha256(out / name) for name in files(out) if name != MANIFEST_NAME}
    assert on_disk == listed
    assert sorted(manifest["cases"]) == list(CASES)
    capsys.readouterr()
    assert main(["verify", str(out), "--source", str(source)]) == 0, capsys.readouterr().out
    return manifest


def assert_refused_in_one_line(capsys, code: int, *words: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert all(word in err[0] for word in words), err[0]


def fresh_outputs(source, protector, folder) -> dict[str, bytes]:
    """What an uninterrupted run from scratch writes (the reference for a redone case)."""
    assert protect(source, folder, protector) == 0
    return {name: data for name, data in files(folder).items() if name != MANIFEST_NAME}


def test_a_rerun_with_another_protector_is_refused_and_touches_nothing(tmp_path, source, protectors, capsys):
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    before = files(out)
    capsys.readouterr()
    assert_refused_in_one_line(capsys, protect(source, out, protectors[1]), "other settings", "--overwrite")
    assert files(out) == before


@pytest.mark.parametrize(
    "options", [["--epsilon", "6"], ["--band-radius", "1"], ["--labels", "1"], ["--seed", "5"], ["--allow-empty"]]
)
def test_a_rerun_with_other_settings_is_refused_and_touches_nothing(tmp_path, source, protectors, capsys, options):
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    before = files(out)
    capsys.readouterr()
    assert_refused_in_one_line(capsys, protect(source, out, protectors[0], *options), "other settings")
    assert files(out) == before


def test_a_rerun_from_another_source_is_refused(tmp_path, source, protectors, capsys):
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    other = write_nnunet_dataset(tmp_path / "Dataset011_Other", n_train=3, n_test=1, shape=(4, 24, 24))
    before = files(out)
    capsys.readouterr()
    assert_refused_in_one_line(capsys, protect(other, out, protectors[0]), "other settings")
    assert files(out) == before


def change_source_image(source):
    path = source / "imagesTr" / "case001_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[1:3, 8:16, 8:16] += 40
    io.write_like(array, image, path, overwrite=True)


def change_source_label(source):
    path = source / "labelsTr" / "case001.nii.gz"
    labels = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(labels)
    array[1:3, 2:6, 2:6] = 1
    io.write_like(array, labels, path, overwrite=True)


@pytest.mark.parametrize("change", [change_source_image, change_source_label])
def test_a_case_whose_source_changed_is_redone_and_the_others_are_kept(tmp_path, source, protectors, capsys, change):
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    before = files(out)
    kept = {name: (out / name).stat().st_mtime_ns for name in before if "Tr/" in name and "case001" not in name}
    change(source)
    assert protect(source, out, protectors[0]) == 0
    after = files(out)
    assert after["imagesTr/case001_0000.nii.gz"] != before["imagesTr/case001_0000.nii.gz"]
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # finished cases were not redone
    reference = fresh_outputs(source, protectors[0], tmp_path / "fresh")
    assert {name: data for name, data in after.items() if name != MANIFEST_NAME} == reference
    assert_manifest_describes_the_disk(out, source, capsys)


def damage_output_image(out):
    (out / "imagesTr" / "case001_0000.nii.gz").write_bytes(b"damaged")


def damage_output_label(out):
    path = out / "labelsTr" / "case001.nii.gz"
    path.write_bytes(path.read_bytes()[:-4] + b"oops")


def delete_output_label(out):
    (out / "labelsTr" / "case001.nii.gz").unlink()


def forget_the_last_case(out):
    """The state a kill leaves: the manifest has not recorded case002 yet (its files may or may not exist)."""
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["status"] = "running"
    del manifest["cases"]["case002"]
    manifest["test"] = []
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    (out / "imagesTr" / ".case002_0000.nii.gz.x.partial.nii.gz").write_bytes(b"half")


@pytest.mark.parametrize(
    "damage", [damage_output_image, damage_output_label, delete_output_label, forget_the_last_case]
)
def test_damaged_or_unfinished_outputs_are_repaired(tmp_path, source, protectors, capsys, damage):
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    good = files(out)
    damage(out)
    assert protect(source, out, protectors[0]) == 0
    repaired = files(out)
    del repaired[MANIFEST_NAME], good[MANIFEST_NAME]
    assert repaired == good
    assert_manifest_describes_the_disk(out, source, capsys)


def test_an_untouched_rerun_redoes_nothing_and_changes_nothing(tmp_path, source, protectors, capsys):
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*Tr/*.nii.gz")}  # test files are always recopied
    before = files(out)
    assert protect(source, out, protectors[0]) == 0
    err = capsys.readouterr().err
    assert "resuming: 3 of 3" in err and "other software versions" not in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*Tr/*.nii.gz")} == stamps
    assert files(out) == before
    assert_manifest_describes_the_disk(out, source, capsys)


def test_live_generators_make_the_two_protectors_differ(tmp_path, source, protectors):
    """Guards the refusal tests above: the two protectors really protect differently."""
    first = fresh_outputs(source, protectors[0], tmp_path / "a")
    second = fresh_outputs(source, protectors[1], tmp_path / "b")
    assert first["imagesTr/case000_0000.nii.gz"] != second["imagesTr/case000_0000.nii.gz"]
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / "labelsTr" / "case000.nii.gz"))),
        sitk.GetArrayFromImage(sitk.ReadImage(str(source / "labelsTr" / "case000.nii.gz"))),
    )


def test_verify_checks_against_the_source_it_is_given_and_hashes_only_without_one(tmp_path, source, protectors, capsys):
    import shutil

    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    moved = tmp_path / "moved"
    shutil.move(source, moved)
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0  # the recorded source is gone: hashes only, with a warning
    assert "checking hashes only" in capsys.readouterr().err
    change_source_label(moved)
    (moved / "dataset.json").write_text((moved / "dataset.json").read_text() + " ")
    assert main(["verify", str(out), "--source", str(moved)]) == 3
    report = capsys.readouterr().out
    assert "labelsTr/case001.nii.gz: label differs from the source" in report
    assert "dataset.json: differs from the source" in report


@pytest.mark.parametrize("skipped", ["case000", "case002"])
def test_verify_reports_a_case_skipped_for_its_empty_mask(tmp_path, source, protectors, capsys, skipped):
    """The skipped case is the one discrepancy, and the cases after it are still checked."""
    path = source / "labelsTr" / f"{skipped}.nii.gz"
    labels = sitk.ReadImage(str(path))
    io.write_like(np.zeros_like(sitk.GetArrayFromImage(labels)), labels, path, overwrite=True)
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    assert f"case {skipped} will be skipped, not copied unchanged" in capsys.readouterr().err
    assert main(["verify", str(out)]) == 3
    report = capsys.readouterr().out
    assert f"case {skipped}: skipped (empty mask), not in the output" in report
    assert report.count("discrepanc") == 1 and "1 discrepancy" in report.splitlines()[-1]
    change_source_label(source)  # case001, before or after the skipped case
    assert main(["verify", str(out)]) == 3
    assert f"{out / 'labelsTr' / 'case001.nii.gz'}: label differs from the source" in capsys.readouterr().out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_allowed_empty_masks_are_copied_unchanged_in_every_worker(tmp_path, source, protectors, capsys, workers):
    path = source / "labelsTr" / "case001.nii.gz"
    labels = sitk.ReadImage(str(path))
    io.write_like(np.zeros_like(sitk.GetArrayFromImage(labels)), labels, path, overwrite=True)
    out = tmp_path / "out"
    assert protect(source, out, protectors[0], "--allow-empty", "--workers", workers) == 0
    assert "case case001 will be copied unchanged (empty masks allowed)" in capsys.readouterr().err
    cases = json.loads((out / MANIFEST_NAME).read_text())["cases"]
    assert [cases[case_id]["status"] for case_id in CASES] == ["protected", "copied_empty", "protected"]
    image = "imagesTr/case001_0000.nii.gz"
    assert (out / image).read_bytes() == (source / image).read_bytes()


def test_a_rerun_removes_the_partial_files_of_every_output(tmp_path, source, protectors, capsys):
    """What a killed run leaves behind: hidden temporary files of any output, the manifest included."""
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    outputs = [MANIFEST_NAME, "dataset.json", "imagesTr/case000_0000.nii.gz", "labelsTr/case000.nii.gz"]
    outputs += ["imagesTs/case003_0000.nii.gz", "labelsTs/case003.nii.gz"]
    partial = [
        out / f"{Path(name).parent}/.{Path(name).name}.x1y2.partial{''.join(Path(name).suffixes)}" for name in outputs
    ]
    for path in partial:
        path.write_bytes(b"left by a killed run")
    assert protect(source, out, protectors[0]) == 0
    assert [path for path in partial if path.exists()] == []
    assert_manifest_describes_the_disk(out, source, capsys)


def test_cases_that_gained_a_channel_are_redone(tmp_path, source, protectors, capsys):
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    meta = json.loads((source / "dataset.json").read_text())
    meta["channel_names"]["1"] = "CT2"
    (source / "dataset.json").write_text(json.dumps(meta))
    for folder, case_id in [("imagesTr", case_id) for case_id in CASES] + [("imagesTs", "case003")]:
        image = source / folder / f"{case_id}_0000.nii.gz"
        (source / folder / f"{case_id}_0001.nii.gz").write_bytes(image.read_bytes())
    assert protect(source, out, protectors[0]) == 0
    manifest = assert_manifest_describes_the_disk(out, source, capsys)
    assert [len(manifest["cases"][case_id]["images"]) for case_id in CASES] == [2, 2, 2]


def test_the_manifest_says_running_while_cases_are_protected(tmp_path, source):
    out = tmp_path / "out"
    seen = []

    def unchanged(image, labels, spacing=None) -> ProtectionResult:
        seen.append(json.loads((out / MANIFEST_NAME).read_text())["status"])
        metrics = dict(psnr_db=float("inf"), ssim=1.0, max_abs_change=0.0, fraction_changed=0.0)
        return ProtectionResult(image, image, labels != 0, Window(0.0, 1.0), 0.0, 0, metrics)

    assert protect_dataset(source, out, unchanged, "unchanged", {}, progress=False).status == "complete"
    assert seen == ["running"] * len(CASES)
    assert json.loads((out / MANIFEST_NAME).read_text())["status"] == "complete"


def test_a_case_whose_channels_lie_on_different_grids_is_refused_before_writing(tmp_path, source, protectors, capsys):
    meta = json.loads((source / "dataset.json").read_text())
    meta["channel_names"]["1"] = "CT2"
    (source / "dataset.json").write_text(json.dumps(meta))
    for folder, case_id in [("imagesTr", case_id) for case_id in CASES] + [("imagesTs", "case003")]:
        image = sitk.ReadImage(str(source / folder / f"{case_id}_0000.nii.gz"))
        if case_id == "case001":
            image.SetSpacing([2 * x for x in image.GetSpacing()])
        sitk.WriteImage(image, str(source / folder / f"{case_id}_0001.nii.gz"))
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 2
    assert "case001_0001.nii.gz: channel grid differs from case001_0000.nii.gz (spacing" in capsys.readouterr().err
    assert not out.exists()


def set_training_cases(source, n: int) -> None:
    meta = json.loads((source / "dataset.json").read_text())
    meta["numTraining"] = n
    (source / "dataset.json").write_text(json.dumps(meta))


def source_lost_a_case(source, out) -> list[str]:
    """case000 removed from the source, case001's label changed: the cases after an extra one are still checked."""
    (source / "imagesTr" / "case000_0000.nii.gz").unlink()
    (source / "labelsTr" / "case000.nii.gz").unlink()
    set_training_cases(source, 2)
    change_source_label(source)
    return [
        "case case000: in the manifest but not in the source",
        f"{out / 'labelsTr' / 'case001.nii.gz'}: label differs from the source",
        f"{out / 'dataset.json'}: differs from the source",
    ]


def source_gained_a_case(source, out) -> list[str]:
    for folder, name in (("imagesTr", "case00{}_0000.nii.gz"), ("labelsTr", "case00{}.nii.gz")):
        (source / folder / name.format(3)).write_bytes((source / folder / name.format(2)).read_bytes())
    set_training_cases(source, 4)
    return ["case case003: in the source but not in the manifest", f"{out / 'dataset.json'}: differs from the source"]


def source_test_label_changed(source, out) -> list[str]:
    path = source / "labelsTs" / "case003.nii.gz"
    path.write_bytes(path.read_bytes()[:-3] + b"abc")
    return [f"{out / 'labelsTs' / 'case003.nii.gz'}: differs from the source"]


def output_dataset_json_deleted(source, out) -> list[str]:
    (out / "dataset.json").unlink()
    return [f"{out / 'dataset.json'}: missing"]


def output_label_deleted(source, out) -> list[str]:
    (out / "labelsTr" / "case001.nii.gz").unlink()
    return [f"{out / 'labelsTr' / 'case001.nii.gz'}: missing"]


def output_test_label_deleted(source, out) -> list[str]:
    (out / "labelsTs" / "case003.nii.gz").unlink()
    return [f"{out / 'labelsTs' / 'case003.nii.gz'}: missing"]


def forge_output_image(out, image: sitk.Image) -> None:
    """Write ``image`` as case001's output and record its hash and geometry in the manifest, as a forger would."""
    path = out / "imagesTr" / "case001_0000.nii.gz"
    sitk.WriteImage(image, str(path))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    record = manifest["cases"]["case001"]["images"][0]
    record["output_sha256"] = io.sha256(path)
    record["geometry"] = asdict(ImageGeometry.of(image))
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))


def output_moved_with_a_forged_manifest(source, out) -> list[str]:
    """Only the comparison with the source image can see an origin the manifest was forged to match."""
    image = sitk.ReadImage(str(out / "imagesTr" / "case001_0000.nii.gz"))
    image.SetOrigin([x + 5.0 for x in image.GetOrigin()])
    forge_output_image(out, image)
    difference = io.geometry_difference(image, sitk.ReadImage(str(source / "imagesTr" / "case001_0000.nii.gz")))
    assert difference.startswith("origin")
    return [f"imagesTr/case001_0000.nii.gz: geometry or pixel type differs from the source ({difference})"]


def output_retyped_with_a_forged_manifest(source, out) -> list[str]:
    image = sitk.ReadImage(str(out / "imagesTr" / "case001_0000.nii.gz"))
    forge_output_image(out, sitk.Cast(image, sitk.sitkInt32))
    return ["imagesTr/case001_0000.nii.gz: geometry or pixel type differs from the source (pixel type)"]


@pytest.mark.parametrize(
    "change",
    [
        source_lost_a_case,
        source_gained_a_case,
        source_test_label_changed,
        output_dataset_json_deleted,
        output_label_deleted,
        output_test_label_deleted,
        output_moved_with_a_forged_manifest,
        output_retyped_with_a_forged_manifest,
    ],
)
def test_verify_reports_every_difference_from_the_source_once(tmp_path, source, protectors, capsys, change):
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    expected = change(source, out)
    capsys.readouterr()
    assert main(["verify", str(out), "--source", str(source)]) == 3
    assert sorted(capsys.readouterr().out.splitlines()[:-1]) == sorted(expected)


def test_verify_checks_test_cases_without_a_label_against_the_source(tmp_path, source, protectors, capsys):
    (source / "labelsTs" / "case003.nii.gz").unlink()
    out = tmp_path / "out"
    assert protect(source, out, protectors[0]) == 0
    capsys.readouterr()
    assert main(["verify", str(out), "--source", str(source)]) == 0, capsys.readouterr().out
    (source / "imagesTs" / "case003_0000.nii.gz").write_bytes(b"changed")
    assert main(["verify", str(out), "--source", str(source)]) == 3
    assert f"{out / 'imagesTs' / 'case003_0000.nii.gz'}: differs from the source" in capsys.readouterr().out
