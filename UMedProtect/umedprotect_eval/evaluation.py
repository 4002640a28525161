"""The unauthorised-training check: train victims on clean and on protected data, test on clean data.

A victim is trained from scratch on 2D slices (along each case's coarsest axis) with nnU-Net-like
settings: nnU-Net's normalisation (CT, as named in dataset.json's channel_names: clipping to the
0.5-99.5 percentiles of the training set's foreground voxels, then z-score with their mean and
std; other modalities: per-case z-score), random patches with foreground oversampling, the
victim-like augmentation of :mod:`augment`, Dice + CE loss, SGD with Nesterov momentum 0.99 (or
Adam) and a poly learning-rate decay. After every epoch it segments the clean test cases; the test
DSC of a case is the mean Dice over the foreground labels present in it (3D, over all its slices),
and the epoch's DSC is the mean over test cases. The headline is the best epoch.

Two checks beside it, on (up to :data:`FIT_CHECK_CASES` of) the victim's own training cases: the
*fit*, its DSC on them as it was trained on them, and, for a protected victim, its DSC on the clean
versions of the same cases. A victim that does not fit its training data has learned neither the
anatomy nor a shortcut, and its ratio says nothing. A protected victim that fits its protected
cases but fails on their clean versions relies on the perturbation; this is measured on the same
subject and slices, so unlike the test DSC it does not mix in how well the victim generalises.

``evaluate`` trains the same victim (same seed, same schedule, same patches, since the labels are
identical) on the clean and on the protected training cases and reports
ratio = best DSC(protected) / best DSC(clean).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from umedprotect.augment import AugmentSettings, augment_batch
from umedprotect.devices import resolve_device
from umedprotect.errors import InputError
from umedprotect.losses import dice_by_label, dice_ce_loss, nan_mean
from umedprotect.metrics import image_quality
from umedprotect.slices import SliceSample, crop_or_pad, ct_statistics, patch_origin
from .victims import build_victim, victim_spec

EpochProgress = Callable[[str, int, int, float], None]  # (run name, epoch, epochs, test DSC)
NORMALISATIONS = ("zscore", "ct")  # per-case z-score; nnU-Net's CT normalisation
DEFAULT_LEARNING_RATES = {"sgd": 0.01, "adam": 1e-3}  # nnU-Net's SGD; the usual Adam rate
TARGET_RATIO = 0.10  # the protection target: a protected victim's best DSC at most this share of the clean one's
FIT_CHECK_CASES = 8  # training cases segmented after every epoch to check the victim fits its data


@dataclass(frozen=True)
class TrainSettings:
    """Victim training schedule; the defaults are CPU-friendly (a few hundred iterations)."""

    epochs: int = 10
    iterations_per_epoch: int = 25
    batch_size: int = 8
    patch_size: int = 96  # rounded up to a multiple of the victim's divisor
    optimizer: str = "sgd"  # "sgd" (nnU-Net: Nesterov, momentum below) or "adam"
    learning_rate: float | None = None  # None: the optimizer's DEFAULT_LEARNING_RATES entry
    momentum: float = 0.99
    weight_decay: float = 3e-5
    foreground_fraction: float = 0.33  # nnU-Net's oversampling of patches centred on the ROI
    test_batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    augment: AugmentSettings = field(default_factory=AugmentSettings)

    def __post_init__(self) -> None:
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATES.get(self.optimizer))

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "augment"}


@dataclass
class TrainingRun:
    """Test DSC of one victim after every epoch; its DSC on its training cases and on their clean versions."""

    victim: str
    curve: list[float]
    seconds: float
    train_curve: list[float] = field(default_factory=list)
    clean_train_curve: list[float] = field(default_factory=list)
    label_curve: list[list[float]] = field(default_factory=list)  # per epoch: test DSC of each foreground label

    @property
    def final(self) -> float:
        return self.curve[-1]

    @property
    def best(self) -> float:
        return max(self.curve)

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the best test DSC (the first one on ties)."""
        return int(np.argmax(self.curve)) + 1

    @property
    def best_by_label(self) -> list[float]:
        """Each foreground label's best test DSC over the epochs, at its own best epoch (nan: in no test case)."""
        return [max((v for v in epochs if not math.isnan(v)), default=math.nan) for epochs in zip(*self.label_curve)]

    def to_dict(self) -> dict:
        return {
            "victim": self.victim,
            "best_dsc": self.best,
            "best_epoch": self.best_epoch,
            "final_dsc": self.final,
            "curve": self.curve,
            "best_dsc_by_label": self.best_by_label,
            "label_curve": self.label_curve,
            "train_dsc_final": _last(self.train_curve),
            "clean_train_dsc_final": _last(self.clean_train_curve),
            "train_curve": self.train_curve,
            "clean_train_curve": self.clean_train_curve,
            "seconds": round(self.seconds, 1),
        }


