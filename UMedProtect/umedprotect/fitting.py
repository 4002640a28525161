"""Fitting a protector against a surrogate segmenter, through victim-like augmentation.

The generators minimise an objective of :mod:`umedprotect.objectives` (``min-min``, UMed's, by default)
plus a visibility penalty.

The surrogate sees what a victim sees: the victim's normalisation (CT datasets: nnU-Net's clipping
and foreground statistics; otherwise per-case z-score), computed as the victim would on the
protected data, and augmentation.

Under ``torchrun`` the fit is data-parallel (:mod:`umedprotect.ddp`): every rank draws the same global
batch and fits on its share, DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from . import ddp
from .augment import AugmentSettings, augment_batch
from .devices import resolve_device
from .errors import Cancelled, InputError
from .intensity import normalize
from .losses import dice_ce_loss
from .networks import UNet2d
from .objectives import Alignment, objective_for
from .protector import Protector, ProtectorConfig
from .regions import region_maps
from .slices import SliceSample, crop_or_pad, patch_origin


@dataclass(frozen=True)
class FitSettings:
    """Fitting schedule; defaults are CPU-friendly."""

    steps: int = 800  # generator steps at most
    batch_size: int = 16
    patch_size: int = 96
    generator_lr: float = 2e-3
    surrogate_lr: float = 2e-3
    surrogate_steps: int = 2  # surrogate steps per generator step
    surrogate_channels: int = 16
    surrogate_reset_every: int = 200  # generator steps between surrogate re-initialisations
    visibility_weight: float = 0.002  # weight of mean (delta/epsilon)^2 in the generator loss
    offset_weight: float = (
        0.0  # weight of the squared mean change inside each patch's ROI (in epsilon): against a uniform shift
    )
    freeze_codes: bool = False  # fit the generators only; the shortcut codes keep their initial pattern
    foreground_fraction: float = 0.67
    objective: str = "min-min"  # a name in objectives.OBJECTIVES
    pretrain_steps: int = 300  # "targeted", "alignment": surrogate steps on clean data first
    stop_dice: float = 0.95  # stop once a fresh surrogate reaches this training Dice...
    min_steps: int = 200  # ...and at least this many generator steps were taken
    seed: int = 0
    device: str = "auto"
    augment: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass
class PreparedSlice:
    image: np.ndarray  # window units
    maps: np.ndarray  # (3, H, W): roi, band, texture bound
    labels: np.ndarray
    zmean: float  # case mean in window units (the victim's z-score statistics)
    zstd: float
    clip: tuple[float, float]  # the victim's clipping range in window units (infinite: none)


FitProgress = Callable[[int, int, dict], None]
Batch = tuple[torch.Tensor, ...]  # (image, maps, labels, origin, zmean, zstd, clip): see sample_batch
MIN_STATISTICS_PIXELS = 64  # a patch's statistics follow its perturbation only with this many pixels in their region


def prepare(samples: Sequence[SliceSample], config: ProtectorConfig) -> list[PreparedSlice]:
    """Normalise slices and precompute their region maps once."""
    prepared = []
    for s in samples:
        image = normalize(s.image, s.window)
        maps = region_maps(image, s.labels, config.band_radius, config.texture_floor, config.texture_window)
        zmean = (s.mean - s.window.lo) / s.window.width
        lo, hi = s.clip or (-np.inf, np.inf)
        clip = ((lo - s.window.lo) / s.window.width, (hi - s.window.lo) / s.window.width)
        prepared.append(PreparedSlice(image, maps, s.labels, zmean, max(s.std / s.window.width, 1e-3), clip))
    return prepared


def sample_batch(
    data: Sequence[PreparedSlice], settings: FitSettings, rng: np.random.Generator, device: torch.device
) -> Batch:
    """Random patches: (image, maps, labels, origin, zmean, zstd, clip) tensors; clip is (B,2,1,1)."""
    p = settings.patch_size
    images, maps, labels, origins, zm, zs, clips = [], [], [], [], [], [], []
    for _ in range(settings.batch_size):
        s = data[rng.integers(len(data))]
        top, left = patch_origin(s.labels, p, rng, rng.random() < settings.foreground_fraction)
        images.append(crop_or_pad(s.image[None], top, left, p, float(s.image.min())))
        maps.append(crop_or_pad(s.maps, top, left, p, 0.0))
        labels.append(crop_or_pad(s.labels, top, left, p, 0))
        origins.append((top, left))
        zm.append(s.zmean)
        zs.append(s.zstd)
        clips.append(s.clip)

    def as_tensor(a, dtype):
        return torch.as_tensor(np.stack(a), dtype=dtype, device=device)

    return (
        as_tensor(images, torch.float32),
        as_tensor(maps, torch.float32),
        as_tensor(labels, torch.long),
        as_tensor(origins, torch.long),
        as_tensor(zm, torch.float32).view(-1, 1, 1, 1),
        as_tensor(zs, torch.float32).view(-1, 1, 1, 1),
        as_tensor(clips, torch.float32).view(-1, 2, 1, 1),
    )


def victim_input(image: torch.Tensor, batch: Batch, delta: torch.Tensor | None = None) -> torch.Tensor:
    """Window-unit patches (plus ``delta``) as the victim normalises them: clipped (CT), then z-scored.

    A victim computes its statistics on the data it is given: with ``delta``, the clean statistics
    follow the change it makes to each patch's statistics region (CT: the foreground, whose
    percentiles and moments nnU-Net uses; otherwise the whole image), differentiably. A uniform
    shift of the organ is then normalised away, as a real victim would, and is no shortcut.
    """
    zmean, zstd, clip = batch[4:7]
    if delta is None:
        return (torch.clamp(image, clip[:, :1], clip[:, 1:]) - zmean) / zstd
    protected = image + delta
    ct = torch.isfinite(clip[:, :1])
    region = torch.where(ct, batch[1][:, :1], torch.ones_like(batch[1][:, :1]))
    count = region.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)

    def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (x * region).sum(dim=(1, 2, 3), keepdim=True) / count
        var = (((x - mean) * region) ** 2).sum(dim=(1, 2, 3), keepdim=True) / count
        return mean, torch.sqrt(var + 1e-12)

    (clean_mean, clean_std), (mean, std) = moments(image), moments(protected)
    enough = (count >= MIN_STATISTICS_PIXELS) & (clean_std > 1e-6)  # else too few pixels to estimate a change
    scale = torch.where(enough, (std / clean_std.clamp_min(1e-6)).clamp(0.5, 2.0), torch.ones_like(std))
    zmean = zmean + torch.where(enough, mean - clean_mean, torch.zeros_like(mean))
    finite = torch.where(ct, clip, torch.zeros_like(clip))  # no inf in the graph: its gradient would be nan
    lo, hi = (torch.where(ct, zmean + (finite[:, i : i + 1] - batch[4]) * scale, clip[:, i : i + 1]) for i in (0, 1))
    return (torch.minimum(torch.maximum(protected, lo), hi) - zmean) / (zstd * scale)


class ProtectorFit:
    """One fit of a protector: the prepared data, the protector and the surrogate it is fitted against, their
    optimisers and the seeded random streams. :meth:`run` takes the steps; the objective says what they minimise."""

    def __init__(self, samples: Sequence[SliceSample], config: ProtectorConfig, settings: FitSettings) -> None:
        if not samples:
            raise InputError("no training slices with a segmented ROI to fit on")
        self.objective = objective_for(settings.objective)
        if ddp.world_size() > 1 and isinstance(self.objective, Alignment):
            raise InputError("gradient alignment needs the whole batch's gradients: fit it in one process", "objective")
        self.samples, self.config, self.settings = samples, config, settings
        self.device = resolve_device(settings.device)
        self.rows = ddp.share(settings.batch_size)  # this process's share of each global batch
        torch.manual_seed(settings.seed)
        self.rng = np.random.default_rng(settings.seed)  # the same global batches in every process
        self.augment_rng = torch.Generator().manual_seed(settings.seed + ddp.rank())  # its own augmentations
        self.data = prepare(samples, config)
        self.n_classes = int(max(s.labels.max() for s in self.data)) + 1
        protector = Protector(config).to(self.device).train()
        fitted = [p for name, p in protector.named_parameters() if not (settings.freeze_codes and name == "codes")]
        self.protector = ddp.parallel(protector)
        self.generator_optimiser = torch.optim.Adam(fitted, lr=settings.generator_lr)
        self.surrogate_loss = torch.zeros(())
        self.reset_surrogate()

    def reset_surrogate(self) -> None:
        """A freshly initialised surrogate U-Net and its optimiser."""
        surrogate = UNet2d(1, self.n_classes, self.settings.surrogate_channels, 3).to(self.device).train()
        self.surrogate = ddp.parallel(surrogate)
        self.surrogate_optimiser = torch.optim.Adam(self.surrogate.parameters(), lr=self.settings.surrogate_lr)
        self.dice_ema = 0.0  # the surrogate's training Dice, smoothed
        self.since_reset = 0  # generator steps since

    def sample_batch(self) -> Batch:
        """This process's share of the next global batch."""
        batch = sample_batch(self.data, self.settings, self.rng, self.device)
        return batch if ddp.world_size() == 1 else tuple(tensor[self.rows] for tensor in batch)

    def victim_view(
        self, batch: Batch, delta: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The patches plus ``delta`` as a victim trains on them: normalised, augmented (with ``labels``)."""
        labels = batch[2] if labels is None else labels
        return augment_batch(victim_input(batch[0], batch, delta), labels, self.settings.augment, self.augment_rng)

    def paired_views(self, batch: Batch, delta: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """(clean, protected) victim views through the same augmentation, and their labels."""
        both = torch.cat([victim_input(batch[0], batch), victim_input(batch[0], batch, delta)], dim=1)
        x, labels = augment_batch(both, batch[2], self.settings.augment, self.augment_rng)
        return (x[:, :1], x[:, 1:]), labels

    def surrogate_step(self, protected: bool) -> None:
        """One surrogate update on a fresh batch of clean or protected patches (generators frozen)."""
        batch = self.sample_batch()
        with torch.no_grad():
            delta = self.protector(*batch[:4]) if protected else torch.zeros_like(batch[0])
        x, y = self.victim_view(batch, delta)
        logits = self.surrogate(x)
        loss = dice_ce_loss(logits, y)
        self.surrogate_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.surrogate_optimiser.step()
        self.dice_ema = 0.9 * self.dice_ema + 0.1 * _batch_dice(logits.detach(), y)
        self.surrogate_loss = loss.detach()

    def generator_step(self, step: int) -> dict:
        """Generator step ``step`` (after the objective's surrogate steps); its history record."""
        settings = self.settings
        if self.objective.fresh_surrogates and self.since_reset >= settings.surrogate_reset_every:
            self.reset_surrogate()
        self.since_reset += 1
        for _ in range(settings.surrogate_steps if self.objective.trains_surrogate else 0):
            self.surrogate_step(protected=True)
        batch = self.sample_batch()
        delta = self.protector(*batch[:4])
        visibility, offset = _penalties(delta, batch, self.config.epsilon / 255.0)
        loss = (
            self.objective.loss(self, batch, delta)
            + settings.visibility_weight * visibility
            + settings.offset_weight * offset
        )
        self.generator_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.generator_optimiser.step()
        return {
            "step": step,
            "surrogate_loss": round(self.surrogate_loss.item(), 4),
            "generator_loss": round(loss.item(), 4),
            "surrogate_dice_ema": round(self.dice_ema, 4),
            "visibility": round(visibility.item(), 4),
            "offset": round(offset.item(), 4),
        }

    def run(self, progress: FitProgress | None = None, cancel: Callable[[], bool] | None = None) -> list[dict]:
        """Pre-train the surrogate if the objective keeps one, then take the generator steps; the history."""
        if not self.objective.fresh_surrogates:
            for _ in range(self.settings.pretrain_steps):
                self.surrogate_step(protected=False)
        self.surrogate.requires_grad_(self.objective.trains_surrogate)
        if not self.objective.trains_surrogate:
            self.surrogate = ddp.unwrap(self.surrogate)  # frozen: no gradients to average
        history: list[dict] = []
        for step in range(1, self.settings.steps + 1):
            if cancel is not None and cancel():
                raise Cancelled("fitting cancelled")
            history.append(self.generator_step(step))
            if progress is not None:
                progress(step, self.settings.steps, history[-1])
            if self.objective.should_stop(self, step):
                break
        return history

    def fitted_protector(self, history: list[dict], seconds: float) -> Protector:
        """The protector in eval mode on the CPU, its config recording the data and the fit."""
        protector = ddp.unwrap(self.protector).cpu().eval()
        processes = {"processes": ddp.world_size()} if ddp.world_size() > 1 else {}
        protector.config = replace(
            self.config,
            training={
                **self.config.training,
                **processes,
                "cases": sorted({s.case_id for s in self.samples}),
                "slices": len(self.samples),
                "classes": self.n_classes,
                "steps_run": len(history),
                "final": history[-1] if history else {},  # no steps: the codes alone, generators at zero
                "seconds": round(seconds, 1),
                "device": str(self.device),
                "torch": torch.__version__,
                "settings": {k: v for k, v in asdict(self.settings).items() if k != "augment"},
            },
        )
        return protector


def fit_protector(
    samples: Sequence[SliceSample],
    config: ProtectorConfig | None = None,
    settings: FitSettings | None = None,
    progress: FitProgress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[Protector, list[dict]]:
    """Fit G_c and G_t on training slices; returns the protector (eval mode, CPU) and the history."""
    fit = ProtectorFit(samples, config or ProtectorConfig(), settings or FitSettings())
    start = time.time()
    history = fit.run(progress, cancel)
    return fit.fitted_protector(history, time.time() - start), history


def _penalties(delta: torch.Tensor, batch: Batch, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Visibility (mean squared delta/epsilon over ROI and band) and offset (squared mean change in each ROI)."""
    region = (batch[1][:, :2].sum(dim=1, keepdim=True) > 0).float()  # ROI ∪ band
    visibility = ddp.global_sum(((delta / eps) ** 2).sum()) / ddp.global_sum(region.sum()).clamp_min(1.0)
    roi = batch[1][:, :1]
    offset = ((delta * roi).sum(dim=(1, 2, 3)) / roi.sum(dim=(1, 2, 3)).clamp_min(1.0) / eps).pow(2).mean()
    return visibility, offset


def _batch_dice(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Foreground Dice of argmax predictions over the (global) batch."""
    pred = logits.argmax(dim=1)
    fg_pred, fg_true = pred > 0, labels > 0
    inter = ddp.global_sum((fg_pred & fg_true & (pred == labels)).sum()).item()
    denom = ddp.global_sum(fg_pred.sum() + fg_true.sum()).item()
    return 2 * inter / denom if denom else 1.0


def dataset_slices(dataset_dirs: Sequence[str]) -> list[SliceSample]:
    """Training slices touching the ROI from the labelled training cases of nnU-Net-layout datasets.

    Slices of a CT dataset carry nnU-Net's CT normalisation (clipping range and foreground
    statistics of that dataset), as the victim would use it.
    """
    from .nnunet import read_dataset
    from .slices import ct_statistics, load_slices

    samples: list[SliceSample] = []
    for folder in dataset_dirs:
        dataset = read_dataset(folder)
        slices = load_slices([c for c in dataset.training if c.label is not None])
        if dataset.is_ct and slices:
            lo, hi, mean, std = ct_statistics(slices)
            slices = [replace(s, mean=mean, std=std, clip=(lo, hi)) for s in slices]
        samples += slices
    return samples


def fit_on_datasets(
    dataset_dirs: Sequence[str],
    config: ProtectorConfig | None = None,
    settings: FitSettings | None = None,
    progress: FitProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    samples: Sequence[SliceSample] | None = None,
) -> tuple[Protector, list[dict]]:
    """Fit on the training cases of one or more nnU-Net-layout datasets (``samples``: already loaded)."""
    config = replace(config or ProtectorConfig(), training={"datasets": [str(d) for d in dataset_dirs]})
    samples = dataset_slices(dataset_dirs) if samples is None else samples
    return fit_protector(samples, config, settings, progress, cancel)
