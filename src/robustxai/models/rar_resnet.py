"""The RAR ResNet for GTSRB and Flower17 (seed_rar.md 5.3/5.4): Madry's CIFAR ResNet without batch norm.

Images come in the [0, 1] box; the model multiplies them by ``pixel_scale`` (255: the seed's raw
pixel range) and standardises each image inside itself, so attacks and attributions see raw pixels.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

LEAKY_SLOPE = 0.1
WIDTHS = (16, 16, 32, 64)
STRIDES = (1, 2, 2)


def per_image_standardization(x: Tensor) -> Tensor:
    """``tf.image.per_image_standardization``: ``(x - mean) / max(std, 1/sqrt(N))`` per image, N = C*H*W.

    The population std is used, and the floor is applied to the variance before the square root,
    so a constant image gets a zero (not NaN) gradient.
    """
    flat = x.flatten(1)
    n = flat.shape[1]
    mean = flat.mean(dim=1, keepdim=True)
    var = (flat - mean).square().mean(dim=1, keepdim=True)
    std = var.clamp_min(1.0 / n).sqrt()
    return ((flat - mean) / std).view_as(x)


class PerImageStandardization(nn.Module):
    """Scales [0, 1] images by ``pixel_scale`` and standardises each one (first op of the RAR ResNets)."""

    def __init__(self, pixel_scale: float = 255.0) -> None:
        super().__init__()
        self.pixel_scale = pixel_scale

    def forward(self, x: Tensor) -> Tensor:
        return per_image_standardization(x * self.pixel_scale)

    def extra_repr(self) -> str:
        return f"pixel_scale={self.pixel_scale}"


def tf_same_pads(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one spatial side; the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow 'SAME' padding, as the seed's convolutions.

    For stride 1 this equals ``padding=k//2``; for stride 2 on even sizes TF pads only bottom/right,
    which shifts the sampling grid relative to a symmetric ``padding=1`` (matters for imported weights).
    """

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = tf_same_pads(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = tf_same_pads(x.shape[-1], self.kernel_size[1], self.stride[1])
        return self._conv_forward(F.pad(x, (left, right, top, bottom)), self.weight, self.bias)


def conv3x3(in_channels: int, out_channels: int, stride: int) -> SameConv2d:
    """3x3 convolution, no bias, TF 'SAME' padding."""
    return SameConv2d(in_channels, out_channels, 3, stride=stride, padding=0, bias=False)


class ChannelPadShortcut(nn.Module):
    """Parameter-free shortcut: average-pool by the stride, then zero-pad the channels equally on both sides."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if (out_channels - in_channels) % 2 or out_channels < in_channels:
            raise ValueError(f"the channel-padding shortcut needs an even increase in width, "
                             f"got {in_channels} -> {out_channels}")
        self.pad = (out_channels - in_channels) // 2
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride)
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))


class PreActUnit(nn.Module):
    """Pre-activation residual unit: lrelu -> conv3x3(stride) -> lrelu -> conv3x3, plus the shortcut.

    With ``activate_before_residual`` the shortcut takes the activated input (first unit of stage 1);
    otherwise it takes the raw input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, activate_before_residual: bool,
                 negative_slope: float = LEAKY_SLOPE) -> None:
        super().__init__()
        self.activate_before_residual = activate_before_residual
        self.act1 = nn.LeakyReLU(negative_slope)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.act2 = nn.LeakyReLU(negative_slope)
        self.conv2 = conv3x3(out_channels, out_channels, 1)
        if in_channels != out_channels or stride != 1:
            self.shortcut: nn.Module = ChannelPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.activate_before_residual:
            x = self.act1(x)
            residual = x
        else:
            residual = x
            x = self.act1(x)
        out = self.conv2(self.act2(self.conv1(x)))
        return out + self.shortcut(residual)


class RARResNet(nn.Module):
    """RAR's ResNet (GTSRB: 2 units per stage, Flower17: 1): per-image standardisation, widths 16/16/32/64.

    No batch norm; leaky-ReLU (slope 0.1) activations are ``nn.LeakyReLU`` modules, so a smooth
    surrogate can be swapped in. ``input_size`` is accepted for the task interface; the network is
    fully convolutional with global average pooling and works at any size.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 43, input_size: int = 32,
                 units_per_stage: int = 2, pixel_scale: float = 255.0,
                 negative_slope: float = LEAKY_SLOPE) -> None:
        super().__init__()
        if units_per_stage < 1:
            raise ValueError(f"units_per_stage must be >= 1, got {units_per_stage}")
        if pixel_scale <= 0:
            raise ValueError(f"pixel_scale must be > 0, got {pixel_scale}")
        self.input_size = input_size
        self.standardize = PerImageStandardization(pixel_scale)
        self.init_conv = conv3x3(in_channels, WIDTHS[0], 1)
        units: list[nn.Module] = []
        for stage, stride in enumerate(STRIDES):
            in_width, out_width = WIDTHS[stage], WIDTHS[stage + 1]
            units.append(PreActUnit(in_width, out_width, stride, activate_before_residual=(stage == 0),
                                    negative_slope=negative_slope))
            units += [PreActUnit(out_width, out_width, 1, False, negative_slope)
                      for _ in range(units_per_stage - 1)]
        self.units = nn.Sequential(*units)
        self.final_act = nn.LeakyReLU(negative_slope)
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Seed initialisation: conv N(0, sqrt(2/(9*out))); FC uniform unit scaling (factor 1), zero bias."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (k * module.out_channels)))
            elif isinstance(module, nn.Linear):
                bound = math.sqrt(3.0 / module.in_features)  # tf.uniform_unit_scaling_initializer(1.0)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def decayed_parameter_names(self) -> list[str]:
        """Names of the parameters the seed decays (conv kernels and the FC weight, its 'DW' variables)."""
        layers = (nn.Conv2d, nn.Linear)
        return [f"{name}.weight" for name, module in self.named_modules() if isinstance(module, layers)]

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser parameter groups: ``weight_decay`` on conv/FC weights only, none on the FC bias."""
        decayed = set(self.decayed_parameter_names())
        params = dict(self.named_parameters())
        return [{"params": [p for n, p in params.items() if n in decayed], "weight_decay": weight_decay},
                {"params": [p for n, p in params.items() if n not in decayed], "weight_decay": 0.0}]

    def feature_map(self, x: Tensor) -> Tensor:
        """The final activated feature map ``(N, 64, H/4, W/4)`` (before global pooling)."""
        return self.final_act(self.units(self.init_conv(self.standardize(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.feature_map(x).mean(dim=(2, 3)))


__all__ = ["RARResNet", "per_image_standardization"]