def _last(curve: list[float]) -> float:
    return curve[-1] if curve else float("nan")


def ratio(protected: float, clean: float) -> float:
    """DSC(protected-trained) / DSC(clean-trained); NaN when the clean victim learned nothing."""
    return protected / clean if clean > 0 else float("nan")


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


def by_case(samples: Sequence[SliceSample]) -> dict[str, list[SliceSample]]:
    """Slices grouped by case id, in slice order."""
    cases: dict[str, list[SliceSample]] = {}
    for s in samples:
        cases.setdefault(s.case_id, []).append(s)
    return {k: sorted(v, key=lambda s: s.index) for k, v in cases.items()}


def ct_normalised(train: Sequence[SliceSample], *others: Sequence[SliceSample]) -> tuple[list, ...]:
    """nnU-Net's CT normalisation, statistics from the training foreground, applied to every set.

    Images are clipped to the 0.5 and 99.5 percentiles of the training slices' foreground voxels;
    their mean and std become every slice's z-score statistics.
    """
    lo, hi, mean, std = ct_statistics(train)

    def apply(samples):
        return [replace(s, image=np.clip(s.image, lo, hi).astype(np.float32), mean=mean, std=std) for s in samples]

    return apply(train), *(apply(samples) for samples in others)


def _ct_statistics_report(data) -> dict:
    """The CT normalisation each victim derives from its training foreground (clip range, mean, std)."""
    keys = ("clip_low", "clip_high", "mean", "std")
    return {name: dict(zip(keys, ct_statistics(train))) for name, train in (("clean", data.clean), ("protected", data.protected))}


