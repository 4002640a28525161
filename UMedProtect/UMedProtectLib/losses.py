"""Segmentation loss and score."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Cross-entropy + (1 - batch soft Dice over foreground classes), as in nnU-Net."""
    ce = F.cross_entropy(logits, labels)
    probs = logits.softmax(dim=1)[:, 1:]
    onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    dims = (0, 2, 3)
    dice = (2 * (probs * onehot).sum(dims) + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    return ce + (1 - dice.mean())


def dice_score(pred: np.ndarray, target: np.ndarray, n_classes: int) -> float:
    """Mean Dice over the foreground classes present in ``target`` (aggregated over all voxels)."""
    scores = []
    for c in range(1, n_classes):
        t = target == c
        if not t.any():
            continue
        p = pred == c
        scores.append(2 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t)))
    return float(np.mean(scores)) if scores else float("nan")
