"""The unauthorised-training check: victim training, per-epoch test DSC, evaluate's report and CLI."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import tiny_evaluate_argv, write_nnunet_dataset

from umedprotect.augment import NO_AUGMENTATION
from umedprotect.cli import main
from umedprotect.errors import InputError
from umedprotect.losses import dice_by_label
from umedprotect.slices import case_slices
from umedprotect_eval.evaluation import evaluate, load_evaluation_data, over_seeds, ratio, to_class_indices
from umedprotect_eval.training import (
    TrainingRun,
    TrainSettings,
    VictimTrainer,
    ct_normalised,
    label_dsc,
    mean_dsc,
    train_victim,
)

TINY = TrainSettings(epochs=2, iterations_per_epoch=2, batch_size=2, patch_size=32, device="cpu")


def disk_cases(n: int, seed: int, size: int = 32) -> list:
    """2D cases with one bright disk (label 1) on a noisy dark background: trivially learnable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    samples = []
    for k in range(n):
        cy, cx, r = rng.uniform(10, size - 10), rng.uniform(10, size - 10), rng.uniform(4, 7)
        labels = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        image = (100 + 800.0 * labels + rng.normal(0, 20, labels.shape)).astype(np.float32)
        samples += case_slices(image, labels, None, f"s{seed}c{k}")
    return to_class_indices(samples, [0, 1])


@pytest.mark.slow
def test_victim_learns_a_trivially_learnable_task():
    settings = TrainSettings(
        epochs=3,
        iterations_per_epoch=8,
        batch_size=4,
        patch_size=32,
        learning_rate=0.01,
        augment=NO_AUGMENTATION,
        device="cpu",
    )
    run = train_victim(disk_cases(6, 0), disk_cases(3, 1), "unet", 2, settings)
    assert len(run.curve) == len(run.train_curve) == 3
    assert run.best > 0.5, run.curve
    assert run.train_curve[-1] > 0.5, run.train_curve  # it fits its own training cases too


@pytest.mark.slow
def test_adam_victim_learns_and_unknown_optimizers_are_refused():
    settings = TrainSettings(
        epochs=3,
        iterations_per_epoch=8,
        batch_size=4,
        patch_size=32,
        optimizer="adam",
        learning_rate=3e-3,
        augment=NO_AUGMENTATION,
        device="cpu",
    )
    assert train_victim(disk_cases(6, 0), disk_cases(3, 1), "unet", 2, settings).best > 0.5
    with pytest.raises(InputError, match="unknown optimizer 'rmsprop'"):
        train_victim(disk_cases(2, 0), disk_cases(1, 1), "unet", 2, replace(settings, optimizer="rmsprop"))


def shortcut_cases(n: int, seed: int, size: int = 32) -> tuple[list, list]:
    """Disk labels on noise, (protected) marked only by a dark checkerboard inside the disk, and (clean) not at all."""
    checker = np.indices((size, size)).sum(axis=0) % 2 * -400.0
    protected, clean = [], []
    for s in disk_cases(n, seed, size):
        noise = 100 + np.random.default_rng([seed, len(clean)]).normal(0, 20, s.labels.shape)
        for out, image in ((protected, noise + checker * s.labels), (clean, noise)):
            image = image.astype(np.float32)
            out.append(replace(s, image=image, mean=float(image.mean()), std=float(image.std())))
    return protected, clean


@pytest.mark.slow
def test_fit_check_tells_a_learned_shortcut_from_learned_anatomy():
    """Trained where only a shortcut marks the labels, the victim fits its training cases and fails the test."""
    settings = TrainSettings(
        epochs=3,
        iterations_per_epoch=10,
        batch_size=4,
        patch_size=32,
        optimizer="adam",
        learning_rate=3e-3,
        augment=NO_AUGMENTATION,
        device="cpu",
    )
    train, clean_train = shortcut_cases(6, 0)
    run = train_victim(train, disk_cases(3, 1), "unet", 2, settings, clean_train=clean_train)
    assert run.train_curve[-1] > 0.5, run.train_curve
    assert run.final < 0.5 * run.train_curve[-1], (run.curve, run.train_curve)
    assert run.clean_train_curve[-1] < 0.5 * run.train_curve[-1], run.clean_train_curve
    anatomy = train_victim(disk_cases(6, 0), disk_cases(3, 1), "unet", 2, settings, clean_train=disk_cases(6, 0))
    assert anatomy.clean_train_curve == anatomy.train_curve  # a clean victim's two checks coincide


