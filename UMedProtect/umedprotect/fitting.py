"""Fitting a protector against a surrogate segmenter, through victim-like augmentation.

Objectives (each plus a visibility penalty):

- ``min-min`` (UMed's): alternate (a) surrogate steps on protected, augmented patches (generators
  frozen) and (b) generator steps that *minimise* the surrogate's Dice+CE loss on the same
  pipeline. The surrogate is re-initialised periodically, so the perturbation must stay a
  shortcut that a network trained from scratch picks up first, as an unauthorised victim would.
- ``targeted``: error-maximising towards shifted labels against a surrogate pre-trained on clean
  data and then frozen.
- ``alignment`` (gradient alignment, as in Fowl et al.'s secure dataset release): against a
  surrogate pre-trained on clean data, make the training gradient on protected patches point
  where the loss on the *clean* patches rises, so that training on protected data unlearns the
  anatomy. The surrogate keeps training on protected data, as a victim would.
- ``race``: gradient alignment against fresh surrogates in their first steps on protected data,
  re-initialised like min-min's and never pre-trained: the state in which a victim's first epoch
  decides between the shortcut and the anatomy (BENCHMARKS.md, "first-epoch race").

The surrogate sees what a victim sees: the victim's normalisation (CT datasets: nnU-Net's clipping
and foreground statistics; otherwise per-case z-score), computed as the victim would on the
protected data, and augmentation.
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
    offset_weight: float = 0.0  # weight of the squared mean change inside each patch's ROI (in epsilon): against a uniform shift
    freeze_codes: bool = False  # fit the generators only; the shortcut codes keep their initial pattern
    foreground_fraction: float = 0.67
    objective: str = "min-min"  # see OBJECTIVES
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
OBJECTIVES = ("min-min", "targeted", "alignment", "race")
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
) -> tuple[torch.Tensor, ...]:
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
    as_tensor = lambda a, dtype: torch.as_tensor(np.stack(a), dtype=dtype, device=device)  # noqa: E731
    return (
        as_tensor(images, torch.float32),
        as_tensor(maps, torch.float32),
        as_tensor(labels, torch.long),
        as_tensor(origins, torch.long),
        as_tensor(zm, torch.float32).view(-1, 1, 1, 1),
        as_tensor(zs, torch.float32).view(-1, 1, 1, 1),
        as_tensor(clips, torch.float32).view(-1, 2, 1, 1),
    )


def victim_input(image: torch.Tensor, batch: tuple[torch.Tensor, ...], delta: torch.Tensor | None = None) -> torch.Tensor:
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
    fitted = [p for name, p in protector.named_parameters() if not (settings.freeze_codes and name == "codes")]
    optimiser_g = torch.optim.Adam(fitted, lr=settings.generator_lr)

    def new_surrogate() -> tuple[UNet2d, torch.optim.Optimizer]:
        net = UNet2d(1, n_classes, settings.surrogate_channels, 3).to(device).train()
        return net, torch.optim.Adam(net.parameters(), lr=settings.surrogate_lr)

    if settings.objective not in OBJECTIVES:
        raise InputError(f"{settings.objective!r} is not one of {', '.join(OBJECTIVES)}", option="objective")
    surrogate, optimiser_s = new_surrogate()
    eps = config.epsilon / 255.0
    targeted = settings.objective == "targeted"
    alignment = settings.objective in ("alignment", "race")
    from_scratch = settings.objective in ("min-min", "race")  # fresh surrogates, re-initialised periodically

    def victim_view(batch, delta, labels=None):
        labels = batch[2] if labels is None else labels
        return augment_batch(victim_input(batch[0], batch, delta), labels, settings.augment, augment_rng)

    def surrogate_step(protected: bool) -> torch.Tensor:
        """One surrogate update on a fresh batch of clean or protected patches (generators frozen)."""
        nonlocal dice_ema
        batch = sample_batch(data, settings, rng, device)
        with torch.no_grad():
            delta = protector(*batch[:4]) if protected else torch.zeros_like(batch[0])
        x, y = victim_view(batch, delta)
        logits = surrogate(x)
        loss = dice_ce_loss(logits, y)
        optimiser_s.zero_grad(set_to_none=True)
        loss.backward()
        optimiser_s.step()
        dice_ema = 0.9 * dice_ema + 0.1 * _batch_dice(logits.detach(), y)
        return loss.detach()

    def generator_objective(batch, delta) -> torch.Tensor:
        if alignment:  # clean and protected patches through the same augmentation, as two channels
            both = torch.cat([victim_input(batch[0], batch), victim_input(batch[0], batch, delta)], dim=1)
            x, y = augment_batch(both, batch[2], settings.augment, augment_rng)
            return _misalignment(surrogate, (x[:, :1], y), (x[:, 1:], y))
        labels = batch[2]
        if targeted:  # inside ROI ∪ band, aim at the next class: what the victim should learn instead
            labels = torch.where(batch[1][:, :2].sum(dim=1) > 0, (labels + 1) % n_classes, labels)
        x, y = victim_view(batch, delta, labels)
        return dice_ce_loss(surrogate(x), y)

    dice_ema, loss_s = 0.0, torch.zeros(())
    for _ in range(0 if from_scratch else settings.pretrain_steps):  # surrogate on clean data first
        loss_s = surrogate_step(protected=False)
    surrogate.requires_grad_(not targeted)

    history: list[dict] = []
    since_reset = 0
    start = time.time()
    for step in range(1, settings.steps + 1):
        if cancel is not None and cancel():
            raise Cancelled("fitting cancelled")
        if from_scratch and since_reset >= settings.surrogate_reset_every:
            surrogate, optimiser_s = new_surrogate()
            dice_ema, since_reset = 0.0, 0
        since_reset += 1
        for _ in range(0 if targeted else settings.surrogate_steps):  # (a) surrogate on protected data
            loss_s = surrogate_step(protected=True)
        batch = sample_batch(data, settings, rng, device)  # (b) a generator step
        delta = protector(*batch[:4])
        region = (batch[1][:, :2].sum(dim=1, keepdim=True) > 0).float()  # ROI ∪ band
        visibility = ((delta / eps) ** 2).sum() / region.sum().clamp_min(1.0)
        roi = batch[1][:, :1]
        offset = ((delta * roi).sum(dim=(1, 2, 3)) / roi.sum(dim=(1, 2, 3)).clamp_min(1.0) / eps).pow(2).mean()
        loss_g = generator_objective(batch, delta) + settings.visibility_weight * visibility + settings.offset_weight * offset
        optimiser_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimiser_g.step()
        record = {
            "step": step,
            "surrogate_loss": round(loss_s.item(), 4),
            "generator_loss": round(loss_g.item(), 4),
            "surrogate_dice_ema": round(dice_ema, 4),
            "visibility": round(visibility.item(), 4),
            "offset": round(offset.item(), 4),
        }
        history.append(record)
        if progress is not None:
            progress(step, settings.steps, record)
        if settings.objective == "min-min" and step >= settings.min_steps and since_reset >= 50 and dice_ema >= settings.stop_dice:
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
            "final": history[-1] if history else {},  # no steps: the codes alone, generators at zero
            "seconds": round(time.time() - start, 1),
            "device": str(device),
            "torch": torch.__version__,
            "settings": {k: v for k, v in asdict(settings).items() if k != "augment"},
        },
    )
    return protector, history


def _misalignment(surrogate: torch.nn.Module, clean: tuple, protected: tuple) -> torch.Tensor:
    """1 - cosine between the training gradient on ``protected`` and minus the gradient of the loss on ``clean``.

    A descent step along the first then climbs the second: training on the protected patches
    raises the loss on the clean ones. Both arguments are (input, labels) views; the result is
    differentiable in the protected input.
    """
    params = [p for p in surrogate.parameters() if p.requires_grad]
    clean_gradient = torch.autograd.grad(dice_ce_loss(surrogate(clean[0]), clean[1]), params)
    poison = torch.autograd.grad(dice_ce_loss(surrogate(protected[0]), protected[1]), params, create_graph=True)
    dot = sum((-c * g).sum() for c, g in zip(clean_gradient, poison))
    norm = torch.sqrt(sum((c * c).sum() for c in clean_gradient)) * torch.sqrt(sum((g * g).sum() for g in poison))
    return 1 - dot / norm.clamp_min(1e-12)


def _batch_dice(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Foreground Dice of argmax predictions over the batch."""
    pred = logits.argmax(dim=1)
    fg_pred, fg_true = pred > 0, labels > 0
    inter = (fg_pred & fg_true & (pred == labels)).sum().item()
    denom = fg_pred.sum().item() + fg_true.sum().item()
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
