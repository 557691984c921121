"""``two_gaussians``: the 2-D toy of Kim et al. 2019 (seed 002, notebook 4.1, spec section 5).

Two Gaussians of ``size`` points each (class 0 "Class 1" around (1.2, 0.1), class 1 "Class 2"
around (-1.2, -0.1), shared covariance [[0.1, -0.01], [-0.01, 0.002]]), drawn with NumPy's legacy
generator from ``np.random.seed(0)``, class 0 first; all points min-max scaled to [-1, 1] with ONE
global scalar min and max (both axes share the factor), then the training copy shuffled once by
the same generator. This is the seed's recipe draw for draw. The framework's box is [0, 1], so the
points are served as ``(x_seed + 1) / 2``; ``KimToyMLP`` maps them back (``2 x - 1``), and every
distance in our units is half the seed's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from robustxai.utils.validation import check_range
from robustxai.data.base import TensorDataModule, TensorLoader

MEANS = ((1.2, 0.1), (-1.2, -0.1))
COVARIANCE = ((0.1, -0.01), (-0.01, 0.002))


def seed_two_gaussians(size: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seed's draws in its [-1, 1] units: ``(points, labels, shuffled_order)``.

    ``points`` holds class 0 then class 1 (the seed's ``Xs``, the evaluation set); the seed's
    training copy is ``points[order]`` (its one ``np.random.shuffle``, replayed as a permutation).
    """
    rng = np.random.RandomState(seed)  # the legacy global generator np.random.seed(seed) sets up
    points = np.concatenate([rng.multivariate_normal(mean=MEANS[i], cov=COVARIANCE, size=size) for i in range(2)])
    points = (points - points.min()) / (points.max() - points.min()) * 2 - 1
    labels = np.repeat(np.arange(2), size)
    rows = np.c_[points, labels, np.arange(2 * size)]  # shuffle rows as the seed does, remembering where each went
    rng.shuffle(rows)
    return points, labels, rows[:, 3].astype(np.int64)


class TwoGaussiansDataModule(TensorDataModule):
    """The toy as a DataModule: train = the seed's shuffled copy, test = the same points in class order.

    The toy has no held-out set: the seed trains on all ``2 * size`` points and attacks the same
    points unshuffled, so ``test`` is those points (class 0 first). Training batches walk the
    shuffled copy in a fixed order every epoch, as the seed's trainer does; ``shuffle=true`` draws a
    fresh order per epoch instead. Points are ``(N, 2)`` float32 in the [0, 1] box.
    """

    num_classes = 2
    input_shape = (2,)  # points, not images: model_kwargs() gives in_features=2
    class_names = ("Class 1", "Class 2")

    def __init__(self, size: int = 3000, generator_seed: int = 0, shuffle: bool = False,
                 batch_size: int = 100, eval_batch_size: int | None = 6000, val_size: int = 0,
                 test_subset: int | None = None, shuffle_seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, val_size=val_size,
                         test_subset=test_subset, download=False, shuffle_seed=shuffle_seed)
        check_range("size", size, low=1)
        self.size, self.generator_seed, self.shuffle = int(size), int(generator_seed), bool(shuffle)

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        points, labels, order = seed_two_gaussians(self.size, self.generator_seed)
        if train:
            points, labels = points[order], labels[order]
        x = torch.from_numpy((points + 1.0) / 2.0).float()
        return x.contiguous(), torch.from_numpy(labels).long()

    def train_dataloader(self) -> TensorLoader:
        loader = super().train_dataloader()
        loader.shuffle = self.shuffle
        return loader


__all__ = ["COVARIANCE", "MEANS", "TwoGaussiansDataModule", "seed_two_gaussians"]
