"""The unauthorised-training check: train victims on clean and on protected data, test on clean data.

Victims are trained by :class:`umedprotect_eval.training.VictimTrainer` (nnU-Net-like settings); after
every epoch they segment the clean test cases. The headline is the best epoch's test DSC.

Two checks beside it, on (up to :data:`~umedprotect_eval.training.FIT_CHECK_CASES` of) the victim's own
training cases: the *fit*, its DSC on them as it was trained on them, and, for a protected victim, its
DSC on the clean versions of the same cases. A victim that does not fit its training data has learned
neither the anatomy nor a shortcut, and its ratio says nothing. A protected victim that fits its
protected cases but fails on their clean versions relies on the perturbation; this is measured on the
same subject and slices, so unlike the test DSC it does not mix in how well the victim generalises.

``evaluate`` trains the same victim (same seed, same schedule, same patches, since the labels are identical) on the
clean and on the protected training cases and reports, for each checkpoint rule of
:data:`~umedprotect_eval.training.CHECKPOINT_RULES`, ratio = DSC(protected) / DSC(clean), each victim's test DSC at
the checkpoint the rule keeps: the final one; the one nnU-Net keeps, best in the moving average of its DSC on
validation cases held out of the victim's own training data (:func:`validation_split`: the same cases for both
victims, so the protected victim is selected on protected data, as an attacker would); the oracle, best on the
clean test cases. Only the first two are available to an attacker; the oracle bounds what early stopping could
achieve. A clean victim whose DSC still rises at the end of its schedule has not converged
(:func:`convergence_gain`): a short schedule mistakes delay for protection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from umedprotect.errors import InputError
from umedprotect.metrics import image_quality
from umedprotect.slices import SliceSample, ct_statistics

from .training import (
    CHECKPOINT_RULES,
    NORMALISATIONS,
    EpochProgress,
    TrainingRun,
    TrainSettings,
    VictimTrainer,
    by_case,
)
from .victims import victim_spec

TARGET_RATIO = 0.10  # the protection target: a protected victim's DSC at most this share of the clean one's
VALIDATION_FRACTION = 0.2  # of the training cases held out for nnU-Net's checkpoint choice (its 5-fold split)
VALIDATION_SEED = 12345  # nnU-Net's seed for its split
CONVERGENCE_TOLERANCE = 0.01  # a clean victim whose validation DSC rose more than this at the end has not converged
RULE_KEYS = {"final": "final", "nnunet": "nnunet", "oracle": "best"}  # summary keys: ratio_final, ratio_nnunet, ...


def ratio(protected: float, clean: float) -> float:
    """DSC(protected-trained) / DSC(clean-trained); NaN when the clean victim learned nothing."""
    return protected / clean if clean > 0 else float("nan")


def validation_split(samples: Sequence[SliceSample]) -> set[tuple[str, int]]:
    """The (case id, slice index) pairs held out for validation: :data:`VALIDATION_FRACTION` of the cases (at least
    one, at least one left to train on; chosen with :data:`VALIDATION_SEED`); with a single case, the block of its
    last slices that holds that fraction of its slices with labels. Empty when nothing can be held out."""
    cases = by_case(samples)
    if len(cases) > 1:
        ids = sorted(cases)
        n = min(max(1, round(VALIDATION_FRACTION * len(ids))), len(ids) - 1)
        held = np.random.default_rng(VALIDATION_SEED).permutation(ids)[:n]
        return {(s.case_id, s.index) for case_id in held for s in cases[str(case_id)]}
    (slices,) = cases.values()
    labelled = [s.index for s in slices if s.labels.any()]
    if len(labelled) < 2:
        return set()
    first = labelled[-max(1, round(VALIDATION_FRACTION * len(labelled)))]
    return {(s.case_id, s.index) for s in slices if s.index >= first}


def split(samples: Sequence[SliceSample], held_out: set[tuple[str, int]]) -> tuple[list, list]:
    """``samples`` without and with the held-out (case id, slice index) pairs: (training, validation)."""
    train = [s for s in samples if (s.case_id, s.index) not in held_out]
    return train, [s for s in samples if (s.case_id, s.index) in held_out]


def convergence_gain(curve: Sequence[float], window: int | None = None) -> float:
    """How much the best of ``curve`` rose over its last ``window`` epochs (default: the last fifth, at least 2);
    nan when the curve is too short to tell."""
    window = window or max(2, math.ceil(len(curve) / 5))
    values = np.nan_to_num(np.asarray(curve, dtype=float), nan=0.0)
    if len(values) <= window:
        return math.nan
    return float(values.max() - values[:-window].max())


def to_class_indices(samples: Sequence[SliceSample], label_values: Sequence[int]) -> list[SliceSample]:
    """Slices whose labels are mapped to 0..C-1 in the order of ``label_values`` (background first)."""
    values = sorted(label_values)
    lookup = np.zeros(max(values) + 1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    out = []
    for s in samples:
        if s.labels.size and (s.labels.min() < 0 or s.labels.max() > values[-1] or not np.isin(s.labels, values).all()):
            unknown = sorted(set(np.unique(s.labels).tolist()) - set(values))
            raise InputError(f"case {s.case_id}: label values {unknown} are not declared in dataset.json")
        out.append(replace(s, labels=lookup[s.labels]))
    return out


def _ct_statistics_report(data) -> dict:
    """The CT normalisation each victim derives from its training foreground (clip range, mean, std)."""
    keys = ("clip_low", "clip_high", "mean", "std")
    return {
        name: dict(zip(keys, ct_statistics(train)))
        for name, train in (("clean", data.clean), ("protected", data.protected))
    }


@dataclass
class EvaluationData:
    """Training slices (clean and protected, same cases), test slices, classes and visibility."""

    clean: list[SliceSample]
    protected: list[SliceSample]
    test: list[SliceSample]
    n_classes: int
    quality: dict
    test_source: str
    normalisation: str  # "ct" when dataset.json names the channel CT, else "zscore"
    label_names: list[str]  # dataset.json's names of the foreground labels, in class-index order
    victim_spacing: tuple[float, ...] | None = None  # what every case was resampled to (None: not resampled)


def load_evaluation_data(
    clean_dir: str | Path, protected_dir: str | Path, test_dir: str | Path | None = None, resample: bool = True
) -> EvaluationData:
    """Read both training sets and the test cases; check they describe the same cases and labels.

    Test cases: the labelled ``imagesTs``/``labelsTs`` of ``clean_dir`` when present, otherwise
    ``test_dir`` (an nnU-Net raw dataset: its labelled test cases, else its training cases).
    ``resample``: where nnU-Net would resample training cases, every case (test cases too) is resampled
    in-plane to the training cases' median spacing as nnU-Net's preprocessing does; the visibility is
    measured on the cases' own grids.
    """
    from umedprotect.nnunet import read_dataset
    from umedprotect.slices import load_slices
    from umedprotect.victim_grid import victim_spacing

    clean_set, protected_set = read_dataset(clean_dir), read_dataset(protected_dir)
    clean_ids = [c.case_id for c in clean_set.training]
    protected_ids = [c.case_id for c in protected_set.training]
    if sorted(clean_ids) != sorted(protected_ids):
        missing = sorted(set(clean_ids) ^ set(protected_ids))
        raise InputError(f"{protected_dir}: training cases differ from {clean_dir} (e.g. {missing[:3]})")
    test_cases = [c for c in clean_set.test if c.label is not None]
    test_source = f"{clean_set.root}/imagesTs"
    if not test_cases:
        if test_dir is None:
            message = f"{clean_dir}: no labelled test cases (imagesTs + labelsTs); give a test dataset"
            raise InputError(message, option="test_dir")
        test_set = read_dataset(test_dir)
        test_cases = [c for c in test_set.test if c.label is not None]
        test_source = f"{test_set.root}/imagesTs"
        if not test_cases:
            test_cases, test_source = test_set.training, f"{test_set.root}/imagesTr"
        overlap = {c.images[0].resolve() for c in test_cases} & {c.images[0].resolve() for c in clean_set.training}
        if overlap:
            raise InputError(f"{test_dir}: test cases include training images of {clean_dir}")
    values = sorted(clean_set.label_values)
    clean = to_class_indices(load_slices(clean_set.training, roi_only=False), values)
    protected = to_class_indices(load_slices(protected_set.training, roi_only=False), values)
    target = victim_spacing(clean_set) if resample else None
    test = to_class_indices(load_slices(test_cases, roi_only=False, target_spacing=target), values)
    clean_cases, protected_cases = by_case(clean), by_case(protected)
    per_case = {}
    for case_id, clean_slices in clean_cases.items():
        protected_slices = protected_cases[case_id]
        a, b = (np.stack([s.image for s in slices]) for slices in (clean_slices, protected_slices))
        if a.shape != b.shape:
            raise InputError(f"{protected_dir}: case {case_id} has a different size than in {clean_dir}")
        if any(not np.array_equal(x.labels, y.labels) for x, y in zip(clean_slices, protected_slices)):
            raise InputError(f"{protected_dir}: labels of case {case_id} differ from {clean_dir}")
        per_case[case_id] = image_quality(a, b)
    quality = {
        "psnr_db_mean": _mean(q["psnr_db"] for q in per_case.values()),
        "ssim_mean": _mean(q["ssim"] for q in per_case.values()),
        "max_abs_change": max(q["max_abs_change"] for q in per_case.values()),
        "cases": per_case,
    }
    if target is not None:  # the visibility above is on the cases' own grids; the victims train on nnU-Net's
        clean, protected = (
            to_class_indices(load_slices(dataset.training, roi_only=False, target_spacing=target), values)
            for dataset in (clean_set, protected_set)
        )
    normalisation = "ct" if clean_set.is_ct else "zscore"
    names = {value: name for name, value in clean_set.labels.items()}
    label_names = [names[value] for value in values[1:]]
    return EvaluationData(clean, protected, test, len(values), quality, test_source, normalisation, label_names, target)


def _mean(values) -> float:
    """Mean over the finite values (an unchanged case has infinite PSNR); inf when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("inf")


