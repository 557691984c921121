"""The generic GAP network of Boopathy et al. (seed 000, spec 1.1): a pre-activation chain, GAP, a bias-free head.

Every layer of the seed is one entry of four lists (filters, kernels, strides; padding is always TF
'SAME'). A layer is a convolution of ``ReLU(x)`` (of ``x`` itself for the first one) plus a bias, a
max-pool of the pre-activation tensor, or a residual convolution (stride ``'r1'``) that adds the
tensor of two layers back (average-pooled and channel-zero-padded when the shape changed: an
"option-A" shortcut). The head is the global average of the last pre-activation map A (no final
ReLU) followed by a 1x1 convolution without bias, so the logits are exactly the spatial mean of the
class activation maps ``CAM_c = sum_k V[k, c] A_k``. TF's 'SAME' padding is reproduced exactly,
including its asymmetric case (0 before, 1 after for a 3x3 stride-2 convolution of an even input).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.models.boopathy_architectures import ARCHITECTURES, Arch, LayerSpec
from robustxai.models.importers.boopathy import (check_file_fits, infer_architecture, load_boopathy_params,
                                                 read_boopathy_file)

def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one spatial axis: output ceil(size / stride), extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel: int, stride: int, value: float = 0.0) -> Tensor:
    """``x`` (N, C, H, W) padded as TF 'SAME' pads it for this kernel and stride (asymmetric if needed)."""
    top, bottom = tf_same_padding(x.shape[-2], kernel, stride)
    left, right = tf_same_padding(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class SameConv2d(nn.Conv2d):
    """A convolution with TF 'SAME' padding, computed from the input size on every call."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool = True) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = tf_same_padding(x.shape[-2], k, s)
        left, right = tf_same_padding(x.shape[-1], k, s)
        if top == bottom and left == right:  # symmetric: let the convolution pad (no copy)
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride)


class PreActConv(nn.Module):
    """``conv(act(x)) + b`` with TF 'SAME' padding; ``act`` is ``nn.ReLU`` (identity for the first layer)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, first: bool) -> None:
        super().__init__()
        self.act: nn.Module = nn.Identity() if first else nn.ReLU()
        self.conv = SameConv2d(c_in, c_out, kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.act(x))


class SameMaxPool2d(nn.Module):
    """Max-pool with TF 'SAME' padding (padded cells never win: they hold -inf)."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(pad_same(x, self.kernel, self.stride, value=-math.inf), self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class ResidualConv(PreActConv):
    """``conv(ReLU(x)) + b + shortcut``, the shortcut being the tensor of two layers back (option A)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(c_in, c_out, kernel, stride, first=False)

    def forward(self, x: Tensor, shortcut: Tensor) -> Tensor:  # type: ignore[override]
        out = self.conv(self.act(x))
        if shortcut.shape != out.shape:
            scale = shortcut.shape[-2] // out.shape[-2]
            if scale != 1:
                shortcut = F.avg_pool2d(shortcut, scale, scale)
            extra = (out.shape[1] - shortcut.shape[1]) // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, extra, extra))
        return out + shortcut


class GAPFeatures(nn.Sequential):
    """The layer chain, indexed as the seed's lists (``features.3`` is layer 3); returns the last map A."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        history = [x]
        for layer in self:
            x = layer(x, history[-2]) if isinstance(layer, ResidualConv) else layer(x)
            history.append(x)
        return x


class BoopathyNet(nn.Module):
    """The seed's GAP network (``arch``: 'small', 'pool' or 'wresnet') on NCHW images in [0, 1], unnormalised.

    ``features(x)`` is the last pre-activation map A (N, K, h, w); ``cam(x)`` the raw class
    activation maps of every class (N, C, h, w), signed and at feature resolution; ``forward(x)``
    the logits, equal to ``cam(x).mean((2, 3))``. ``weights=<seed .pkl>`` loads one of the authors'
    released networks through the safe importer (:mod:`robustxai.models.importers.boopathy`);
    ``arch``, ``in_channels`` and ``num_classes`` left as None then come from the file (given, they
    must agree with it); without a file they default to 'small', 1 and 10.
    Initialisation as the seed: convs N(0, 1/fan_in), biases 0, head N(0, 1/K).
    """

    def __init__(self, arch: Arch | None = None, in_channels: int | None = None, num_classes: int | None = None,
                 weights: str | None = None) -> None:
        super().__init__()
        if arch is not None and arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)} or None, got {arch!r}")
        params = None
        if weights is not None:
            # imported here, not at module level: the importer imports this module, not the reverse
            params = read_boopathy_file(weights)
            arch, in_channels, num_classes = check_file_fits(params, weights, arch, in_channels, num_classes)
        arch = arch or "small"
        in_channels = 1 if in_channels is None else in_channels
        num_classes = 10 if num_classes is None else num_classes
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.arch, self.in_channels, self.num_classes = arch, in_channels, num_classes
        layers: list[nn.Module] = []
        channels = in_channels
        for i, spec in enumerate(ARCHITECTURES[arch]):
            if spec.kind == "pool":
                layers.append(SameMaxPool2d(spec.kernel, spec.stride))
            elif spec.kind == "residual":
                layers.append(ResidualConv(channels, spec.filters, spec.kernel, spec.stride))
            else:
                layers.append(PreActConv(channels, spec.filters, spec.kernel, spec.stride, first=i == 0))
            channels = spec.filters or channels
        self.features = GAPFeatures(*layers)
        self.head = nn.Conv2d(channels, num_classes, 1, bias=False)
        self.reset_parameters()
        if params is not None:
            load_boopathy_params(self, params, weights)

    @property
    def feature_channels(self) -> int:
        """K, the number of channels of the last feature map A."""
        return self.head.in_channels

    def reset_parameters(self) -> None:
        """The seed's initialisation: conv weights N(0, 1/(k*k*C_in)), biases 0, head N(0, 1/K)."""
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=1.0 / math.sqrt(module.weight[0].numel()))
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(self.head.in_channels))

    def cam(self, x: Tensor) -> Tensor:
        """Raw class activation maps of every class, (N, C, h, w): the head applied before the pooling."""
        return self.head(self.features(x))

    def cam_plusplus(self, x: Tensor) -> Tensor:
        """The seed's GradCAM++ for this GAP net, (N, C, h, w): CAM with the negative head weights zeroed."""
        return F.conv2d(self.features(x), self.head.weight.clamp(min=0))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"BoopathyNet expects (N, {self.in_channels}, H, W) images, got {tuple(x.shape)}")
        return self.head(self.features(x).mean((2, 3), keepdim=True)).flatten(1)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, in_channels={self.in_channels}, num_classes={self.num_classes}"



def load_boopathy_network(path: str | Path) -> BoopathyNet:
    """A :class:`BoopathyNet` with the file's architecture, channels, classes and weights, in eval mode."""
    params = read_boopathy_file(path)
    arch, channels, classes = infer_architecture(params, path)
    model = BoopathyNet(arch, channels, classes)
    load_boopathy_params(model, params, path)
    return model.eval()


__all__ = ["ARCHITECTURES", "BoopathyNet", "GAPFeatures", "LayerSpec", "PreActConv", "ResidualConv",
           "SameConv2d", "SameMaxPool2d", "pad_same", "tf_same_padding"]
