"""The per-label shortcut codes in numpy: what a protector whose generators are silent adds, without torch.

:class:`~umedprotect.protector.Protector` computes the same in torch (for fitting, and for protectors with
live generators); a test holds the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .protector_file import BAND_NEGATED_CODES, ProtectorConfig


def code_field(
    codes: np.ndarray,
    code_init: str,
    labels: np.ndarray,
    origin: np.ndarray,
    depth: np.ndarray,
    band_owner: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel code (B,1,H,W) for ``labels`` (B,H,W) whose top-left pixel is at ``origin`` (B,2).

    ``depth``: each pixel's depth below its label's edge (``rings`` codes interpolate their periodic
    profile over it); ``band_owner``: the label owning each contour-band pixel, where ``fill`` and ``dots``
    codes continue outside the labels with the opposite sign.
    """
    n, period = codes.shape[0], codes.shape[1]
    sign = np.float32(1.0)
    if code_init in BAND_NEGATED_CODES and band_owner is not None:
        outside = (labels == 0) & (band_owner > 0)
        labels = np.where(outside, np.round(band_owner).astype(np.int64), labels)
        sign = np.where(outside, np.float32(-1.0), np.float32(1.0))[:, None]
    index = np.where(labels > 0, 1 + (labels - 1) % (n - 1), 0)
    if codes.ndim == 2:  # rings
        position = np.remainder(depth, np.float32(period))
        below = np.floor(position).astype(np.int64) % period
        weight = position - np.floor(position)
        return ((1 - weight) * codes[index, below] + weight * codes[index, (below + 1) % period])[:, None]
    h, w = labels.shape[-2:]
    rows = (origin[:, 0:1] + np.arange(h)) % period
    cols = (origin[:, 1:2] + np.arange(w)) % period
    return sign * codes[index, rows[:, :, None], cols[:, None, :]][:, None]


@dataclass(frozen=True)
class CodePerturbation:
    """The change a protector with silent generators makes: ``tanh(code)`` in the band and under the texture bound."""

    config: ProtectorConfig
    codes: np.ndarray  # float32, ProtectorConfig.code_shape()

    def __call__(
        self, image_norm: np.ndarray, maps: np.ndarray, labels: np.ndarray, origin: tuple[int, int], epsilon: float
    ) -> np.ndarray:
        """Change in window units (B,H,W) for region ``maps`` (B,5,H,W) of ``labels`` (B,H,W) at ``origin``
        (``image_norm``, the crops, is what live generators would see: the codes do not)."""
        eps = np.float32(epsilon / 255.0)
        starts = np.broadcast_to(np.asarray(origin, dtype=np.int64), (len(labels), 2))
        code = code_field(self.codes, self.config.code_init, labels.astype(np.int64), starts, maps[:, 3], maps[:, 4])
        shortcut = np.tanh(code[:, 0])
        return eps * shortcut * maps[:, 1] + eps * maps[:, 2] * shortcut
