"""Per-pair map measures by name: the one definition the metric classes, the callbacks and the attacks share.

Each measure maps two batches of maps ``(N, H, W)`` (or ``(N, D)``) to one value per pair ``(N,)``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from robustxai.metrics import functional as F

MapMeasure = Callable[[Tensor, Tensor], Tensor]
MAP_MEASURES = ("topk_intersection", "kendall", "spearman", "mass_center_shift")


def map_measure(name: str, k: int | None = None, truncate: bool = False) -> MapMeasure:
    """The measure ``name``: ``kendall`` (tau-b), ``spearman``, ``topk_intersection`` (needs ``k``), or
    ``mass_center_shift`` (pixels; ``truncate`` as the RAR seed)."""
    if name == "kendall":
        return lambda a, b: F.kendall_tau(a.flatten(1), b.flatten(1))
    if name == "spearman":
        return lambda a, b: F.spearman(a.flatten(1), b.flatten(1))
    if name == "topk_intersection":
        if k is None:
            raise ValueError("topk_intersection needs k (the number of top entries compared)")
        return lambda a, b: F.topk_intersection(a.flatten(1), b.flatten(1), k)
    if name == "mass_center_shift":
        return lambda a, b: F.mass_center_shift(a, b, truncate=truncate)
    raise ValueError(f"unknown map measure {name!r}; choose one of {', '.join(MAP_MEASURES)}")


__all__ = ["MAP_MEASURES", "MapMeasure", "map_measure"]