def test_training_is_deterministic_with_a_seed():
    train, test = disk_cases(3, 0), disk_cases(2, 1)
    first = train_victim(train, test, "unet", 2, TINY)
    second = train_victim(train, test, "unet", 2, TINY)
    assert first.curve == second.curve
    assert len(first.curve) == TINY.epochs


def test_run_summary_and_ratio_math():
    run = TrainingRun("unet", [0.2, 0.8, 0.6], 1.0)
    assert (run.best, run.best_epoch, run.final) == (0.8, 2, 0.6)
    assert ratio(0.08, 0.8) == pytest.approx(0.1)
    assert np.isnan(ratio(0.3, 0.0))


def test_dice_per_label_and_how_cases_and_labels_are_averaged():
    target = np.array([[1, 1, 2, 0], [1, 1, 2, 0]])
    pred = np.array(
        [[1, 0, 2, 2], [1, 0, 3, 0]]
    )  # label 1: 2 of 4 found; label 2: 1 of 2 plus 1 wrong; label 3: absent
    scores = dice_by_label(pred, target, 4)
    assert scores[:2] == [pytest.approx(2 * 2 / (2 + 4)), pytest.approx(2 * 1 / (2 + 2))] and math.isnan(scores[2])
    cases = [[1.0, math.nan], [0.5, 0.0], [math.nan, math.nan]]  # the third case has no foreground: left out
    assert mean_dsc(cases) == pytest.approx((1.0 + 0.25) / 2)
    assert label_dsc(cases, 3) == [pytest.approx(0.75), 0.0]
    assert math.isnan(mean_dsc([[math.nan]]))


def test_each_labels_best_is_taken_at_its_own_best_epoch():
    run = TrainingRun("unet", [0.3, 0.5, 0.4], 1.0, label_curve=[[0.2, math.nan], [0.6, math.nan], [0.4, math.nan]])
    best = run.best_by_label
    assert best[0] == 0.6 and math.isnan(best[1])
    assert run.to_dict()["best_dsc_by_label"] == best and run.to_dict()["label_curve"] == run.label_curve


def test_labels_are_mapped_to_class_indices_and_undeclared_values_refused():
    image = np.zeros((8, 8), np.float32)
    labels = np.zeros((8, 8), np.uint8)
    labels[2:4, 2:4] = 5
    (sample,) = to_class_indices(case_slices(image, labels, None, "c"), [0, 5])
    assert set(np.unique(sample.labels)) == {0, 1}
    with pytest.raises(InputError, match=r"case c: label values \[5\]"):
        to_class_indices(case_slices(image, labels, None, "c"), [0, 1])


def test_ct_normalisation_uses_training_foreground_statistics_for_both_sets():
    train, test = disk_cases(3, 0), disk_cases(2, 1)
    test[0].image[0, 0] = 1e6  # an outlier far outside the training foreground range
    train_n, test_n = ct_normalised(train, test)
    foreground = np.concatenate([s.image[s.labels > 0] for s in train])
    lo, hi = np.percentile(foreground, (0.5, 99.5))
    assert all(s.image.min() >= lo and s.image.max() <= hi for s in train_n + test_n)
    assert test_n[0].image[0, 0] == pytest.approx(hi)
    assert {s.mean for s in train_n + test_n} == {train_n[0].mean}
    assert train_n[0].mean == pytest.approx(np.clip(foreground, lo, hi).mean(), rel=1e-5)
    assert [s.labels.tolist() for s in test_n] == [s.labels.tolist() for s in test]