def evaluate(
    clean_dir: str | Path,
    protected_dir: str | Path,
    test_dir: str | Path | None = None,
    victims: Sequence[str] = ("unet",),
    defenses: Sequence[str] = (),
    settings: TrainSettings | None = None,
    progress: EpochProgress | None = None,
    seeds: Sequence[int] = (),
    normalisation: str | None = None,
    trainer: type[VictimTrainer] = VictimTrainer,
    resample: bool = True,
) -> dict:
    """Train every victim on clean and on protected training cases (and under each defense).

    Returns a JSON-ready report: settings, data summary, visibility of the protection (PSNR/SSIM
    of protected vs clean training images), every run's per-epoch test and validation DSC, and a
    summary row per victim and defense with, for each checkpoint rule, both victims' DSC and their
    ratio, overall and for each foreground label (see :func:`_summary_row`). Every victim trains
    without the cases of :func:`validation_split` and is validated on them. Defended runs are
    compared with the undefended clean run (the attacker's alternative).
    ``seeds``: train every victim once per seed (default: ``settings.seed``); with several, the
    report adds ``over_seeds``, the mean and spread of each victim's and defense's ratio.
    ``normalisation``: the victims' intensity normalisation (``zscore`` or ``ct``); default: as
    nnU-Net chooses from dataset.json's channel name. ``trainer``: the victim training (a subclass
    of :class:`VictimTrainer` for an experiment). ``resample``: see :func:`load_evaluation_data`; the report's
    ``victim_spacing`` is what the cases were resampled to (null: not resampled). ``warnings`` in the
    report: clean victims that had not converged (:func:`convergence_gain` above
    :data:`CONVERGENCE_TOLERANCE`).
    """
    settings = settings or TrainSettings()
    seeds = list(seeds) or [settings.seed]
    for name in victims:
        victim_spec(name)
    if normalisation is not None and normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}")
    data = load_evaluation_data(clean_dir, protected_dir, test_dir, resample)
    if normalisation is not None:
        data = replace(data, normalisation=normalisation)
    held_out = validation_split(data.clean)
    runs, summary = [], []
    for seed, victim in ((seed, victim) for seed in seeds for victim in victims):
        tag = f" (seed {seed})" if len(seeds) > 1 else ""
        seeded = replace(settings, seed=seed)
        victim_runs, victim_summary = _victim_runs(data, held_out, victim, defenses, seeded, progress, tag, trainer)
        runs += victim_runs
        summary += victim_summary
    return {
        "clean_dir": str(clean_dir),
        "protected_dir": str(protected_dir),
        "test_source": data.test_source,
        "train_cases": len(by_case(data.clean)),
        "train_slices": len(data.clean),
        "test_cases": len(by_case(data.test)),
        "test_slices": len(data.test),
        "classes": data.n_classes,
        "labels": data.label_names,
        "normalisation": data.normalisation,
        "victim_spacing": None if data.victim_spacing is None else list(data.victim_spacing),
        **({"ct_statistics": _ct_statistics_report(data)} if data.normalisation == "ct" else {}),
        "settings": settings.summary(),
        "augmentation": augmentation_name(settings.augment),
        "validation_cases": sorted({case_id for case_id, _ in held_out}),
        "validation_slices": len(held_out),
        "seeds": seeds,
        "quality": data.quality,
        "summary": summary,
        **({"over_seeds": over_seeds(summary)} if len(seeds) > 1 else {}),
        "warnings": convergence_warnings(summary),
        "runs": runs,
    }


