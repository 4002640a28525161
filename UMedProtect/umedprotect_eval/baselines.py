"""Baseline protection methods, adapted to segmentation, at the same budget as UMed.

Every method works slice-wise along the coarsest axis (as UMed), only on slices that contain ROI
(slices without ROI stay bit-identical, as with UMed), in the units of the case's intensity window:
the perturbation is bounded by epsilon/255 of the window and rounded to the input dtype with
:func:`intensity.apply_change`, so |protected - original| <= budget holds after rounding.

Where each method may change pixels (documented choice):
- ``lsp``, ``ar``, ``em``, ``tap``, ``sep``: the whole slice, as in their original image-wide
  form. For LSP and AR the pixels inside and outside the ROI are two classes, each with its own
  noise (UMed's adaptation rule); EM, TAP and SEP use a per-pixel Dice + CE loss of a surrogate U-Net.
- ``random``: uniform noise in [-epsilon, epsilon] inside the ROI only (a floor).

Recipes (see shared/research/anchors.md), reduced to CPU-sized settings:
- EM (Huang et al. 2021), sample-wise min-min: a surrogate trained from scratch alternates with
  sign-PGD steps that *minimise* its loss on the true labels, through victim-like augmentation.
- TAP (Fowl et al. 2021): a surrogate pre-trained on clean slices; targeted sign-PGD toward
  permuted labels (binary: foreground and background swapped; multi-class: (y+1) mod K).
- SEP (Chen et al. 2023), plain checkpoint ensemble: checkpoints of one clean surrogate run; the
  same targeted loss averaged over the checkpoints (no SVRG).
- LSP (Yu et al. 2022): per class a fixed random pattern of 8x8 patches plus per-image Gaussian
  variation, scaled to the budget.
- AR (Sandoval-Segura et al. 2022): per class a causal 3x3 autoregressive process started from
  Gaussian noise, drawn in 32x32 tiles (the size the paper's processes are made and checked at: over
  a whole 512-pixel slice most coefficient sets diverge), scaled to the budget.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import lfilter

from umedprotect.array_protection import ProtectionResult, check_inputs, make_result, slice_axis_for
from umedprotect.augment import AugmentSettings, augment_batch
from umedprotect.devices import resolve_device
from umedprotect.errors import InputError
from umedprotect.intensity import apply_change, intensity_window, normalize
from umedprotect.losses import dice_ce_loss
from umedprotect.networks import UNet2d
from umedprotect.settings import OPTIONS
from umedprotect.slices import SliceSample, crop_or_pad, patch_origin

METHOD_NAMES = ("em", "tap", "lsp", "ar", "sep", "random")
CaseProtector = Callable[..., ProtectionResult]  # case_protector(image, labels, spacing=None)


@dataclass(frozen=True)
class BaselineSettings:
    """Surrogate and optimisation settings of the baselines (CPU-sized defaults)."""

    surrogate_channels: int = 16
    surrogate_levels: int = 3
    surrogate_steps: int = 150  # clean pre-training (TAP, SEP)
    surrogate_lr: float = 2e-3
    batch_size: int = 8
    patch_size: int = 64
    foreground_fraction: float = 0.67
    em_rounds: int = 5
    em_train_steps: int = 10  # surrogate steps per EM round
    em_pgd_steps: int = 3  # perturbation steps per EM round
    pgd_steps: int = 10  # TAP and SEP
    pgd_step_fraction: float = 0.25  # sign step, fraction of epsilon
    sep_checkpoints: int = 4
    lsp_patch: int = 8
    lsp_class_sep: float = 3.0
    pgd_batch: int = 8
    augment: AugmentSettings = field(default_factory=AugmentSettings)


def build_case_protector(
    name: str,
    dataset,
    epsilon: float,
    device: str = "cpu",
    seed: int = 0,
    settings: BaselineSettings | None = None,
) -> CaseProtector:
    """A function ``(image, labels, spacing=None) -> ProtectionResult`` applying baseline ``name``.

    ``dataset`` is an :class:`nnunet.NnUNetDataset`; EM, TAP and SEP train their surrogate on its
    training slices here, once. ``epsilon`` is in 1/255 of each case's intensity window.
    """
    if name not in METHOD_NAMES:
        raise InputError(f"unknown method {name!r} (choose from umed, {', '.join(METHOD_NAMES)})", option="method")
    OPTIONS["epsilon"].check(epsilon)
    settings = settings or BaselineSettings()
    eps = epsilon / 255.0
    if name == "random":
        perturb = _random_perturbation(seed)
    elif name == "lsp":
        perturb = _lsp_perturbation(seed, settings)
    elif name == "ar":
        perturb = _ar_perturbation(seed, settings)
    else:
        perturb = _SurrogatePerturbation(name, dataset, eps, resolve_device(device), seed, settings)

    def case_protector(
        image: np.ndarray, labels: np.ndarray, spacing: Sequence[float] | None = None
    ) -> ProtectionResult:
        return _protect(image, labels, spacing, epsilon, perturb)

    return case_protector


# A perturbation maps (normalised ROI slices (N,H,W), their labels, a case key, epsilon, the case's
# (mean, std) in window units) to (delta, region), both (N,H,W), delta in window units.
Perturbation = Callable[[np.ndarray, np.ndarray, int, float, tuple[float, float]], tuple[np.ndarray, np.ndarray]]


def _protect(image: np.ndarray, labels: np.ndarray, spacing, epsilon: float, perturb) -> ProtectionResult:
    check_inputs(image, labels)
    window = intensity_window(image)
    budget = window.budget(epsilon)
    eps = epsilon / 255.0
    axis = slice_axis_for(spacing, image.ndim)
    move = (lambda a: a[None]) if axis is None else (lambda a: np.moveaxis(a, axis, 0))
    stack, stack_labels = move(image), move(labels)
    indices = [i for i in range(stack.shape[0]) if stack_labels[i].any()]
    delta = np.zeros(image.shape, np.float64)
    region = np.zeros(image.shape, bool)
    if indices:
        key = zlib.crc32(np.ascontiguousarray(image).tobytes())
        stats = ((float(image.mean()) - window.lo) / window.width, max(float(image.std()) / window.width, 1e-3))
        d, r = perturb(normalize(stack[indices], window), stack_labels[indices].astype(np.int64), key, eps, stats)
        move(delta)[indices] = np.clip(d, -eps, eps)
        move(region)[indices] = r
    delta[~region] = 0
    protected = apply_change(image, delta * window.width, budget)
    return make_result(image, protected, region, window, budget, axis, epsilon=epsilon, slices_protected=len(indices))


def _random_perturbation(seed: int) -> Perturbation:
    def perturb(x, labels, key, eps, stats):
        rng = np.random.default_rng([seed, key])
        roi = labels != 0
        return rng.uniform(-eps, eps, x.shape) * roi, roi

    return perturb


def _scale_to_budget(noise: np.ndarray, eps: float) -> np.ndarray:
    """Noise rescaled so that its largest magnitude is ``eps``."""
    peak = np.abs(noise).max()
    return noise * (eps / peak) if peak > 0 else noise


def _compose(class_noise: Callable[[int, tuple[int, int]], np.ndarray], labels: np.ndarray, eps: float):
    """Per slice, background noise outside the ROI and ROI noise inside, each scaled to the budget."""
    delta = np.empty(labels.shape, np.float64)
    for k, lab in enumerate(labels):
        roi = lab != 0
        delta[k] = np.where(
            roi, _scale_to_budget(class_noise(1, lab.shape), eps), _scale_to_budget(class_noise(0, lab.shape), eps)
        )
    return delta, np.ones(labels.shape, bool)


def _lsp_perturbation(seed: int, settings: BaselineSettings) -> Perturbation:
    """Linearly separable patches: a fixed per-class cell pattern plus per-image Gaussian variation."""
    p = settings.lsp_patch
    pattern_rng = np.random.default_rng([seed, 1])
    max_cells = 128  # slices up to 1024 px
    centres = settings.lsp_class_sep * pattern_rng.choice([-1.0, 1.0], size=(2, max_cells, max_cells))

    def perturb(x, labels, key, eps, stats):
        rng = np.random.default_rng([seed, key])

        def class_noise(c: int, shape: tuple[int, int]) -> np.ndarray:
            cells = (-(-shape[0] // p), -(-shape[1] // p))
            if max(cells) > max_cells:
                raise InputError(f"slices larger than {max_cells * p} pixels are not supported by lsp")
            values = centres[c, : cells[0], : cells[1]] + rng.standard_normal(cells)
            return np.kron(values, np.ones((p, p)))[: shape[0], : shape[1]]

        return _compose(class_noise, labels, eps)

    return perturb


AR_TILE = 32  # pixels: each AR draw covers a tile this size, as the paper's 32x32 images
AR_BOUND = 5.0  # a tile drawn from unit Gaussian start values stays within this: the process does not grow


def _ar_coefficients(rng: np.random.Generator) -> np.ndarray:
    """8 causal 3x3 AR coefficients (raster order, centre excluded) summing to 1 whose process does not grow."""
    for _ in range(1000):
        coeffs = rng.standard_normal(8)
        coeffs /= coeffs.sum()
        field_ = _ar_process(coeffs, (AR_TILE, AR_TILE), rng)
        if np.isfinite(field_).all() and np.abs(field_).max() < AR_BOUND:
            return coeffs
    raise RuntimeError("no stable AR coefficients found")


def _ar_field(coeffs: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The AR process over ``shape``: one fresh draw per tile of ``AR_TILE`` pixels, each of unit std."""
    rows, cols = -(-shape[0] // AR_TILE), -(-shape[1] // AR_TILE)
    tiles = [[_ar_process(coeffs, (AR_TILE, AR_TILE), rng) for _ in range(cols)] for _ in range(rows)]
    field_ = np.block([[tile / tile.std() for tile in row] for row in tiles])
    return field_[: shape[0], : shape[1]]


def _ar_process(coeffs: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Causal 3x3 AR process from Gaussian initial values, computed row by row with a linear filter."""
    h, w = shape[0] + 4, shape[1] + 4
    x = rng.standard_normal((h, w))
    # coeffs order: (i-2,j-2) (i-2,j-1) (i-2,j) (i-1,j-2) (i-1,j-1) (i-1,j) (i,j-2) (i,j-1)
    a = coeffs
    for i in range(2, h):
        drive = np.zeros(w)
        drive[2:] = (
            a[0] * x[i - 2, :-2]
            + a[1] * x[i - 2, 1:-1]
            + a[2] * x[i - 2, 2:]
            + a[3] * x[i - 1, :-2]
            + a[4] * x[i - 1, 1:-1]
            + a[5] * x[i - 1, 2:]
        )
        # x[j] = a7 x[j-1] + a6 x[j-2] + drive[j] for j >= 2, with x[0], x[1] kept as initial values
        row = lfilter([1.0], [1.0, -a[7], -a[6]], drive[2:], zi=_ar_initial_state(a, x[i, 0], x[i, 1]))[0]
        x[i, 2:] = row
    return x[4:, 4:]


def _ar_initial_state(a: np.ndarray, x0: float, x1: float) -> np.ndarray:
    """lfilter state so that the recursion continues from x[0] = x0, x[1] = x1."""
    # Direct form II transposed: y[n] = b0 u[n] + z0; z0 = -a1 y[n] + z1 ... with a1 = -a7, a2 = -a6.
    return np.array([a[7] * x1 + a[6] * x0, a[6] * x1])


def _ar_perturbation(seed: int, settings: BaselineSettings) -> Perturbation:
    coeffs = [_ar_coefficients(np.random.default_rng([seed, 2, c])) for c in (0, 1)]

    def perturb(x, labels, key, eps, stats):
        rng = np.random.default_rng([seed, key])
        return _compose(lambda c, shape: _ar_field(coeffs[c], shape, rng), labels, eps)

    return perturb


@dataclass
class _Slice:
    image: np.ndarray  # window units
    labels: np.ndarray  # class indices
    zmean: float  # case statistics in window units (the victim's z-score)
    zstd: float


class _SurrogatePerturbation:
    """EM, TAP and SEP: surrogate U-Net(s) trained on the dataset's training slices, then sign-PGD."""

    def __init__(self, name: str, dataset, eps: float, device: torch.device, seed: int, settings: BaselineSettings):
        from umedprotect.slices import load_slices

        from .evaluation import to_class_indices

        self.name, self.eps, self.device, self.settings = name, eps, device, settings
        self.values = sorted(dataset.label_values)
        self.n_classes = len(self.values)
        samples = to_class_indices(load_slices([c for c in dataset.training if c.label is not None]), self.values)
        if not samples:
            raise InputError(f"{dataset.root}: no training slices with a segmented ROI for the {name} surrogate")
        self.data = [_prepare(s) for s in samples]
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.cache: dict[str, np.ndarray] = {}
        if name == "em":
            self.models = [self._min_min()]
        else:
            model, optimiser = self._new_surrogate()
            every = max(settings.surrogate_steps // settings.sep_checkpoints, 1)
            self.models = []
            for start in range(0, settings.surrogate_steps, every):
                self._train(model, optimiser, min(every, settings.surrogate_steps - start), None)
                if name == "sep":
                    self.models.append(_frozen_copy(model, self.n_classes, settings))
            if name == "tap":
                self.models = [model.eval()]

    def _new_surrogate(self) -> tuple[UNet2d, torch.optim.Optimizer]:
        s = self.settings
        model = UNet2d(1, self.n_classes, s.surrogate_channels, s.surrogate_levels).to(self.device)
        return model, torch.optim.Adam(model.parameters(), lr=s.surrogate_lr)

    def _train(self, model, optimiser, steps: int, deltas: list[np.ndarray] | None) -> None:
        s = self.settings
        model.train()
        for _ in range(steps):
            images, labels, zm, zs = [], [], [], []
            for _ in range(s.batch_size):
                k = int(self.rng.integers(len(self.data)))
                item = self.data[k]
                top, left = patch_origin(item.labels, s.patch_size, self.rng, self.rng.random() < s.foreground_fraction)
                image = item.image if deltas is None else item.image + deltas[k]
                images.append(crop_or_pad(image[None], top, left, s.patch_size, float(item.image.min())))
                labels.append(crop_or_pad(item.labels, top, left, s.patch_size, 0))
                zm.append(item.zmean)
                zs.append(item.zstd)
            x = torch.as_tensor(np.stack(images), dtype=torch.float32, device=self.device)
            y = torch.as_tensor(np.stack(labels), dtype=torch.long, device=self.device)
            mean = torch.as_tensor(zm, dtype=torch.float32, device=self.device).view(-1, 1, 1, 1)
            std = torch.as_tensor(zs, dtype=torch.float32, device=self.device).view(-1, 1, 1, 1)
            x, y = augment_batch((x - mean) / std, y, s.augment, self.generator)
            loss = dice_ce_loss(model(x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        model.eval()

    def _min_min(self) -> UNet2d:
        """EM: alternate surrogate training on x + delta and delta steps minimising its loss."""
        s = self.settings
        model, optimiser = self._new_surrogate()
        deltas = [self.rng.uniform(-self.eps, self.eps, d.image.shape) for d in self.data]
        for _ in range(s.em_rounds):
            self._train(model, optimiser, s.em_train_steps, deltas)
            for k, item in enumerate(self.data):
                deltas[k] = self._pgd(
                    [model], item.image[None], item.labels[None], item.zmean, item.zstd, deltas[k][None], s.em_pgd_steps
                )[0]
        for item, delta in zip(self.data, deltas):
            self.cache[_slice_key(item.image, item.labels)] = delta
        return model

    def _pgd(self, models, x, labels, zmean, zstd, delta, steps: int) -> np.ndarray:
        """Sign-gradient steps on delta (N,H,W) minimising the mean loss of ``models`` toward the target."""
        divisor = models[0].divisor
        h, w = x.shape[-2:]
        pad = (0, (-w) % divisor, 0, (-h) % divisor)
        target = labels if self.name == "em" else _permuted(labels, self.n_classes)
        xt = F.pad(torch.as_tensor(x, dtype=torch.float32, device=self.device)[:, None], pad, mode="replicate")
        yt = F.pad(torch.as_tensor(target, device=self.device), pad)
        d = F.pad(torch.as_tensor(delta, dtype=torch.float32, device=self.device)[:, None], pad)
        step = self.settings.pgd_step_fraction * self.eps
        for _ in range(steps):
            d.requires_grad_(True)
            view, y = augment_batch((xt + d - zmean) / zstd, yt, self.settings.augment, self.generator)
            loss = sum(dice_ce_loss(m(view), y) for m in models) / len(models)
            (grad,) = torch.autograd.grad(loss, d)
            d = (d - step * grad.sign()).clamp(-self.eps, self.eps).detach()
        return d[:, 0, :h, :w].cpu().numpy().astype(np.float64)

    def __call__(
        self, x: np.ndarray, labels: np.ndarray, key: int, eps: float, stats: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        if abs(eps - self.eps) > 1e-12:
            raise ValueError("the protector was built for another epsilon")
        classes = np.searchsorted(self.values, labels)
        delta = np.zeros(x.shape, np.float64)
        mean, std = stats
        todo = []
        for k in range(len(x)):
            cached = self.cache.get(_slice_key(x[k], classes[k]))
            if cached is not None and cached.shape == x[k].shape:
                delta[k] = cached
            else:
                todo.append(k)
        steps = self.settings.em_rounds * self.settings.em_pgd_steps if self.name == "em" else self.settings.pgd_steps
        for start in range(0, len(todo), self.settings.pgd_batch):
            batch = todo[start : start + self.settings.pgd_batch]
            init = np.random.default_rng(key).uniform(-self.eps, self.eps, x[batch].shape)
            delta[batch] = self._pgd(self.models, x[batch], classes[batch], mean, std, init, steps)
        return delta, np.ones(x.shape, bool)


def _prepare(sample: SliceSample) -> _Slice:
    image = normalize(sample.image, sample.window)
    zmean = (sample.mean - sample.window.lo) / sample.window.width
    return _Slice(image, sample.labels, zmean, max(sample.std / sample.window.width, 1e-3))


def _slice_key(image: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha1(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _permuted(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """TAP/SEP targets: binary foreground and background swapped; multi-class (y + 1) mod K."""
    return (labels + 1) % n_classes


def _frozen_copy(model: UNet2d, n_classes: int, settings: BaselineSettings) -> UNet2d:
    copy = UNet2d(1, n_classes, settings.surrogate_channels, settings.surrogate_levels).to(
        next(model.parameters()).device
    )
    copy.load_state_dict(model.state_dict())
    return copy.eval()
