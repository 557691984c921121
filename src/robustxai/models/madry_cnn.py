"""The Madry MNIST-challenge CNN, as used by the RAR code (seed 003, spec section 5.1)."""

from __future__ import annotations

from torch import Tensor, nn


class MadryCNN(nn.Module):
    """conv5x5(32)-pool-conv5x5(64)-pool-fc(1024)-fc(classes), ReLU, SAME padding, no BN or dropout.

    Initialised as the original TF code: weights from a normal with std 0.1 truncated at two
    standard deviations, every bias 0.1. Note for weight importers: TF flattens the 7x7x64 feature
    map in (h, w, c) order, this model in PyTorch's (c, h, w) order.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 1024), nn.ReLU(), nn.Linear(1024, num_classes),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=0.1, a=-0.2, b=0.2)
                nn.init.constant_(module.bias, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


__all__ = ["MadryCNN"]