def augmentation_name(augment) -> str:
    """The name of an augmentation preset (``umedprotect.augment.AUGMENTATIONS``), or ``custom``."""
    from umedprotect.augment import AUGMENTATIONS

    return next((name for name, preset in AUGMENTATIONS.items() if preset == augment), "custom")


def convergence_warnings(summary: Sequence[dict]) -> list[str]:
    """One line per clean victim (victim and seed) whose validation DSC still rose at the end of its schedule."""
    lines, seen = [], set()
    for row in summary:
        key = (row["victim"], row["seed"])
        gain = row["clean_convergence_gain"]
        if key in seen or (math.isfinite(gain) and gain <= CONVERGENCE_TOLERANCE):
            continue
        seen.add(key)
        rose = f"its validation DSC rose by {gain:.3f} in the last epochs"
        how = "too few epochs to tell" if math.isnan(gain) else rose
        lines.append(
            f"the clean {row['victim']} victim (seed {row['seed']}) had not converged ({how}): train longer "
            "(--epochs); a short schedule mistakes delay for protection"
        )
    return lines


def _victim_runs(
    data: EvaluationData,
    held_out: set[tuple[str, int]],
    victim: str,
    defenses: Sequence[str],
    settings: TrainSettings,
    progress: EpochProgress | None,
    tag: str,
    trainer: type[VictimTrainer],
) -> tuple[list[dict], list[dict]]:
    """One victim with one seed: its clean run, its protected run under each defense; their summary rows.
    Each victim trains without the held-out cases of its training data and is validated on them."""
    from .defenses import defend

    clean_train, clean_validation = split(data.clean, held_out)
    clean_run = trainer(
        clean_train, data.test, victim, data.n_classes, settings, data.normalisation, validation=clean_validation
    ).run(progress, f"{victim}/clean{tag}")
    runs = [{"data": "clean", "defense": "none", "seed": settings.seed, **clean_run.to_dict()}]
    summary = []
    for defense in ("none", *defenses):
        defended, run_settings = defend(defense, data.protected, data.clean, settings)
        train, validation = split(defended, held_out)
        name = f"{victim}/protected" + ("" if defense == "none" else f"+{defense}") + tag
        run = trainer(
            train, data.test, victim, data.n_classes, run_settings, data.normalisation, clean_train, validation
        ).run(progress, name)
        runs.append({"data": "protected", "defense": defense, "seed": settings.seed, **run.to_dict()})
        summary.append(_summary_row(victim, defense, settings.seed, clean_run, run, data.label_names))
    return runs, summary


