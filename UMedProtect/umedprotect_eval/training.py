"""Victim training: one segmenter trained from scratch on 2D slices, tested on clean cases after every epoch.

nnU-Net-like settings: nnU-Net's normalisation (CT: clipping to the 0.5-99.5 percentiles of the training
set's foreground voxels, then z-score with their mean and std; other modalities: per-case z-score), random
patches with foreground oversampling, the victim-like augmentation of :mod:`umedprotect.augment`, Dice + CE
loss, SGD with Nesterov momentum 0.99 (or Adam) and a poly learning-rate decay. The test DSC of a case is the
mean Dice over the foreground labels present in it (3D, over all its slices); an epoch's, the mean over cases.

:class:`VictimTrainer` runs one training. Experiments change it by subclassing and overriding its hooks
(``build_network``, ``normalisation_statistics``, ``on_iteration``, ``on_checkpoint``, ``should_stop``),
not by patching this module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from umedprotect.augment import AugmentSettings, augment_batch
from umedprotect.devices import resolve_device
from umedprotect.errors import InputError
from umedprotect.losses import dice_by_label, dice_ce_loss, nan_mean
from umedprotect.slices import SliceSample, crop_or_pad, ct_statistics, patch_origin
from .victims import build_victim, victim_spec

EpochProgress = Callable[[str, int, int, float], None]  # (run name, epoch, epochs, test DSC)
CtStatistics = tuple[float, float, float, float]  # clip low, clip high, mean, std
NORMALISATIONS = ("zscore", "ct")  # per-case z-score; nnU-Net's CT normalisation
DEFAULT_LEARNING_RATES = {"sgd": 0.01, "adam": 1e-3}  # nnU-Net's SGD; the usual Adam rate
FIT_CHECK_CASES = 8  # training cases segmented after every epoch to check the victim fits its data
GRADIENT_CLIP = 12.0  # nnU-Net's gradient norm clipping


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


@dataclass(frozen=True)
class Checkpoint:
    """A victim's scores at the end of an epoch."""

    epoch: int  # 1-based
    test_dsc: float
    label_dsc: list[float]  # test DSC of each foreground label (nan: in no test case)
    train_dsc: float  # on (up to FIT_CHECK_CASES of) its training cases
    clean_train_dsc: float | None  # on their clean versions; None when not given


@dataclass
class TrainingRun:
    """Test DSC of one victim after every epoch; its DSC on its training cases and on their clean versions."""

    victim: str
    curve: list[float]
    seconds: float
    train_curve: list[float] = field(default_factory=list)
    clean_train_curve: list[float] = field(default_factory=list)
    label_curve: list[list[float]] = field(default_factory=list)  # per epoch: test DSC of each foreground label

    @classmethod
    def from_checkpoints(cls, victim: str, checkpoints: Sequence[Checkpoint], seconds: float) -> TrainingRun:
        return cls(
            victim,
            [c.test_dsc for c in checkpoints],
            seconds,
            [c.train_dsc for c in checkpoints],
            [c.clean_train_dsc for c in checkpoints if c.clean_train_dsc is not None],
            [c.label_dsc for c in checkpoints],
        )

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


