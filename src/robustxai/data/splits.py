"""Seeded, per-class (stratified) train/test splits of a labelled set."""

from __future__ import annotations

import torch
from torch import Tensor


def rank_within_class(labels: Tensor, order: Tensor) -> Tensor:
    """For each position of ``order``, how many earlier positions hold the same class (0, 1, 2, ...)."""
    ordered = labels[order]
    sort = torch.sort(ordered, stable=True).indices
    counts = torch.bincount(ordered)
    starts = counts.cumsum(0) - counts
    ranks = torch.empty_like(sort)
    ranks[sort] = torch.arange(len(sort)) - starts[ordered[sort]]
    return ranks


def split_per_class(labels: Tensor, first_per_class: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Shuffle with ``seed``; the first ``first_per_class[c]`` images of each class c form the first part.

    Returns ``(first_idx, rest_idx)``, each in the shuffled order (classes interleaved, so a prefix
    of either part is a random sample of it). This is the RAR Flower split (first 72 of each class
    after a seeded shuffle go to training) and the offline GTSRB split (first k of each class to test).
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    ranks = rank_within_class(labels, order)
    in_first = ranks < first_per_class[labels[order]]
    return order[in_first], order[~in_first]


def fraction_per_class(labels: Tensor, fraction: float, num_classes: int) -> Tensor:
    """``round(fraction * n_c)`` images per class, at least one where the class has two or more."""
    counts = torch.bincount(labels, minlength=num_classes)
    take = torch.round(counts.double() * fraction).long()
    return torch.where(counts >= 2, take.clamp(1, None), take).minimum(counts - (counts >= 2).long())


__all__ = ["fraction_per_class", "rank_within_class", "split_per_class"]
