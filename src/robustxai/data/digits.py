"""``digits``: scikit-learn's bundled 8x8 handwritten digits, resized to MNIST's 28x28 layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor

from robustxai.data.base import TensorDataModule

TEST_SIZE = 360  # 20% of the 1,797 images, a fixed seeded split


def digits_as_mnist(size: int = 28, box: int = 20) -> tuple[Tensor, Tensor]:
    """All 1,797 images, upsampled to ``box`` x ``box`` and centred in ``size`` x ``size`` as in MNIST."""
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(box, box), mode="bilinear", align_corners=False)
    pad = (size - box) // 2
    images = F.pad(images, (pad, size - box - pad, pad, size - box - pad)).clamp_(0.0, 1.0)
    return images, torch.as_tensor(bunch.target, dtype=torch.int64)


class DigitsDataModule(TensorDataModule):
    """The embedded default dataset: needs no network and no files outside the installed packages.

    A fixed permutation (seed 0) puts 360 images in the test split and 1,437 in the training split
    (from which ``val_size`` images are held out).
    """

    num_classes = 10
    input_shape = (1, 28, 28)
    class_names = tuple(str(i) for i in range(10))

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        images, labels = digits_as_mnist()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        idx = order[TEST_SIZE:] if train else order[:TEST_SIZE]
        return images[idx].contiguous(), labels[idx].contiguous()