def _summary_row(
    victim: str, defense: str, seed: int, clean: TrainingRun, protected: TrainingRun, labels: list[str]
) -> dict:
    """For each checkpoint rule (keys: :data:`RULE_KEYS`; ``best`` is the oracle) the DSC of a clean and a protected
    run and their ratio (overall, by label); the fit checks; whether the clean victim converged."""
    row = {"victim": victim, "defense": defense, "seed": seed}
    validated = bool(clean.validation_curve and protected.validation_curve)
    rules = [rule for rule in CHECKPOINT_RULES if rule != "nnunet" or validated]
    for rule in CHECKPOINT_RULES:
        key = RULE_KEYS[rule]
        if rule not in rules:  # nothing could be held out for validation
            row.update(
                {
                    f"clean_{key}": math.nan,
                    f"protected_{key}": math.nan,
                    f"ratio_{key}": math.nan,
                    f"ratio_{key}_by_label": dict.fromkeys(labels, math.nan),
                }
            )
            continue
        row[f"clean_{key}"], row[f"protected_{key}"] = clean.dsc(rule), protected.dsc(rule)
        row[f"ratio_{key}"] = ratio(protected.dsc(rule), clean.dsc(rule))
        by_label = zip(labels, protected.dsc_by_label(rule), clean.dsc_by_label(rule))
        row[f"ratio_{key}_by_label"] = {name: ratio(p, c) for name, p, c in by_label}
    if "nnunet" in rules:
        row["clean_nnunet_epoch"], row["protected_nnunet_epoch"] = clean.epoch("nnunet"), protected.epoch("nnunet")
    return {
        **row,
        "clean_train_dsc": clean.train_dsc,
        "protected_train_dsc": protected.train_dsc,
        "protected_clean_train_dsc": protected.clean_train_dsc,
        "clean_convergence_gain": convergence_gain(clean.validation_curve or clean.train_curve),
    }


