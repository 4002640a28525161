"""Fitting objectives: what the generators minimise and how the surrogate they fit against is kept.

Each objective is a :class:`FittingObjective` subclass registered by name with
:func:`register_objective`; ``umedprotect fit --objective NAME`` and ``FitSettings.objective`` pick one
from :data:`OBJECTIVES`. An objective sees the running fit (:class:`umedprotect.fitting.ProtectorFit`):
its surrogate, its victim-like views of a batch and its settings.

The registered objectives (each plus the fit's visibility penalty):

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
  decides between the shortcut and the anatomy (docs/archive/research-log.md, "The first-epoch race").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from .errors import InputError
from .losses import dice_ce_loss

if TYPE_CHECKING:
    from .fitting import Batch, ProtectorFit

STEPS_SINCE_RESET_TO_STOP = 50  # min-min stops only on a surrogate trained this many steps since its re-initialisation


class FittingObjective:
    """The generator loss of one fitting objective (the visibility penalties are added by the fit).

    Class attributes say how the fit keeps its surrogate: ``fresh_surrogates`` -- never pre-trained on
    clean data, re-initialised every ``surrogate_reset_every`` generator steps (otherwise pre-trained for
    ``pretrain_steps`` and kept); ``trains_surrogate`` -- ``surrogate_steps`` steps on protected data
    before every generator step (otherwise frozen).
    """

    name: ClassVar[str]
    help: ClassVar[str]  # one phrase for ``umedprotect fit --help``
    fresh_surrogates: ClassVar[bool] = True
    trains_surrogate: ClassVar[bool] = True

    def loss(self, fit: ProtectorFit, batch: Batch, delta: torch.Tensor) -> torch.Tensor:
        """The loss of the protected ``batch`` (``delta`` added), differentiable in ``delta``."""
        raise NotImplementedError

    def should_stop(self, fit: ProtectorFit, step: int) -> bool:
        """Whether the fit stops after generator step ``step`` (before ``FitSettings.steps``)."""
        return False


OBJECTIVES: dict[str, type[FittingObjective]] = {}


def register_objective(objective: type[FittingObjective]) -> type[FittingObjective]:
    """Class decorator: make ``objective`` available under its ``name``."""
    OBJECTIVES[objective.name] = objective
    return objective


def objective_for(name: str) -> FittingObjective:
    """The registered objective ``name``; InputError for an unknown one."""
    if name not in OBJECTIVES:
        choices = ", ".join(OBJECTIVES)
        raise InputError(f"unknown fitting objective {name!r} (choose from {choices})", option="objective")
    return OBJECTIVES[name]()


@register_objective
class MinMin(FittingObjective):
    """UMed's: minimise the loss of a surrogate trained alongside, from scratch, on the protected data."""

    name = "min-min"
    help = "error-minimising shortcut against a surrogate trained alongside (UMed)"

    def loss(self, fit: ProtectorFit, batch: Batch, delta: torch.Tensor) -> torch.Tensor:
        x, y = fit.victim_view(batch, delta)
        return dice_ce_loss(fit.surrogate(x), y)

    def should_stop(self, fit: ProtectorFit, step: int) -> bool:
        """Once a fresh surrogate fits the protected data (``stop_dice``), after ``min_steps``."""
        return (
            step >= fit.settings.min_steps
            and fit.since_reset >= STEPS_SINCE_RESET_TO_STOP
            and fit.dice_ema >= fit.settings.stop_dice
        )


@register_objective
class Targeted(FittingObjective):
    """Error-maximising towards shifted labels: inside ROI and band, the next class is what the victim should learn."""

    name = "targeted"
    help = "error-maximising towards the next class against a surrogate pre-trained on clean data"
    fresh_surrogates = False
    trains_surrogate = False

    def loss(self, fit: ProtectorFit, batch: Batch, delta: torch.Tensor) -> torch.Tensor:
        labels = batch[2]
        labels = torch.where(batch[1][:, :2].sum(dim=1) > 0, (labels + 1) % fit.n_classes, labels)
        x, y = fit.victim_view(batch, delta, labels)
        return dice_ce_loss(fit.surrogate(x), y)


@register_objective
class Alignment(FittingObjective):
    """Gradient alignment (Fowl et al.): training on protected patches raises the loss on the clean ones."""

    name = "alignment"
    help = (
        "training gradients on protected data aligned with raising the loss on clean data (Fowl et al.), "
        "against a surrogate pre-trained on clean data"
    )
    fresh_surrogates = False

    def loss(self, fit: ProtectorFit, batch: Batch, delta: torch.Tensor) -> torch.Tensor:
        (clean, protected), labels = fit.paired_views(batch, delta)
        return misalignment(fit.surrogate, (clean, labels), (protected, labels))


@register_objective
class Race(Alignment):
    """Gradient alignment against fresh surrogates in their first steps: a victim's first epoch."""

    name = "race"
    help = "alignment against fresh surrogates in their first steps on protected data, as a victim's first epoch"
    fresh_surrogates = True


def misalignment(surrogate: torch.nn.Module, clean: tuple, protected: tuple) -> torch.Tensor:
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
