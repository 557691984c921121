"""The classifiers of Kim, Seo & Jeon 2019 (seed 002, spec section 1.2): MNIST_CNN, CIFAR_CNN, MIXNORM_DNN.

The seed feeds its networks inputs in [-1, 1]; ours take the framework's [0, 1] box and map
``x_seed = 2 x - 1`` as their first operation (``seed_units=True``), so a network trained here
computes the seed's function of the same point and every budget halves: seed eps 2 (L2) is our
1.0, seed eps 0.02 (L-inf) our 0.01 (docs/kim.md). Weights: Glorot-uniform, biases zero (TF's
defaults, which the seed relies on). Note for weight importers: TF flattens feature maps in
(h, w, c) order, these models in PyTorch's (c, h, w) order.
"""

from __future__ import annotations

from torch import Tensor, nn

from robustxai.utils.validation import check_range


def glorot_init(module: nn.Module) -> None:
    """Glorot-uniform kernels and zero biases on every conv and dense layer (TF1's defaults)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class _SeedInput(nn.Module):
    """Maps the [0, 1] box to the seed's [-1, 1] units (``2 x - 1``), or passes through."""

    def __init__(self, seed_units: bool) -> None:
        super().__init__()
        self.seed_units = seed_units

    def forward(self, x: Tensor) -> Tensor:
        return x * 2.0 - 1.0 if self.seed_units else x

    def extra_repr(self) -> str:
        return "x -> 2x - 1" if self.seed_units else "identity"


class KimMNISTCNN(nn.Module):
    """conv5x5(32)-conv5x5(64)-maxpool2-fc(1024)-fc(classes), ReLU, SAME padding: ONE pooling layer.

    The seed's MNIST_CNN (MNIST and Fashion-MNIST): a 14x14x64 = 12,544-wide flatten on 28x28 inputs.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                 seed_units: bool = True) -> None:
        super().__init__()
        check_range("input_size", input_size, low=2)
        self.input_map = _SeedInput(seed_units)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = input_size // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 1024), nn.ReLU(), nn.Linear(1024, num_classes),
        )
        glorot_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.input_map(x)))


class KimCIFARCNN(nn.Module):
    """[conv3x3(32) x2]-pool-[conv3x3(64) x2]-pool-fc(512)-fc(classes), ReLU, SAME padding.

    The seed's CIFAR_CNN: an 8x8x64 = 4,096-wide flatten on 32x32 inputs.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
                 seed_units: bool = True) -> None:
        super().__init__()
        check_range("input_size", input_size, low=4)
        self.input_map = _SeedInput(seed_units)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 512), nn.ReLU(), nn.Linear(512, num_classes),
        )
        glorot_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.input_map(x)))


class KimToyMLP(nn.Module):
    """The seed's MIXNORM_DNN for the 2-D toy: in_features -> dense(hidden) ReLU -> dense(classes)."""

    def __init__(self, in_features: int = 2, num_classes: int = 2, hidden: int = 128,
                 seed_units: bool = True) -> None:
        super().__init__()
        check_range("in_features", in_features, low=1)
        check_range("hidden", hidden, low=1)
        self.input_map = _SeedInput(seed_units)
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        glorot_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.input_map(x.flatten(1)))


__all__ = ["KimCIFARCNN", "KimMNISTCNN", "KimToyMLP", "glorot_init"]
