"""Min-min fitting of a protector against a surrogate segmenter, through victim-like augmentation.

Alternates (a) surrogate steps on protected, augmented patches (generators frozen) and (b) generator
steps that *minimise* the surrogate's Dice+CE loss on the same pipeline, plus a visibility penalty.
The surrogate is re-initialised periodically, so the perturbation must stay a shortcut that a
network trained from scratch picks up first, as an unauthorised victim would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from .augment import AugmentSettings, augment_batch
from .devices import resolve_device
from .errors import Cancelled, InputError
from .intensity import normalize
from .losses import dice_ce_loss
from .networks import UNet2d
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
    foreground_fraction: float = 0.67
    objective: str = "min-min"  # or "targeted": error-maximising towards shifted labels, frozen surrogate
    pretrain_steps: int = 300  # "targeted": surrogate steps on clean data before it is frozen
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


FitProgress = Callable[[int, int, dict], None]


def prepare(samples: Sequence[SliceSample], config: ProtectorConfig) -> list[PreparedSlice]:
    """Normalise slices and precompute their region maps once."""
    prepared = []
    for s in samples:
        image = normalize(s.image, s.window)
        maps = region_maps(image, s.labels, config.band_radius, config.texture_floor, config.texture_window)
        zmean = (s.mean - s.window.lo) / s.window.width
        prepared.append(PreparedSlice(image, maps, s.labels, zmean, max(s.std / s.window.width, 1e-3)))
    return prepared


def sample_batch(
    data: Sequence[PreparedSlice], settings: FitSettings, rng: np.random.Generator, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Random patches: (image, maps, labels, origin, zmean, zstd) tensors."""
    p = settings.patch_size
    images, maps, labels, origins, zm, zs = [], [], [], [], [], []
    for _ in range(settings.batch_size):
        s = data[rng.integers(len(data))]
        top, left = patch_origin(s.labels, p, rng, rng.random() < settings.foreground_fraction)
        images.append(crop_or_pad(s.image[None], top, left, p, float(s.image.min())))
        maps.append(crop_or_pad(s.maps, top, left, p, 0.0))
        labels.append(crop_or_pad(s.labels, top, left, p, 0))
        origins.append((top, left))
        zm.append(s.zmean)
        zs.append(s.zstd)
    as_tensor = lambda a, dtype: torch.as_tensor(np.stack(a), dtype=dtype, device=device)  # noqa: E731
    return (
        as_tensor(images, torch.float32),
        as_tensor(maps, torch.float32),
        as_tensor(labels, torch.long),
        as_tensor(origins, torch.long),
        as_tensor(zm, torch.float32).view(-1, 1, 1, 1),
        as_tensor(zs, torch.float32).view(-1, 1, 1, 1),
    )


