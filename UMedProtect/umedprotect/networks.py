"""Networks: central difference convolution, the perturbation generators, the surrogate U-Net."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CentralDifferenceConv2d(nn.Conv2d):
    """3x3 convolution mixed with its central-difference form (Yu et al., CVPR 2020).

    y = sum w * x(p0 + pn) - theta * x(p0) * sum w ; theta = 0 is a plain convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, theta: float = 0.7) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.theta = theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.theta == 0:
            return out
        centre = F.conv2d(x, self.weight.sum(dim=(2, 3), keepdim=True))
        return out - self.theta * centre


def conv_block(in_channels: int, out_channels: int, cdc_theta: float | None = None) -> nn.Sequential:
    """Two 3x3 convolutions with group norm and leaky ReLU; the first is CDC when ``cdc_theta`` is set."""
    first = (
        CentralDifferenceConv2d(in_channels, out_channels, cdc_theta)
        if cdc_theta is not None
        else nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    )
    return nn.Sequential(
        first,
        nn.GroupNorm(min(4, out_channels), out_channels),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.GroupNorm(min(4, out_channels), out_channels),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UNet2d(nn.Module):
    """A small 2D U-Net. With ``cdc_theta`` its encoder uses central difference convolutions."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int = 16,
        levels: int = 3,
        cdc_theta: float | None = None,
    ) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(levels)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(conv_block(previous, width, cdc_theta))
            previous = width
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(previous, width, 2, stride=2))
            self.decoders.append(conv_block(2 * width, width))
            previous = width
        self.head = nn.Conv2d(previous, out_channels, 1)

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (len(self.encoders) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, encoder in enumerate(self.encoders):
            if i:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips[:-1])):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)