class VictimTrainer:
    """Trains ``victim`` from scratch on ``train`` slices (labels 0..n_classes-1) and tests it on ``test`` each epoch.

    ``normalisation``: ``zscore`` (per case) or ``ct`` (see :func:`ct_normalised`).
    ``clean_train``: the clean versions of the (protected) training cases, for the fit check.
    After :meth:`run`, ``model`` is the trained network.
    """

    def __init__(
        self,
        train: Sequence[SliceSample],
        test: Sequence[SliceSample],
        victim: str,
        n_classes: int,
        settings: TrainSettings | None = None,
        normalisation: str = "zscore",
        clean_train: Sequence[SliceSample] | None = None,
    ) -> None:
        settings = settings or TrainSettings()
        if not train:
            raise InputError("no training slices")
        if not test:
            raise InputError("no test slices")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {normalisation!r}")
        if settings.optimizer not in DEFAULT_LEARNING_RATES:
            choices = ", ".join(DEFAULT_LEARNING_RATES)
            raise InputError(f"unknown optimizer {settings.optimizer!r} (choose from {choices})")
        self.spec = victim_spec(victim)
        self.train, self.test, self.clean_train = list(train), list(test), list(clean_train or [])
        self.victim, self.n_classes, self.settings, self.normalisation = victim, n_classes, settings, normalisation
        self.model: torch.nn.Module | None = None

    # -- hooks ------------------------------------------------------------------------------------
    def build_network(self) -> torch.nn.Module:
        """The freshly initialised network (called once, right after seeding torch with the training seed)."""
        return build_victim(self.victim, self.n_classes)

    def normalisation_statistics(self, train: Sequence[SliceSample]) -> CtStatistics:
        """The CT normalisation's clip range, mean and std (nnU-Net's: from the training foreground)."""
        return ct_statistics(train)

    def on_iteration(self, iteration: int, loss: torch.Tensor) -> None:
        """After each training iteration (1-based over the whole run), with its (detached) loss."""

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        """After each epoch's tests."""

    def should_stop(self, checkpoint: Checkpoint) -> bool:
        """Whether to stop after this checkpoint rather than train the remaining epochs."""
        return False

    # -- the training -----------------------------------------------------------------------------
    def run(self, progress: EpochProgress | None = None, run_name: str = "") -> TrainingRun:
        """Train through the epochs of the settings (or until :meth:`should_stop`); the per-epoch scores."""
        settings = self.settings
        train, test, clean_train = self.train, self.test, self.clean_train
        if self.normalisation == "ct":
            statistics = self.normalisation_statistics(train)
            train, test, clean_train = ct_normalised(train, test, clean_train, statistics=statistics)
        self.device = resolve_device(settings.device)
        torch.manual_seed(settings.seed)
        self.model = self.build_network().to(self.device)
        rng = np.random.default_rng(settings.seed)
        augment_rng = torch.Generator().manual_seed(settings.seed)
        patch = math.ceil(settings.patch_size / self.spec.divisor) * self.spec.divisor
        optimiser = _optimiser(self.model, settings)
        total = settings.epochs * settings.iterations_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda it: (1 - it / total) ** 0.9)
        with_roi = [s for s in train if s.labels.any()]
        fit_check = _fit_check_slices(train)
        clean_check = [s for s in clean_train if s.case_id in {s.case_id for s in fit_check}]
        checkpoints: list[Checkpoint] = []
        start = time.time()
        for epoch in range(1, settings.epochs + 1):
            self.model.train()
            for i in range(settings.iterations_per_epoch):
                image, labels = _sample_batch(train, with_roi, patch, settings, rng, self.device)
                loss = self._train_step(*augment_batch(image, labels, settings.augment, augment_rng), optimiser)
                schedule.step()
                self.on_iteration((epoch - 1) * settings.iterations_per_epoch + i + 1, loss)
            checkpoints.append(self._checkpoint(epoch, test, fit_check, clean_check))
            self.on_checkpoint(checkpoints[-1])
            if progress is not None:
                progress(run_name or self.victim, epoch, settings.epochs, checkpoints[-1].test_dsc)
            if self.should_stop(checkpoints[-1]):
                break
        return TrainingRun.from_checkpoints(self.victim, checkpoints, time.time() - start)

    def _train_step(self, image: torch.Tensor, labels: torch.Tensor, optimiser: torch.optim.Optimizer) -> torch.Tensor:
        loss = dice_ce_loss(self.model(image), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRADIENT_CLIP)
        optimiser.step()
        return loss.detach()

    def _checkpoint(
        self,
        epoch: int,
        test: Sequence[SliceSample],
        fit_check: Sequence[SliceSample],
        clean_check: Sequence[SliceSample],
    ) -> Checkpoint:
        """The test scores after ``epoch``, and the fit check on its training cases (and their clean versions)."""
        tested = self._case_dice(test)
        return Checkpoint(
            epoch,
            mean_dsc(tested),
            label_dsc(tested, self.n_classes),
            mean_dsc(self._case_dice(fit_check)),
            mean_dsc(self._case_dice(clean_check)) if clean_check else None,
        )

    def _case_dice(self, samples: Sequence[SliceSample]) -> list[list[float]]:
        batch_size = self.settings.test_batch_size
        return case_dice(self.model, samples, self.n_classes, self.spec.divisor, batch_size, self.device)


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
    """One :class:`VictimTrainer` run with the default hooks."""
    return VictimTrainer(train, test, victim, n_classes, settings, normalisation, clean_train).run(progress, run_name)


def by_case(samples: Sequence[SliceSample]) -> dict[str, list[SliceSample]]:
    """Slices grouped by case id, in slice order."""
    cases: dict[str, list[SliceSample]] = {}
    for s in samples:
        cases.setdefault(s.case_id, []).append(s)
    return {k: sorted(v, key=lambda s: s.index) for k, v in cases.items()}


def ct_normalised(
    train: Sequence[SliceSample], *others: Sequence[SliceSample], statistics: CtStatistics | None = None
) -> tuple[list, ...]:
    """nnU-Net's CT normalisation, statistics from the training foreground (or ``statistics``), applied to every set.

    Images are clipped to the 0.5 and 99.5 percentiles of the training slices' foreground voxels;
    their mean and std become every slice's z-score statistics.
    """
    lo, hi, mean, std = statistics or ct_statistics(train)

    def apply(samples):
        return [replace(s, image=np.clip(s.image, lo, hi).astype(np.float32), mean=mean, std=std) for s in samples]

    return apply(train), *(apply(samples) for samples in others)


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
