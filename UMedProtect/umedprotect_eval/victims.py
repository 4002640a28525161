"""Victim segmenters an unauthorised trainer might use, built by name.

``unet`` is the project's own 2D U-Net; the others come from established libraries (nnU-Net's
``dynamic-network-architectures`` and MONAI), imported only when built so the core install does
not need them (``pip install umedprotect[eval]``, plus ``pip install --no-deps
dynamic-network-architectures`` for the nnU-Net networks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    divisor: int  # input height and width must be multiples of this
    builder: Callable[[int], nn.Module]


def _unet(n_classes: int, base_channels: int = 32) -> nn.Module:
    from umedprotect.networks import UNet2d

    return UNet2d(1, n_classes, base_channels=base_channels, levels=4)


def _small_unet(n_classes: int) -> nn.Module:
    return _unet(n_classes, base_channels=16)


def _nnunet_kwargs() -> dict:
    """nnU-Net's 2D configuration (3x3 kernels, instance norm, leaky ReLU), 5 stages of 32..320 features."""
    import torch

    return dict(
        input_channels=1,
        n_stages=5,
        features_per_stage=(32, 64, 128, 256, 320),
        conv_op=nn.Conv2d,
        kernel_sizes=3,
        strides=(1, 2, 2, 2, 2),
        conv_bias=True,
        norm_op=nn.InstanceNorm2d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )


def _plain_conv_unet(n_classes: int) -> nn.Module:
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
    except ImportError:
        raise InputError(f"victim 'plainconvunet' needs dynamic-network-architectures ({NNUNET_HINT})") from None
    return PlainConvUNet(
        num_classes=n_classes, n_conv_per_stage=2, n_conv_per_stage_decoder=2, **_nnunet_kwargs()
    )


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
        VictimSpec("plainconvunet", "nnU-Net PlainConvUNet, 2D, 5 stages (dynamic-network-architectures)", 16, _plain_conv_unet),
        VictimSpec("resencunet", "nnU-Net ResidualEncoderUNet (ResEnc-M-like), 2D, 5 stages", 16, _residual_encoder_unet),
        VictimSpec("segresnet", "MONAI SegResNet, 2D, 16 initial filters", 8, _segresnet),
        VictimSpec("basicunet", "MONAI BasicUNet, 2D", 16, _basicunet),
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
    """A freshly initialised victim mapping (B,1,H,W) to (B,n_classes,H,W) logits."""
    return victim_spec(name).builder(n_classes)
