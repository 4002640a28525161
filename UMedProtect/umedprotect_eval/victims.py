"""Victim segmenters an unauthorised trainer might use, built by name.

``unet`` is the project's own 2D U-Net, ``unet3d`` a small built-in 3D one; the others come from
established libraries (nnU-Net's ``dynamic-network-architectures`` and MONAI), imported only when built so the
core install does not need them (``pip install umedprotect[eval]``, plus ``pip install --no-deps
dynamic-network-architectures`` for the nnU-Net networks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from umedprotect.errors import InputError

EVAL_EXTRA_HINT = 'pip install "umedprotect[eval]"'
# dynamic-network-architectures declares timm (hence torchvision and possibly a CUDA torch) as a
# dependency but the U-Nets used here do not import it: install it without dependencies.
NNUNET_HINT = 'pip install "umedprotect[eval]" && pip install --no-deps dynamic-network-architectures'


@dataclass(frozen=True)
class VictimSpec:
    """A victim architecture: how to build it for ``n_classes`` outputs and its size divisor."""

    name: str
    description: str
    divisor: int  # input height and width (and depth) must be multiples of this
    builder: Callable[[int], nn.Module]
    spatial_dims: int = 2  # 2: trained on slices; 3: on 3D patches of the volumes


def _unet(n_classes: int, base_channels: int = 32) -> nn.Module:
    from umedprotect.networks import UNet2d

    return UNet2d(1, n_classes, base_channels=base_channels, levels=4)


def _small_unet(n_classes: int) -> nn.Module:
    return _unet(n_classes, base_channels=16)


class UNet3d(nn.Module):
    """A small 3D U-Net (3 levels; 3x3x3 convolutions, instance norm, leaky ReLU), nnU-Net's building blocks."""

    def __init__(self, n_classes: int, base_channels: int = 16, levels: int = 3) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(levels)]
        self.encoders, self.upsamplers, self.decoders = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        previous = 1
        for width in widths:
            self.encoders.append(_conv_block_3d(previous, width))
            previous = width
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose3d(previous, width, 2, stride=2))
            self.decoders.append(_conv_block_3d(2 * width, width))
            previous = width
        self.head = nn.Conv3d(previous, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(nn.functional.max_pool3d(x, 2) if i else x)
            skips.append(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips[:-1])):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


def _conv_block_3d(in_channels: int, out_channels: int) -> nn.Sequential:
    layers = []
    for channels in (in_channels, out_channels):
        layers += [
            nn.Conv3d(channels, out_channels, 3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        ]
    return nn.Sequential(*layers)


def _unet3d(n_classes: int) -> nn.Module:
    return UNet3d(n_classes)


def _nnunet_kwargs(spatial_dims: int = 2) -> dict:
    """nnU-Net's configuration (3x3(x3) kernels, instance norm, leaky ReLU), 5 stages of 32..320 features."""
    import torch

    return dict(
        input_channels=1,
        n_stages=5,
        features_per_stage=(32, 64, 128, 256, 320),
        conv_op=nn.Conv2d if spatial_dims == 2 else nn.Conv3d,
        kernel_sizes=3,
        strides=(1, 2, 2, 2, 2),
        conv_bias=True,
        norm_op=nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )


def _plain_conv_unet(n_classes: int, spatial_dims: int = 2) -> nn.Module:
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
    except ImportError:
        name = "plainconvunet" + ("3d" if spatial_dims == 3 else "")
        raise InputError(f"victim {name!r} needs dynamic-network-architectures ({NNUNET_HINT})") from None
    return PlainConvUNet(
        num_classes=n_classes, n_conv_per_stage=2, n_conv_per_stage_decoder=2, **_nnunet_kwargs(spatial_dims)
    )


def _plain_conv_unet_3d(n_classes: int) -> nn.Module:
    return _plain_conv_unet(n_classes, spatial_dims=3)


def _residual_encoder_unet(n_classes: int) -> nn.Module:
    try:
        from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    except ImportError:
        raise InputError(f"victim 'resencunet' needs dynamic-network-architectures ({NNUNET_HINT})") from None
    return ResidualEncoderUNet(
        num_classes=n_classes, n_blocks_per_stage=(1, 3, 4, 6, 6), n_conv_per_stage_decoder=1, **_nnunet_kwargs()
    )


def _segresnet(n_classes: int) -> nn.Module:
    try:
        from monai.networks.nets import SegResNet
    except ImportError:
        raise InputError(f"victim 'segresnet' needs MONAI ({EVAL_EXTRA_HINT})") from None
    return SegResNet(spatial_dims=2, in_channels=1, out_channels=n_classes, init_filters=16, blocks_down=(1, 2, 2, 4))


def _basicunet(n_classes: int) -> nn.Module:
    try:
        from monai.networks.nets import BasicUNet
    except ImportError:
        raise InputError(f"victim 'basicunet' needs MONAI ({EVAL_EXTRA_HINT})") from None
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=n_classes, features=(32, 32, 64, 128, 256, 32))


VICTIMS: dict[str, VictimSpec] = {
    spec.name: spec
    for spec in (
        VictimSpec("unet", "UMedProtect's 2D U-Net (4 levels, 32 base channels)", 8, _unet),
        VictimSpec("unet-small", "the same with 16 base channels (about 3x faster: CPU checks)", 8, _small_unet),
        VictimSpec(
            "plainconvunet", "nnU-Net PlainConvUNet, 2D, 5 stages (dynamic-network-architectures)", 16, _plain_conv_unet
        ),
        VictimSpec(
            "resencunet", "nnU-Net ResidualEncoderUNet (ResEnc-M-like), 2D, 5 stages", 16, _residual_encoder_unet
        ),
        VictimSpec("segresnet", "MONAI SegResNet, 2D, 16 initial filters", 8, _segresnet),
        VictimSpec("basicunet", "MONAI BasicUNet, 2D", 16, _basicunet),
        VictimSpec(
            "plainconvunet3d",
            "nnU-Net 3d_fullres-like: PlainConvUNet, 3D, 5 stages, on 3D patches",
            16,
            _plain_conv_unet_3d,
            spatial_dims=3,
        ),
        VictimSpec(
            "unet3d",
            "a small built-in 3D U-Net (3 levels, 16 base channels), on 3D patches",
            4,
            _unet3d,
            spatial_dims=3,
        ),
    )
}


def register_victim(spec: VictimSpec) -> VictimSpec:
    """Make ``spec`` available by its name to :func:`build_victim` and ``evaluate(victims=...)``.

    ``umedprotect evaluate --victim`` offers the victims registered when its parser is built: those of
    the :data:`VICTIMS` table above.
    """
    VICTIMS[spec.name] = spec
    return spec


def victim_spec(name: str) -> VictimSpec:
    """The spec of victim ``name``; InputError for an unknown name."""
    if name not in VICTIMS:
        raise InputError(f"unknown victim {name!r} (choose from {', '.join(VICTIMS)})")
    return VICTIMS[name]


def build_victim(name: str, n_classes: int) -> nn.Module:
    """A freshly initialised victim mapping (B,1,H,W) to (B,n_classes,H,W) logits (3D victims: (B,1,D,H,W))."""
    return victim_spec(name).builder(n_classes)
