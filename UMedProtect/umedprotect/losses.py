"""Segmentation loss and score."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .ddp import global_sum


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Cross-entropy + (1 - batch soft Dice over foreground classes), as in nnU-Net; 2D or 3D logits (B,C,...).

    In a data-parallel fit the Dice is the global batch's (its sums over the processes).
    """
    ce = F.cross_entropy(logits, labels)
    probs = logits.softmax(dim=1)[:, 1:]
    onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1)[:, 1:].to(probs.dtype)
    dims = (0, *range(2, logits.ndim))
    overlap, total = global_sum((probs * onehot).sum(dims)), global_sum(probs.sum(dims) + onehot.sum(dims))
    dice = (2 * overlap + smooth) / (total + smooth)
    return ce + (1 - dice.mean())


def dice_by_label(pred: np.ndarray, target: np.ndarray, n_classes: int) -> list[float]:
    """Dice of each foreground class 1..n_classes-1 (aggregated over all voxels); nan where ``target`` lacks it."""
    scores = []
    for c in range(1, n_classes):
        t = target == c
        p = pred == c
        scores.append(
            2 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t)) if t.any() else math.nan
        )
    return scores


def nan_mean(values: Sequence[float]) -> float:
    """Mean of the values that are not nan; nan when there are none."""
    present = [v for v in values if not math.isnan(v)]
    return float(np.mean(present)) if present else math.nan
