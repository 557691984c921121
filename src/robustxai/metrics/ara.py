"""Accuracy-Robustness Area (ARA) of Woods et al. (seed 001, spec section 3).

From per-image minimal adversarial RMS radii r_i: the area between the accuracy-vs-RMS-budget
curve A(r) = fraction with r_i > r and the chance line 1/C, computed exactly as the seed does
(right-endpoint sum over a 1000-bin histogram of [0, max r]).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def ara(radii: Tensor, num_classes: int, bins: int = 1000) -> Tensor:
    """The seed's ARA: ``Delta * sum_k max(0, 1 - F_k - 1/C)`` over ``bins`` bins of [0, R].

    ``radii`` are per-image RMS radii (0: the clean image already fails the criterion; ``inf``: never
    failed within the search, which stays robust at every budget). R is the largest finite radius,
    Delta = R / bins, F_k the fraction of all images in bins 0..k. Float32, as the seed.
    """
    if radii.dim() != 1 or radii.numel() == 0:
        raise ValueError(f"radii must be a non-empty 1-D tensor, got shape {tuple(radii.shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    r = radii.detach().float()
    if bool((r < 0).any()) or bool(r.isnan().any()):
        raise ValueError("radii must be >= 0 (or inf) and not NaN")
    finite = r[r.isfinite()]
    r_max = float(finite.max()) if finite.numel() else 0.0
    if r_max == 0.0:
        return r.new_zeros(())
    hist = torch.histc(finite, bins, min=0, max=r_max)
    gap = r_max / bins
    return gap * (1 - hist.cumsum(0) / r.numel()).add_(-1.0 / num_classes).clamp_(min=0).sum()


def accuracy_at(radii: Tensor, budgets: Tensor) -> Tensor:
    """A(b): the fraction of images whose minimal radius exceeds each budget ``b`` (robust accuracy)."""
    return (radii.float()[None, :] > budgets.float()[:, None]).float().mean(1)


class AccuracyRobustnessArea(Metric):
    """Gathers per-image minimal radii (synced across processes) and computes :func:`ara` on them."""

    full_state_update = False

    def __init__(self, num_classes: int, bins: int = 1000) -> None:
        super().__init__()
        self.num_classes, self.bins = num_classes, bins
        self.add_state("radii", default=[], dist_reduce_fx="cat")

    def update(self, radii: Tensor) -> None:
        self.radii.append(radii.detach().float().flatten())

    def compute(self) -> Tensor:
        return ara(dim_zero_cat(self.radii), self.num_classes, self.bins)

    def all_radii(self) -> Tensor:
        """Every gathered radius (after sync, from every process)."""
        return dim_zero_cat(self.radii)


__all__ = ["AccuracyRobustnessArea", "accuracy_at", "ara"]
