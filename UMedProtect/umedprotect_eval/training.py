"""Victim training: one segmenter trained from scratch, tested on clean cases after every epoch.

nnU-Net-like settings: nnU-Net's normalisation (CT: clipping to the 0.5-99.5 percentiles of the training set's
foreground voxels, then z-score with their mean and std; other modalities: per-case z-score), random
patches with foreground oversampling (2D victims: patches of slices; 3D victims: of the volumes), nnU-Net's
augmentation (:data:`umedprotect.augment.NNUNET_AUGMENTATION`), Dice + CE loss, SGD with Nesterov momentum
0.99 (or Adam) and a poly learning-rate decay. The test DSC of a case is the mean Dice over the foreground
labels present in it (3D, over all its slices); an epoch's, the mean over cases. Given validation cases
(held out of the training data), the victim is scored on them too: nnU-Net keeps the checkpoint whose moving
average of that score is best (:data:`CHECKPOINT_RULES`, :func:`nnunet_checkpoint`).

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

from umedprotect.augment import NNUNET_AUGMENTATION, AugmentSettings, augment_batch
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
NNUNET_ITERATIONS_PER_EPOCH = 250
# Which checkpoint a victim is judged by: the last; the one nnU-Net keeps (best moving average of the DSC on
# validation cases held out of its own training data, here the protected data); the oracle (best DSC on the
# clean test cases).
CHECKPOINT_RULES = ("final", "nnunet", "oracle")
NNUNET_EMA_DECAY = 0.9  # nnU-Net's logger: ema_fg_dice = 0.9 * previous + 0.1 * this epoch's pseudo Dice


def nnunet_checkpoint(scores: Sequence[float]) -> int:
    """The 1-based epoch whose checkpoint nnU-Net keeps as ``checkpoint_best``, given each epoch's validation Dice:
    the first epoch at which the exponential moving average of ``scores`` (the first epoch's score to start with;
    decay :data:`NNUNET_EMA_DECAY`) exceeds every earlier one. An epoch without a score (nan) counts as 0."""
    if not scores:
        raise ValueError("no validation scores")
    best_epoch, best, average = 1, -math.inf, None
    for epoch, score in enumerate(scores, start=1):
        score = 0.0 if math.isnan(score) else float(score)
        average = score if average is None else NNUNET_EMA_DECAY * average + (1 - NNUNET_EMA_DECAY) * score
        if average > best:
            best_epoch, best = epoch, average
    return best_epoch


@dataclass(frozen=True)
class TrainSettings:
    """Victim training schedule: nnU-Net's epoch of 250 iterations, 20 epochs (long enough for a clean victim to
    converge on small datasets; check :func:`umedprotect_eval.evaluation.convergence_gain`), CPU-sized patches."""

    epochs: int = 20
    iterations_per_epoch: int = NNUNET_ITERATIONS_PER_EPOCH
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
    augment: AugmentSettings = NNUNET_AUGMENTATION

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
    validation_dsc: float | None = None  # on the validation cases; None when not given


@dataclass
class TrainingRun:
    """Test DSC of one victim after every epoch; its DSC on its training cases and on their clean versions."""

    victim: str
    curve: list[float]
    seconds: float
    train_curve: list[float] = field(default_factory=list)
    clean_train_curve: list[float] = field(default_factory=list)
    label_curve: list[list[float]] = field(default_factory=list)  # per epoch: test DSC of each foreground label
    validation_curve: list[float] = field(default_factory=list)  # per epoch: DSC on the validation cases

    @classmethod
    def from_checkpoints(cls, victim: str, checkpoints: Sequence[Checkpoint], seconds: float) -> TrainingRun:
        return cls(
            victim,
            [c.test_dsc for c in checkpoints],
            seconds,
            [c.train_dsc for c in checkpoints],
            [c.clean_train_dsc for c in checkpoints if c.clean_train_dsc is not None],
            [c.label_dsc for c in checkpoints],
            [c.validation_dsc for c in checkpoints if c.validation_dsc is not None],
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

    @property
    def train_dsc(self) -> float:
        """The fit check after the last epoch (nan: no training case with labels was checked)."""
        return _last(self.train_curve)

    @property
    def clean_train_dsc(self) -> float:
        """The fit check on the clean versions after the last epoch (nan: not given)."""
        return _last(self.clean_train_curve)

    def epoch(self, rule: str) -> int:
        """The 1-based epoch that checkpoint ``rule`` keeps (:data:`CHECKPOINT_RULES`; the first one on ties)."""
        if rule == "final":
            return len(self.curve)
        if rule == "oracle":
            return self.best_epoch
        if rule == "nnunet":
            if not self.validation_curve:
                raise ValueError("the nnunet rule needs validation cases")
            return nnunet_checkpoint(self.validation_curve)
        raise ValueError(f"unknown checkpoint rule {rule!r} (choose from {', '.join(CHECKPOINT_RULES)})")

    def dsc(self, rule: str) -> float:
        """The test DSC of the checkpoint that ``rule`` keeps."""
        return self.curve[self.epoch(rule) - 1]

    def dsc_by_label(self, rule: str) -> list[float]:
        """Each foreground label's test DSC at the checkpoint ``rule`` keeps; the oracle: at each label's best."""
        return self.best_by_label if rule == "oracle" else list(self.label_curve[self.epoch(rule) - 1])

    def to_dict(self) -> dict:
        return {
            "victim": self.victim,
            "best_dsc": self.best,
            "best_epoch": self.best_epoch,
            "final_dsc": self.final,
            "curve": self.curve,
            "best_dsc_by_label": self.best_by_label,
            "label_curve": self.label_curve,
            "train_dsc_final": self.train_dsc,
            "clean_train_dsc_final": self.clean_train_dsc,
            "train_curve": self.train_curve,
            "clean_train_curve": self.clean_train_curve,
            "validation_curve": self.validation_curve,
            **({"nnunet_epoch": self.epoch("nnunet")} if self.validation_curve else {}),
            "seconds": round(self.seconds, 1),
        }


def _last(curve: list[float]) -> float:
    return curve[-1] if curve else float("nan")


class VictimTrainer:
    """Trains ``victim`` from scratch on ``train`` slices (labels 0..n_classes-1) and tests it on ``test`` each epoch.

    ``normalisation``: ``zscore`` (per case) or ``ct`` (see :func:`ct_normalised`).
    ``clean_train``: the clean versions of the (protected) training cases, for the fit check.
    ``validation``: cases held out of the training data, scored after every epoch (nnU-Net's checkpoint choice).
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
        validation: Sequence[SliceSample] | None = None,
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
        self.validation = list(validation or [])
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
        train, test, clean_train, validation = self.train, self.test, self.clean_train, self.validation
        if self.normalisation == "ct":
            statistics = self.normalisation_statistics(train)
            train, test, clean_train, validation = ct_normalised(
                train, test, clean_train, validation, statistics=statistics
            )
        self.device = resolve_device(settings.device)
        torch.manual_seed(settings.seed)
        self.model = self.build_network().to(self.device)
        rng = np.random.default_rng(settings.seed)
        augment_rng = torch.Generator().manual_seed(settings.seed)
        patch = math.ceil(settings.patch_size / self.spec.divisor) * self.spec.divisor
        optimiser = _optimiser(self.model, settings)
        total = settings.epochs * settings.iterations_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda it: (1 - it / total) ** 0.9)
        fit_check = _fit_check_slices(train)
        clean_check = [s for s in clean_train if s.case_id in {s.case_id for s in fit_check}]
        if self.spec.spatial_dims == 3:
            train = stack_cases(train)
            depth = math.ceil(max(s.image.shape[0] for s in train) / self.spec.divisor) * self.spec.divisor
            patch_shape = (min(patch, depth), patch, patch)
        with_roi = [s for s in train if s.labels.any()]
        checkpoints: list[Checkpoint] = []
        start = time.time()
        for epoch in range(1, settings.epochs + 1):
            self.model.train()
            for i in range(settings.iterations_per_epoch):
                if self.spec.spatial_dims == 3:
                    image, labels = _sample_volume_batch(train, with_roi, patch_shape, settings, rng, self.device)
                else:
                    image, labels = _sample_batch(train, with_roi, patch, settings, rng, self.device)
                loss = self._train_step(*augment_batch(image, labels, settings.augment, augment_rng), optimiser)
                schedule.step()
                self.on_iteration((epoch - 1) * settings.iterations_per_epoch + i + 1, loss)
            checkpoints.append(self._checkpoint(epoch, test, fit_check, clean_check, validation))
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
        validation: Sequence[SliceSample],
    ) -> Checkpoint:
        """The test scores after ``epoch``, the fit check on its training cases (and their clean versions), the
        validation DSC."""
        tested = self._case_dice(test)
        return Checkpoint(
            epoch,
            mean_dsc(tested),
            label_dsc(tested, self.n_classes),
            mean_dsc(self._case_dice(fit_check)),
            mean_dsc(self._case_dice(clean_check)) if clean_check else None,
            mean_dsc(self._case_dice(validation)) if validation else None,
        )

    def _case_dice(self, samples: Sequence[SliceSample]) -> list[list[float]]:
        if self.spec.spatial_dims == 3:
            tile = math.ceil(self.settings.patch_size / self.spec.divisor) * self.spec.divisor
            return volume_dice(self.model, samples, self.n_classes, self.spec.divisor, tile, self.device)
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
    validation: Sequence[SliceSample] | None = None,
) -> TrainingRun:
    """One :class:`VictimTrainer` run with the default hooks."""
    trainer = VictimTrainer(train, test, victim, n_classes, settings, normalisation, clean_train, validation)
    return trainer.run(progress, run_name)


