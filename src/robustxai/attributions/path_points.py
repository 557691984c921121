"""Path-point bookkeeping shared by the multi-point attributions (IG, SmoothGrad): batching and chunking."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

DEFAULT_MAX_POINTS_PER_PASS = 256  # fastest on CPU for MadryCNN (bench_attributions); raise on a GPU


def point_chunks(num_images: int, points_per_image: int, max_points_per_pass: int | None,
                 device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(image_index, point_index)`` int64 tensors for consecutive chunks of all points.

    Points are ordered image-major (all points of image 0, then image 1, ...), so a chunk of
    ``points_per_image * j`` points holds whole images. ``None`` means one pass for everything.
    """
    total = num_images * points_per_image
    chunk = total if max_points_per_pass is None else max_points_per_pass
    for start in range(0, total, chunk):
        flat = torch.arange(start, min(start + chunk, total), device=device)
        yield flat // points_per_image, flat % points_per_image


def as_baseline(baseline: float | Tensor, x: Tensor) -> Tensor:
    """The baseline broadcast to ``x``'s shape, dtype and device (a scalar or a broadcastable tensor)."""
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(device=x.device, dtype=x.dtype).expand_as(x)
        except RuntimeError as err:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} cannot be broadcast to the "
                             f"input shape {tuple(x.shape)}; pass a scalar, a {tuple(x.shape[1:])} "
                             f"tensor or a {tuple(x.shape)} tensor") from err
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
        raise TypeError(f"baseline must be a number or a tensor, got {type(baseline).__name__}")
    return torch.full_like(x, float(baseline))