def _protected_copy(clean, target, change: int = 3):
    """A copy of ``clean`` whose training images change by ``change`` inside the labels."""
    shutil.copytree(clean, target)
    for path in sorted((target / "imagesTr").iterdir()):
        image = sitk.ReadImage(str(path))
        label = sitk.ReadImage(str(target / "labelsTr" / path.name.replace("_0000", "")))
        array = sitk.GetArrayFromImage(image)
        array[sitk.GetArrayViewFromImage(label) > 0] += change
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(path))
    return target


@pytest.fixture
def clean_and_protected(tmp_path):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=3, n_test=1, shape=(32, 32), n_lesions=1)
    return clean, _protected_copy(clean, tmp_path / "protected")


def test_evaluate_reports_dsc_ratio_quality_and_curves(clean_and_protected):
    clean, protected = clean_and_protected
    report = evaluate(clean, protected, settings=TINY, defenses=("blur",))
    assert report["victim_spacing"] is None  # every case on the median grid: nothing resampled
    assert [(r["data"], r["defense"]) for r in report["runs"]] == [
        ("clean", "none"),
        ("protected", "none"),
        ("protected", "blur"),
    ]
    assert all(len(r["curve"]) == len(r["train_curve"]) == TINY.epochs for r in report["runs"])
    row = report["summary"][0]
    assert row["ratio_best"] == pytest.approx(ratio(row["protected_best"], row["clean_best"]), nan_ok=True)
    assert row["clean_best"] == report["runs"][0]["best_dsc"]
    assert row["protected_train_dsc"] == report["runs"][1]["train_dsc_final"] == report["runs"][1]["train_curve"][-1]
    assert row["protected_clean_train_dsc"] == report["runs"][1]["clean_train_curve"][-1]
    assert len(report["runs"][1]["clean_train_curve"]) == TINY.epochs
    assert (report["train_cases"], report["test_cases"], report["classes"]) == (3, 1, 2)
    assert report["normalisation"] == "ct"  # the tiny dataset's channel is named CT
    stats = report["ct_statistics"]
    assert (
        stats["clean"]["clip_low"] < stats["clean"]["mean"] < stats["clean"]["clip_high"] and stats["clean"]["std"] > 0
    )
    assert stats["protected"] != stats["clean"]  # computed from each victim's own training data
    q = report["quality"]
    assert np.isfinite(q["psnr_db_mean"]) and q["ssim_mean"] < 1 and q["max_abs_change"] == 3
    json.dumps(report)  # JSON-ready


def test_evaluate_reports_each_labels_ratio_for_multi_label_datasets(tmp_path, capsys):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=3, n_test=1, shape=(32, 32), n_lesions=2)
    protected = _protected_copy(clean, tmp_path / "protected")
    report = evaluate(clean, protected, settings=TINY)
    assert report["labels"] == ["lesion1", "lesion2"]
    clean_run, protected_run = report["runs"]
    assert all(len(r["label_curve"]) == TINY.epochs and len(r["label_curve"][0]) == 2 for r in report["runs"])
    for run in report["runs"]:  # one test case with both labels: its DSC is the mean of theirs
        assert run["curve"] == [pytest.approx(np.mean(labels)) for labels in run["label_curve"]]
        assert run["best_dsc_by_label"] == [max(epochs) for epochs in zip(*run["label_curve"])]
    row = report["summary"][0]
    assert list(row["ratio_best_by_label"]) == list(row["ratio_final_by_label"]) == ["lesion1", "lesion2"]
    for k, name in enumerate(report["labels"]):
        expected = ratio(protected_run["best_dsc_by_label"][k], clean_run["best_dsc_by_label"][k])
        assert row["ratio_best_by_label"][name] == pytest.approx(expected, nan_ok=True)
        expected = ratio(protected_run["label_curve"][-1][k], clean_run["label_curve"][-1][k])
        assert row["ratio_final_by_label"][name] == pytest.approx(expected, nan_ok=True)
    argv = tiny_evaluate_argv(str(clean), str(protected), "--victim", "unet-small")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ratio by label: final lesion1 " in out and "; oracle (each label's best epoch) lesion1 " in out


def test_evaluation_data_checks(clean_and_protected, tmp_path):
    clean, protected = clean_and_protected
    moved = tmp_path / "clean_no_test"
    shutil.copytree(clean, moved)
    shutil.rmtree(moved / "imagesTs")
    with pytest.raises(InputError, match="no labelled test cases"):
        load_evaluation_data(moved, protected)
    data = load_evaluation_data(moved, protected, test_dir=clean)  # test cases from --test-dir
    assert data.test_source.endswith("imagesTs") and len(data.test) == 1
    label = protected / "labelsTr" / "case000.nii.gz"
    image = sitk.ReadImage(str(label))
    array = sitk.GetArrayFromImage(image)
    array[0, 0] = 1
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(label))
    with pytest.raises(InputError, match="labels of case case000 differ"):
        load_evaluation_data(clean, protected)


