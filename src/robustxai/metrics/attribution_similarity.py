"""torchmetrics classes averaging the map-comparison metrics of ``metrics.functional`` over all map pairs.

Each keeps a float64 sum and a count with ``dist_reduce_fx="sum"``, so the mean is exact across
batches and synced across DDP processes. ``nan_policy="propagate"`` (default) lets an undefined
value (e.g. Kendall tau of a constant map) make the mean NaN, as scipy would; ``"omit"`` leaves
such pairs out of the mean and counts them in ``num_nan``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from robustxai.metrics.map_measures import map_measure

NanPolicy = Literal["propagate", "omit"]


class MapPairMean(Metric):
    """Base: the mean over map pairs of ``self.pairwise(a, b)`` (N,); subclasses define ``pairwise``."""

    full_state_update = False

    def __init__(self, nan_policy: NanPolicy = "propagate", **kwargs) -> None:
        super().__init__(**kwargs)
        if nan_policy not in ("propagate", "omit"):
            raise ValueError(f"nan_policy must be 'propagate' or 'omit', got {nan_policy!r}")
        self.nan_policy = nan_policy
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_nan", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, a: Tensor, b: Tensor, values: Tensor | None = None) -> None:
        """Add the map pairs ``(a, b)``; ``values``: their :meth:`pairwise` values, if the caller has them already."""
        values = (self.pairwise(a, b) if values is None else values).double()
        nan = torch.isnan(values)
        self.num_nan += nan.sum()
        if self.nan_policy == "omit":  # no boolean indexing: it would synchronise a GPU
            self.total += torch.where(nan, torch.zeros_like(values), values).sum()
            self.count += (~nan).sum()
        else:
            self.total += values.sum()
            self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


class KendallTau(MapPairMean):
    """Mean Kendall tau-b between map pairs (RAR's "CO" criterion), ties as scipy."""

    higher_is_better = True
    is_differentiable = False

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        return map_measure("kendall")(a, b)


class SpearmanCorrelation(MapPairMean):
    """Mean Spearman rho (average ranks for ties) between map pairs."""

    higher_is_better = True
    is_differentiable = False

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        return map_measure("spearman")(a, b)


class TopKIntersection(MapPairMean):
    """Mean fraction of shared top-k entries between map pairs (RAR's "IN"), stable tie-break; ``k=None`` is set by the caller."""

    higher_is_better = True
    is_differentiable = False

    def __init__(self, k: int | None, nan_policy: NanPolicy = "propagate", **kwargs) -> None:
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be an integer >= 1 (or null: the attack's eval_k), got {k!r}")
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.k = k

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        if self.k is None:
            raise ValueError("TopKIntersection has no k: give k, or let the evaluation callback set its attack's eval_k")
        return map_measure("topk_intersection", k=self.k)(a, b)


class MassCenterShift(MapPairMean):
    """Mean L2 distance (pixels) between the mass centres of (N, H, W) map pairs; ``truncate`` as the seed."""

    higher_is_better = False
    is_differentiable = False

    def __init__(self, truncate: bool = False, nan_policy: NanPolicy = "propagate", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.truncate = truncate

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        return map_measure("mass_center_shift", truncate=self.truncate)(a, b)
