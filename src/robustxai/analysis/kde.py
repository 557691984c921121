"""A one-dimensional Gaussian kernel density estimate, as ``scipy.stats.gaussian_kde`` computes it.

scipy is only a test dependency here; this is the same estimator in torch: the bandwidth is
``factor`` times the sample standard deviation (ddof 1), which is what ``gaussian_kde(data,
bw_method=factor)`` (or the seed's ``covariance_factor = lambda: .25``) uses in one dimension.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def kde_bandwidth(data: Tensor, factor: float = 0.25) -> Tensor:
    """The kernel's standard deviation: ``factor`` x the sample std (ddof 1) of the 1-D ``data``."""
    data = _as_1d(data)
    if factor <= 0:
        raise ValueError(f"factor must be > 0 (the bandwidth factor), got {factor}")
    if data.numel() < 2:
        raise ValueError(f"a KDE needs at least 2 points, got {data.numel()}")
    std = data.std(unbiased=True)
    if not bool(std > 0):
        raise ValueError("a KDE needs data that are not all equal (their standard deviation is 0)")
    return factor * std


def gaussian_kde(data: Tensor, points: Tensor, factor: float = 0.25, chunk: int = 1 << 22) -> Tensor:
    """The density at ``points`` of the Gaussian KDE of the 1-D ``data`` (float64, shape of ``points``).

    Evaluated in chunks of about ``chunk`` kernel values, so large sets fit in memory.
    """
    data = _as_1d(data)
    h = kde_bandwidth(data, factor)
    flat = points.detach().to(torch.float64).reshape(-1)
    rows = max(1, chunk // data.numel())
    parts = [torch.exp(-0.5 * ((part[:, None] - data[None, :]) / h) ** 2).sum(dim=1) for part in flat.split(rows)]
    density = torch.cat(parts) / (data.numel() * h * math.sqrt(2.0 * math.pi))
    return density.view(points.shape)


def kde_peak(data: Tensor, grid: Tensor, factor: float = 0.25) -> tuple[Tensor, Tensor]:
    """(the KDE on ``grid``, the grid point where it is highest): the "peak" of a KDE plot."""
    density = gaussian_kde(data, grid, factor)
    return density, grid.reshape(-1)[density.reshape(-1).argmax()]


def _as_1d(data: Tensor) -> Tensor:
    data = torch.as_tensor(data).detach().to(torch.float64)
    if data.dim() != 1:
        raise ValueError(f"data must be 1-D (one value per point), got shape {tuple(data.shape)}")
    return data


__all__ = ["gaussian_kde", "kde_bandwidth", "kde_peak"]
