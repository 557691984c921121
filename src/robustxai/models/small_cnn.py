"""A small, fast CNN for tests and the quickstart."""

from __future__ import annotations

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """conv3x3(c1)-pool-conv3x3(c2)-pool-fc(hidden)-fc(classes) with ReLU; about 60k parameters at defaults."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                 channels: tuple[int, int] = (16, 32), hidden: int = 64) -> None:
        super().__init__()
        c1, c2 = channels
        side = input_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
