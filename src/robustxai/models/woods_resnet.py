"""The pre-activation ResNet-44 of Woods et al. (seed 001, spec section 1), key-compatible with its files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from robustxai.models.activations import HalfHuberReLU
from robustxai.models.importers.woods import activation_of, load_woods_file, load_woods_weights

Activation = Literal["relu", "half_huber"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.247, 0.243, 0.261)


def make_activation(activation: Activation) -> nn.Module:
    """A fresh activation module: ``nn.ReLU`` or the half-Huber ReLU (delta 0.5)."""
    if activation == "relu":
        return nn.ReLU()
    if activation == "half_huber":
        return HalfHuberReLU(0.5)
    raise ValueError(f"activation must be 'relu' or 'half_huber', got {activation!r}")


class PreActBlock(nn.Module):
    """act(BN(x)) -> conv3x3(stride) -> BN -> act -> conv3x3, plus a shortcut.

    The shortcut is the identity on ``x`` when the shape is kept, otherwise a 3x3 strided conv
    applied to the pre-activation (the seed's non-standard choice).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, activation: Activation) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(c_in), make_activation(activation))
        self.main = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out), make_activation(activation),
            nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False),
        )
        self.shortcut = (nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.pre(x)
        skip = x if self.shortcut is None else self.shortcut(pre)
        return self.main(pre) + skip


class WoodsResNet(nn.Module):
    """ResNet-44 (3 stages x 7 pre-activation blocks, widths 16/32/64) taking images in [0, 1].

    Per-channel standardisation happens inside (buffer ``input_offset``: row 0 mean, row 1 std),
    so every attack and budget lives in [0, 1] pixel space. ``pipe`` indices and all state-dict
    keys equal the seed's, so its prebuilt files load with ``strict=True``
    (see :mod:`robustxai.models.importers.woods`); ``weights=<seed .pt file>`` loads one at construction,
    and ``activation=None`` then takes the file's activation (``relu`` when training from scratch).
    Initialisation as the seed: Kaiming-uniform convs,
    zero biases, and the last conv of every residual branch zeroed.
    """

    def __init__(self, activation: str | None = None, num_classes: int = 10, in_channels: int = 3,
                 input_size: int = 32, blocks_per_stage: int = 7,
                 widths: Sequence[int] = (16, 32, 64),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 weights: str | None = None) -> None:
        super().__init__()
        options = None
        if weights is not None:
            _, options = load_woods_file(weights)
            activation = activation or activation_of(options)  # a conflicting choice fails below
        activation = activation or "relu"
        make_activation(activation)  # validates the name
        if input_size % 4 != 0 or input_size < 4:
            raise ValueError(f"input_size must be a positive multiple of 4, got {input_size}")
        if blocks_per_stage < 1 or len(widths) != 3:
            raise ValueError("blocks_per_stage must be >= 1 and widths must have 3 entries")
        mean = tuple(mean) if mean is not None else (CIFAR10_MEAN if in_channels == 3 else (0.5,) * in_channels)
        std = tuple(std) if std is not None else (CIFAR10_STD if in_channels == 3 else (0.25,) * in_channels)
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean and std need {in_channels} entries (in_channels), "
                             f"got {len(mean)} and {len(std)}")
        self.activation = activation
        self.input_size = input_size
        self.register_buffer("input_offset", torch.tensor([mean, std], dtype=torch.float32))
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, width in enumerate(widths):
            blocks = [PreActBlock(c_in if b == 0 else width, width, 2 if (i > 0 and b == 0) else 1,
                                  activation) for b in range(blocks_per_stage)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.pipe = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            *stages,
            nn.BatchNorm2d(widths[-1]),
            make_activation(activation),
            nn.AvgPool2d(input_size // 4),
            nn.Conv2d(widths[-1], num_classes, 1, bias=True),
        )
        self.reset_parameters()
        if weights is not None:
            load_woods_weights(self, weights)

    def reset_parameters(self) -> None:
        """Kaiming-uniform convs (a=0), zero biases, BN 1/0, zeroed last conv of each branch."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
        for module in self.modules():
            if isinstance(module, PreActBlock):
                nn.init.zeros_(module.main[3].weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"WoodsResNet expects {self.input_size}x{self.input_size} inputs, "
                             f"got {tuple(x.shape[-2:])}")
        mean = self.input_offset[0].view(1, -1, 1, 1)
        std = self.input_offset[1].view(1, -1, 1, 1)
        return self.pipe((x - mean) / std)[:, :, 0, 0]


def woods_resnet_from_file(path: str | Path) -> WoodsResNet:
    """A :class:`WoodsResNet` with the activation the file needs and its weights, in eval mode."""
    _, options = load_woods_file(path)
    model = WoodsResNet(activation=activation_of(options))
    load_woods_weights(model, path)
    return model.eval()

__all__ = ["PreActBlock", "WoodsResNet", "make_activation", "woods_resnet_from_file"]