def test_cli_evaluate_end_to_end(clean_and_protected, tmp_path, capsys):
    clean, protected = clean_and_protected
    report_path = tmp_path / "report.json"
    argv = tiny_evaluate_argv(str(clean), str(protected), "--optimizer", "adam", "-o", str(report_path))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ratio" in out and "mean PSNR" in out and "prot. fit" in out
    assert "ratio by label" not in out  # one foreground label: the ratio is the label's
    report = json.loads(report_path.read_text())
    assert report["runs"][0]["curve"] and report["summary"][0]["victim"] == "unet"
    assert report["settings"]["optimizer"] == "adam" and report["settings"]["learning_rate"] == 1e-3
    assert main(["evaluate", str(clean), str(tmp_path / "missing")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_several_seeds_train_every_victim_once_per_seed_and_report_the_spread(clean_and_protected, capsys):
    clean, protected = clean_and_protected
    trained_with = []

    class RecordingTrainer(VictimTrainer):
        def run(self, *args):
            trained_with.append(self.settings.seed)
            return super().run(*args)

    report = evaluate(clean, protected, settings=TINY, seeds=(0, 1), trainer=RecordingTrainer)
    assert report["seeds"] == [0, 1] and trained_with == [0, 0, 1, 1]
    assert [(r["data"], r["seed"]) for r in report["runs"]] == [
        ("clean", 0),
        ("protected", 0),
        ("clean", 1),
        ("protected", 1),
    ]
    assert [row["seed"] for row in report["summary"]] == [0, 1]
    assert report["over_seeds"] == over_seeds(report["summary"])
    assert "over_seeds" not in evaluate(clean, protected, settings=TINY)
    argv = tiny_evaluate_argv(str(clean), str(protected), "--seed", "3", "4")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "over seeds 3, 4: ratio mean final " in out and "<= 0.1 with " in out and " of 2 seeds" in out
    assert main(argv[:-1] + ["3"]) == 2
    assert "--seed values must differ" in capsys.readouterr().err


def _seed_row(seed: int, ratio_best: float, protected_best: float, defense="none", ratio_final=0.5) -> dict:
    """A summary row with the oracle ratio given, the final one ``ratio_final`` and the nnU-Net one 0.05."""
    return {
        "victim": "unet",
        "defense": defense,
        "seed": seed,
        "clean_best": 0.8,
        "protected_best": protected_best,
        "ratio_best": ratio_best,
        "clean_final": 0.8,
        "protected_final": 0.8 * ratio_final,
        "ratio_final": ratio_final,
        "clean_nnunet": 0.8,
        "protected_nnunet": 0.04,
        "ratio_nnunet": 0.05,
    }


def test_over_seeds_gives_mean_and_spread_of_the_defined_ratios_under_each_rule():
    rows = [
        _seed_row(0, 0.2, 0.16),
        _seed_row(1, 0.6, 0.48, ratio_final=0.08),
        _seed_row(2, math.nan, 0.0),
        _seed_row(0, math.nan, 0.0, defense="blur"),
    ]
    plain, blurred = over_seeds(rows)
    assert plain["seeds"] == [0, 1, 2] and plain["ratio_best_mean"] == pytest.approx(0.4)
    assert (plain["ratio_best_min"], plain["ratio_best_max"]) == (0.2, 0.6)
    assert plain["protected_best_mean"] == pytest.approx(0.64 / 3) and plain["clean_best_mean"] == pytest.approx(0.8)
    assert plain["seeds_on_target"] == 0
    assert (plain["seeds_on_target_final"], plain["seeds_on_target_nnunet"]) == (1, 3)
    assert (plain["ratio_final_min"], plain["ratio_final_max"]) == (0.08, 0.5)
    assert over_seeds([{**rows[0], "ratio_best": 0.1}, {**rows[1], "ratio_best": 0.05}])[0]["seeds_on_target"] == 2
    assert blurred["defense"] == "blur" and math.isnan(blurred["ratio_best_mean"])


def test_normalisation_can_be_chosen_instead_of_nnunets(clean_and_protected, tmp_path, capsys):
    clean, protected = clean_and_protected
    used = []

    class RecordingTrainer(VictimTrainer):
        def run(self, *args):
            used.append(self.normalisation)
            return super().run(*args)

    report = evaluate(clean, protected, settings=TINY, normalisation="zscore", trainer=RecordingTrainer)
    assert used == ["zscore", "zscore"] and report["normalisation"] == "zscore" and "ct_statistics" not in report
    with pytest.raises(ValueError, match="unknown normalisation"):
        evaluate(clean, protected, settings=TINY, normalisation="minmax")
    report_path = tmp_path / "report.json"
    argv = tiny_evaluate_argv(str(clean), str(protected), "-o", str(report_path), "--normalisation")

    def normalisation_used(choice: str) -> str:
        assert main(argv + [choice]) == 0
        return json.loads(report_path.read_text())["normalisation"]

    assert normalisation_used("zscore") == "zscore"
    assert normalisation_used("auto") == "ct"  # the tiny dataset's channel is named CT
    assert main(argv + ["minmax"]) == 2
    assert "invalid choice: 'minmax'" in capsys.readouterr().err


def _set_spacing(root, name: str, spacing: tuple[float, float]) -> None:
    for path in (root / "imagesTr" / f"{name}_0000.nii.gz", root / "labelsTr" / f"{name}.nii.gz"):
        image = sitk.ReadImage(str(path))
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(path))


def test_victims_train_on_the_grid_nnunet_resamples_to(clean_and_protected):
    """A case off the median spacing is resampled as nnU-Net does; PSNR stays on the cases' own grids."""
    clean, protected = clean_and_protected
    for root in (clean, protected):
        _set_spacing(root, "case001", (0.6, 0.7))  # x: 0.6 against the median 0.8: 32 -> 24 columns
    own = load_evaluation_data(clean, protected, resample=False)
    data = load_evaluation_data(clean, protected)
    assert own.victim_spacing is None and data.victim_spacing == pytest.approx((0.7, 0.8))
    shapes = {(s.case_id, s.image.shape) for s in data.clean}
    assert shapes == {("case000", (32, 32)), ("case001", (32, 24)), ("case002", (32, 32))}
    assert {s.image.shape for s in data.protected} == {(32, 32), (32, 24)}
    assert {s.image.shape for s in data.test} == {(32, 32)}  # the test case is on the median grid already
    case001 = next(s for s in data.clean if s.case_id == "case001")
    assert set(np.unique(case001.labels)) == {0, 1} and case001.window == next(
        s.window for s in own.clean if s.case_id == "case001"
    )
    assert data.quality == own.quality