def by_case(samples: Sequence[SliceSample]) -> dict[str, list[SliceSample]]:
    """Slices grouped by case id, in slice order."""
    cases: dict[str, list[SliceSample]] = {}
    for s in samples:
        cases.setdefault(s.case_id, []).append(s)
    return {k: sorted(v, key=lambda s: s.index) for k, v in cases.items()}


def stack_cases(samples: Sequence[SliceSample]) -> list[SliceSample]:
    """One sample per case whose image and labels are the case's slices stacked into a volume (D,H,W)."""
    return [
        replace(slices[0], image=np.stack([s.image for s in slices]), labels=np.stack([s.labels for s in slices]))
        for slices in by_case(samples).values()
    ]


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
        model.parameters(),
        lr=settings.learning_rate,
        momentum=settings.momentum,
        nesterov=True,
        weight_decay=settings.weight_decay,
    )


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


def _sample_volume_batch(
    volumes: Sequence[SliceSample],
    with_roi: Sequence[SliceSample],
    patch: tuple[int, int, int],
    settings: TrainSettings,
    rng: np.random.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-scored random 3D patches (B,1,D,H,W) of the volumes and their labels (B,D,H,W); padding is the case minimum."""
    images, labels = [], []
    for _ in range(settings.batch_size):
        foreground = bool(with_roi) and rng.random() < settings.foreground_fraction
        v = with_roi[rng.integers(len(with_roi))] if foreground else volumes[rng.integers(len(volumes))]
        if foreground:
            voxels = np.argwhere(v.labels)
            centre = voxels[rng.integers(len(voxels))] + [rng.integers(-n // 4, n // 4 + 1) for n in patch]
        else:
            centre = np.array([rng.integers(n) for n in v.labels.shape])
        origin = [int(c) - n // 2 for c, n in zip(centre, patch)]
        z = _zscore(v.image, v)
        images.append(_crop_or_pad_nd(z, origin, patch, float(z.min()))[None])
        labels.append(_crop_or_pad_nd(v.labels, origin, patch, 0))
    return (
        torch.as_tensor(np.stack(images), dtype=torch.float32, device=device),
        torch.as_tensor(np.stack(labels), dtype=torch.long, device=device),
    )


def _crop_or_pad_nd(array: np.ndarray, origin: Sequence[int], size: Sequence[int], fill: float) -> np.ndarray:
    """The window of ``size`` starting at ``origin`` (may lie partly outside), padded with ``fill``."""
    out = np.full(tuple(size), fill, dtype=array.dtype)
    source, target = [], []
    for start, n, length in zip(origin, size, array.shape):
        lo, hi = max(start, 0), min(start + n, length)
        if hi <= lo:
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - start, hi - start))
    out[tuple(target)] = array[tuple(source)]
    return out


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


@torch.inference_mode()
def volume_dice(
    model: torch.nn.Module,
    test: Sequence[SliceSample],
    n_classes: int,
    divisor: int,
    tile: int,
    device: torch.device | str = "cpu",
) -> list[list[float]]:
    """3D victims: per test case, the Dice of each foreground label; the volume is segmented in tiles of ``tile``
    voxels a side (along an axis shorter than that: the axis padded to the divisor)."""
    model.eval()
    scores = []
    for volume in stack_cases(test):
        z = _zscore(volume.image, volume)
        shape = z.shape
        tiles = [min(tile, math.ceil(n / divisor) * divisor) for n in shape]
        padded_shape = [math.ceil(n / t) * t for n, t in zip(shape, tiles)]
        padded = np.pad(z, [(0, p - n) for p, n in zip(padded_shape, shape)], mode="edge")
        pred = np.zeros(padded_shape, dtype=np.int64)
        for corner in np.ndindex(*[p // t for p, t in zip(padded_shape, tiles)]):
            window = tuple(slice(c * t, (c + 1) * t) for c, t in zip(corner, tiles))
            x = torch.as_tensor(padded[window][None, None], device=device)
            pred[window] = model(x).argmax(dim=1)[0].cpu().numpy()
        crop = tuple(slice(0, n) for n in shape)
        scores.append(dice_by_label(pred[crop], volume.labels, n_classes))
    return scores


def mean_dsc(case_scores: Sequence[Sequence[float]]) -> float:
    """The test DSC: mean over cases of the case's Dice (mean over the foreground labels it contains)."""
    return nan_mean([nan_mean(labels) for labels in case_scores])


def label_dsc(case_scores: Sequence[Sequence[float]], n_classes: int) -> list[float]:
    """Each foreground label's mean Dice over the test cases that contain it."""
    return [nan_mean([labels[k] for labels in case_scores]) for k in range(n_classes - 1)]