def on_target_key(key: str) -> str:
    """The ``over_seeds`` key counting the seeds on target under the rule whose summary key is ``key``."""
    return "seeds_on_target" + ("" if key == "best" else f"_{key}")


def over_seeds(summary: Sequence[dict]) -> list[dict]:
    """Per victim and defense and for each checkpoint rule: how the ratio varies with the seed (mean, lowest,
    highest; nan: none defined), and for how many seeds it reached the protection target (ratio ≤ ``TARGET_RATIO``;
    ``seeds_on_target`` for the oracle, ``seeds_on_target_final`` and ``seeds_on_target_nnunet``)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in summary:
        groups.setdefault((row["victim"], row["defense"]), []).append(row)
    rows_out = []
    for (victim, defense), rows in groups.items():
        out = {"victim": victim, "defense": defense, "seeds": [row["seed"] for row in rows]}
        for key in RULE_KEYS.values():
            ratios = [row[f"ratio_{key}"] for row in rows if math.isfinite(row[f"ratio_{key}"])]
            spread = (float(np.mean(ratios)), min(ratios), max(ratios)) if ratios else (math.nan,) * 3
            out.update(dict(zip((f"ratio_{key}_mean", f"ratio_{key}_min", f"ratio_{key}_max"), spread)))
            out[on_target_key(key)] = sum(r <= TARGET_RATIO for r in ratios)
            out[f"protected_{key}_mean"] = float(np.mean([row[f"protected_{key}"] for row in rows]))
            out[f"clean_{key}_mean"] = float(np.mean([row[f"clean_{key}"] for row in rows]))
        rows_out.append(out)
    return rows_out
