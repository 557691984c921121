"""Piecewise-constant learning rate per optimiser step, and SGD with weight decay on weights only (RAR's ResNets)."""

from __future__ import annotations

import bisect
from typing import Iterable

import torch
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler


class PiecewiseConstantLR(LRScheduler):
    """``lr = values[i]`` where i is the number of ``boundaries`` strictly below the step count.

    The step count is the number of optimiser steps taken before the current one (TF's ``global_step``),
    and the rule is TF's ``piecewise_constant``: ``values[0]`` while ``step <= boundaries[0]``, then
    ``values[1]`` while ``step <= boundaries[1]``, ... Use it with ``scheduler_interval: step``.
    The values are absolute learning rates: the optimiser's own ``lr`` is overwritten.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, boundaries: list[int], values: list[float],
                 last_epoch: int = -1) -> None:
        boundaries, values = [int(b) for b in boundaries], [float(v) for v in values]
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"values needs one more entry than boundaries, got {len(values)} values for "
                             f"{len(boundaries)} boundaries")
        if any(b1 >= b2 for b1, b2 in zip(boundaries, boundaries[1:])) or any(b < 0 for b in boundaries):
            raise ValueError(f"boundaries must be non-negative and strictly increasing, got {boundaries}")
        if any(v < 0 for v in values):
            raise ValueError(f"values (learning rates) must be >= 0, got {values}")
        self.boundaries, self.values = boundaries, values
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int) -> float:
        """The learning rate of the update made when ``step`` updates have been done."""
        return self.values[bisect.bisect_left(self.boundaries, step)]

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch) for _ in self.optimizer.param_groups]


def sgd_decay_weights_only(params: Iterable[Tensor], lr: float = 0.01, momentum: float = 0.9,
                           weight_decay: float = 2e-4, nesterov: bool = False) -> torch.optim.SGD:
    """SGD whose weight decay applies to tensors of two or more dimensions (conv kernels, FC weights) only.

    For models without normalisation layers this is exactly the seed's decay on the ``DW`` variables:
    biases (1-D) are not decayed. torch's ``weight_decay=wd`` adds ``wd * W`` to the gradient, the
    gradient of TF's ``wd * sum(1/2 ||W||^2)`` term.
    """
    params = [p for p in params if p.requires_grad]
    decayed = [p for p in params if p.dim() >= 2]
    plain = [p for p in params if p.dim() < 2]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=momentum, nesterov=nesterov)