def fit_protector(
    samples: Sequence[SliceSample],
    config: ProtectorConfig | None = None,
    settings: FitSettings | None = None,
    progress: FitProgress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[Protector, list[dict]]:
    """Fit G_c and G_t on training slices; returns the protector (eval mode, CPU) and the history."""
    config = config or ProtectorConfig()
    settings = settings or FitSettings()
    if not samples:
        raise InputError("no training slices with a segmented ROI to fit on")
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    augment_rng = torch.Generator().manual_seed(settings.seed)
    data = prepare(samples, config)
    n_classes = int(max(s.labels.max() for s in data)) + 1

    protector = Protector(config).to(device).train()
    optimiser_g = torch.optim.Adam(protector.parameters(), lr=settings.generator_lr)

    def new_surrogate() -> tuple[UNet2d, torch.optim.Optimizer]:
        net = UNet2d(1, n_classes, settings.surrogate_channels, 3).to(device).train()
        return net, torch.optim.Adam(net.parameters(), lr=settings.surrogate_lr)

    surrogate, optimiser_s = new_surrogate()
    eps = config.epsilon / 255.0
    targeted = settings.objective == "targeted"
    if settings.objective not in ("min-min", "targeted"):
        raise InputError(f"unknown fitting objective {settings.objective!r} (min-min or targeted)")

    def victim_view(batch, delta):
        image, maps, labels, _, zmean, zstd = batch
        if targeted:  # inside ROI ∪ band, aim at the next class: what the victim should learn instead
            labels = torch.where(maps[:, :2].sum(dim=1) > 0, (labels + 1) % n_classes, labels)
        return augment_batch((image + delta - zmean) / zstd, labels, settings.augment, augment_rng)

    def surrogate_step(protected: bool) -> torch.Tensor:
        """One surrogate update on a fresh batch of clean or protected patches (generators frozen)."""
        nonlocal dice_ema
        batch = sample_batch(data, settings, rng, device)
        image, _, labels, _, zmean, zstd = batch
        with torch.no_grad():
            delta = protector(*batch[:4]) if protected else torch.zeros_like(image)
        x, y = augment_batch((image + delta - zmean) / zstd, labels, settings.augment, augment_rng)
        logits = surrogate(x)
        loss = dice_ce_loss(logits, y)
        optimiser_s.zero_grad(set_to_none=True)
        loss.backward()
        optimiser_s.step()
        dice_ema = 0.9 * dice_ema + 0.1 * _batch_dice(logits.detach(), y)
        return loss.detach()

    dice_ema, loss_s = 0.0, torch.zeros(())
    for _ in range(settings.pretrain_steps if targeted else 0):  # surrogate on clean data, then frozen
        loss_s = surrogate_step(protected=False)
    surrogate.requires_grad_(not targeted)

    history: list[dict] = []
    since_reset = 0
    start = time.time()
    for step in range(1, settings.steps + 1):
        if cancel is not None and cancel():
            raise Cancelled("fitting cancelled")
        if not targeted and since_reset >= settings.surrogate_reset_every:
            surrogate, optimiser_s = new_surrogate()
            dice_ema, since_reset = 0.0, 0
        since_reset += 1
        for _ in range(0 if targeted else settings.surrogate_steps):  # (a) surrogate on protected data
            loss_s = surrogate_step(protected=True)
        batch = sample_batch(data, settings, rng, device)  # (b) generators minimise the same loss
        delta = protector(*batch[:4])
        x, y = victim_view(batch, delta)
        region = (batch[1][:, :2].sum(dim=1, keepdim=True) > 0).float()  # ROI ∪ band
        visibility = ((delta / eps) ** 2).sum() / region.sum().clamp_min(1.0)
        loss_g = dice_ce_loss(surrogate(x), y) + settings.visibility_weight * visibility
        optimiser_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimiser_g.step()
        record = {
            "step": step,
            "surrogate_loss": round(loss_s.item(), 4),
            "generator_loss": round(loss_g.item(), 4),
            "surrogate_dice_ema": round(dice_ema, 4),
            "visibility": round(visibility.item(), 4),
        }
        history.append(record)
        if progress is not None:
            progress(step, settings.steps, record)
        if not targeted and step >= settings.min_steps and since_reset >= 50 and dice_ema >= settings.stop_dice:
            break
    protector = protector.cpu().eval()
    protector.config = replace(
        config,
        training={
            **config.training,
            "cases": sorted({s.case_id for s in samples}),
            "slices": len(samples),
            "classes": n_classes,
            "steps_run": len(history),
            "final": history[-1],
            "seconds": round(time.time() - start, 1),
            "device": str(device),
            "torch": torch.__version__,
            "settings": {k: v for k, v in asdict(settings).items() if k != "augment"},
        },
    )
    return protector, history


def _batch_dice(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Foreground Dice of argmax predictions over the batch."""
    pred = logits.argmax(dim=1)
    fg_pred, fg_true = pred > 0, labels > 0
    inter = (fg_pred & fg_true & (pred == labels)).sum().item()
    denom = fg_pred.sum().item() + fg_true.sum().item()
    return 2 * inter / denom if denom else 1.0


def dataset_slices(dataset_dirs: Sequence[str]) -> list[SliceSample]:
    """Training slices touching the ROI from the labelled training cases of nnU-Net-layout datasets."""
    from .nnunet import read_dataset
    from .slices import load_slices

    samples: list[SliceSample] = []
    for folder in dataset_dirs:
        dataset = read_dataset(folder)
        samples += load_slices([c for c in dataset.training if c.label is not None])
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