def train_victim(
    train: Sequence[SliceSample],
    test: Sequence[SliceSample],
    victim: str,
    n_classes: int,
    settings: TrainSettings | None = None,
    progress: EpochProgress | None = None,
    run_name: str = "",
    normalisation: str = "zscore",
    clean_train: Sequence[SliceSample] | None = None,
) -> TrainingRun:
    """Train ``victim`` from scratch on ``train`` slices (labels 0..n_classes-1); test on ``test`` each epoch.

    ``normalisation``: ``zscore`` (per case) or ``ct`` (see :func:`ct_normalised`).
    ``clean_train``: the clean versions of the (protected) training cases, for the fit check.
    """
    settings = settings or TrainSettings()
    if not train:
        raise InputError("no training slices")
    if not test:
        raise InputError("no test slices")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}")
    if settings.optimizer not in DEFAULT_LEARNING_RATES:
        raise InputError(f"unknown optimizer {settings.optimizer!r} (choose from {', '.join(DEFAULT_LEARNING_RATES)})")
    clean_train = list(clean_train or [])
    if normalisation == "ct":
        train, test, clean_train = ct_normalised(train, test, clean_train)
    spec = victim_spec(victim)
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    model = build_victim(victim, n_classes).to(device)
    rng = np.random.default_rng(settings.seed)
    augment_rng = torch.Generator().manual_seed(settings.seed)
    patch = math.ceil(settings.patch_size / spec.divisor) * spec.divisor
    optimiser = _optimiser(model, settings)
    total = settings.epochs * settings.iterations_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda it: (1 - it / total) ** 0.9)
    with_roi = [s for s in train if s.labels.any()]
    fit_check = _fit_check_slices(train)
    checked = {s.case_id for s in fit_check}
    clean_check = [s for s in clean_train if s.case_id in checked]
    curve: list[float] = []
    train_curve: list[float] = []
    clean_train_curve: list[float] = []
    label_curve: list[list[float]] = []

    def case_scores(samples: Sequence[SliceSample]) -> list[list[float]]:
        return case_dice(model, samples, n_classes, spec.divisor, settings.test_batch_size, device)

    start = time.time()
    for epoch in range(1, settings.epochs + 1):
        model.train()
        for _ in range(settings.iterations_per_epoch):
            image, labels = _sample_batch(train, with_roi, patch, settings, rng, device)
            image, labels = augment_batch(image, labels, settings.augment, augment_rng)
            loss = dice_ce_loss(model(image), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
            optimiser.step()
            schedule.step()
        tested = case_scores(test)
        curve.append(mean_dsc(tested))
        label_curve.append(label_dsc(tested, n_classes))
        train_curve.append(mean_dsc(case_scores(fit_check)))
        if clean_check:
            clean_train_curve.append(mean_dsc(case_scores(clean_check)))
        if progress is not None:
            progress(run_name or victim, epoch, settings.epochs, curve[-1])
    return TrainingRun(victim, curve, time.time() - start, train_curve, clean_train_curve, label_curve)


def _optimiser(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=settings.learning_rate, momentum=settings.momentum, nesterov=True,
        weight_decay=settings.weight_decay,
    )  # fmt: skip


def _fit_check_slices(train: Sequence[SliceSample]) -> list[SliceSample]:
    """The slices of up to FIT_CHECK_CASES training cases with ROI, evenly spread over the cases."""
    cases = [slices for slices in by_case(train).values() if any(s.labels.any() for s in slices)]
    step = max(1, math.ceil(len(cases) / FIT_CHECK_CASES))
    return [s for slices in cases[::step] for s in slices]


def _sample_batch(
    train: Sequence[SliceSample],
    with_roi: Sequence[SliceSample],
    patch: int,
    settings: TrainSettings,
    rng: np.random.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-scored random patches (B,1,P,P) and their labels (B,P,P); padding is the case minimum."""
    images, labels = [], []
    for _ in range(settings.batch_size):
        foreground = bool(with_roi) and rng.random() < settings.foreground_fraction
        s = with_roi[rng.integers(len(with_roi))] if foreground else train[rng.integers(len(train))]
        top, left = patch_origin(s.labels, patch, rng, foreground)
        z = _zscore(s.image, s)
        images.append(crop_or_pad(z[None], top, left, patch, float(z.min())))
        labels.append(crop_or_pad(s.labels, top, left, patch, 0))
    return (
        torch.as_tensor(np.stack(images), dtype=torch.float32, device=device),
        torch.as_tensor(np.stack(labels), dtype=torch.long, device=device),
    )


def _zscore(image: np.ndarray, sample: SliceSample) -> np.ndarray:
    """Z-score with the sample's statistics (its case's, or the CT normalisation's)."""
    return ((image - sample.mean) / max(sample.std, 1e-6)).astype(np.float32)


@torch.inference_mode()
def case_dice(
    model: torch.nn.Module,
    test: Sequence[SliceSample],
    n_classes: int,
    divisor: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> list[list[float]]:
    """Per test case, the Dice of each foreground label over all its slices (nan where the case lacks the label)."""
    model.eval()
    scores = []
    for samples in by_case(test).values():
        stack = np.stack([_zscore(s.image, s) for s in samples])
        target = np.stack([s.labels for s in samples])
        h, w = stack.shape[-2:]
        pad = (0, (-w) % divisor, 0, (-h) % divisor)
        pred = []
        for start in range(0, len(stack), batch_size):
            x = torch.as_tensor(stack[start : start + batch_size, None], device=device)
            x = F.pad(x, pad, mode="replicate") if any(pad) else x
            pred.append(model(x)[:, :, :h, :w].argmax(dim=1).cpu().numpy())
        scores.append(dice_by_label(np.concatenate(pred), target, n_classes))
    return scores


def mean_dsc(case_scores: Sequence[Sequence[float]]) -> float:
    """The test DSC: mean over cases of the case's Dice (mean over the foreground labels it contains)."""
    return nan_mean([nan_mean(labels) for labels in case_scores])


def label_dsc(case_scores: Sequence[Sequence[float]], n_classes: int) -> list[float]:
    """Each foreground label's mean Dice over the test cases that contain it."""
    return [nan_mean([labels[k] for labels in case_scores]) for k in range(n_classes - 1)]


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


def load_evaluation_data(clean_dir: str | Path, protected_dir: str | Path, test_dir: str | Path | None = None) -> EvaluationData:
    """Read both training sets and the test cases; check they describe the same cases and labels.

    Test cases: the labelled ``imagesTs``/``labelsTs`` of ``clean_dir`` when present, otherwise
    ``test_dir`` (an nnU-Net raw dataset: its labelled test cases, else its training cases).
    """
    from umedprotect.nnunet import read_dataset
    from umedprotect.slices import load_slices

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
    test = to_class_indices(load_slices(test_cases, roi_only=False), values)
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
    normalisation = "ct" if clean_set.is_ct else "zscore"
    names = {value: name for name, value in clean_set.labels.items()}
    label_names = [names[value] for value in values[1:]]
    return EvaluationData(clean, protected, test, len(values), quality, test_source, normalisation, label_names)


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
) -> dict:
    """Train every victim on clean and on protected training cases (and under each defense).

    Returns a JSON-ready report: settings, data summary, visibility of the protection (PSNR/SSIM
    of protected vs clean training images), every run's per-epoch test DSC, and a summary row per
    victim and defense with best/final DSC and ratio = best DSC(protected) / best DSC(clean), and
    that ratio for each foreground label (each label's own best epoch). Defended runs are compared
    with the undefended clean run (the attacker's alternative).
    ``seeds``: train every victim once per seed (default: ``settings.seed``); with several, the
    report adds ``over_seeds``, the mean and spread of each victim's and defense's ratio.
    ``normalisation``: the victims' intensity normalisation (``zscore`` or ``ct``); default: as
    nnU-Net chooses from dataset.json's channel name.
    """
    from .defenses import defend

    settings = settings or TrainSettings()
    seeds = list(seeds) or [settings.seed]
    for name in victims:
        victim_spec(name)
    if normalisation is not None and normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}")
    data = load_evaluation_data(clean_dir, protected_dir, test_dir)
    if normalisation is not None:
        data = replace(data, normalisation=normalisation)
    runs, summary = [], []
    for seed, victim in ((seed, victim) for seed in seeds for victim in victims):
        seeded = replace(settings, seed=seed)
        tag = f" (seed {seed})" if len(seeds) > 1 else ""
        clean_run = train_victim(
            data.clean, data.test, victim, data.n_classes, seeded, progress, f"{victim}/clean{tag}", data.normalisation
        )
        runs.append({"data": "clean", "defense": "none", "seed": seed, **clean_run.to_dict()})
        for defense in ("none", *defenses):
            train, run_settings = defend(defense, data.protected, data.clean, seeded)
            name = f"{victim}/protected" + ("" if defense == "none" else f"+{defense}") + tag
            run = train_victim(
                train, data.test, victim, data.n_classes, run_settings, progress, name, data.normalisation, data.clean
            )
            runs.append({"data": "protected", "defense": defense, "seed": seed, **run.to_dict()})
            summary.append(
                {
                    "victim": victim,
                    "defense": defense,
                    "seed": seed,
                    "clean_best": clean_run.best,
                    "clean_final": clean_run.final,
                    "protected_best": run.best,
                    "protected_final": run.final,
                    "clean_train_dsc": clean_run.train_curve[-1],
                    "protected_train_dsc": run.train_curve[-1],
                    "protected_clean_train_dsc": run.clean_train_curve[-1],
                    "ratio_best": ratio(run.best, clean_run.best),
                    "ratio_final": ratio(run.final, clean_run.final),
                    "ratio_best_by_label": {
                        name: ratio(p, c) for name, p, c in zip(data.label_names, run.best_by_label, clean_run.best_by_label)
                    },
                }
            )
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
        **({"ct_statistics": _ct_statistics_report(data)} if data.normalisation == "ct" else {}),
        "settings": settings.summary(),
        "seeds": seeds,
        "quality": data.quality,
        "summary": summary,
        **({"over_seeds": over_seeds(summary)} if len(seeds) > 1 else {}),
        "runs": runs,
    }


def over_seeds(summary: Sequence[dict]) -> list[dict]:
    """Per victim and defense: how the best-epoch ratio varies with the seed (mean, lowest, highest; nan: none
    defined), and for how many seeds it reached the protection target (ratio ≤ ``TARGET_RATIO``)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in summary:
        groups.setdefault((row["victim"], row["defense"]), []).append(row)
    rows_out = []
    for (victim, defense), rows in groups.items():
        ratios = [row["ratio_best"] for row in rows if math.isfinite(row["ratio_best"])]
        spread = (float(np.mean(ratios)), min(ratios), max(ratios)) if ratios else (math.nan,) * 3
        rows_out.append(
            {
                "victim": victim,
                "defense": defense,
                "seeds": [row["seed"] for row in rows],
                **dict(zip(("ratio_best_mean", "ratio_best_min", "ratio_best_max"), spread)),
                "seeds_on_target": sum(r <= TARGET_RATIO for r in ratios),
                "protected_best_mean": float(np.mean([row["protected_best"] for row in rows])),
                "clean_best_mean": float(np.mean([row["clean_best"] for row in rows])),
            }
        )
    return rows_out
