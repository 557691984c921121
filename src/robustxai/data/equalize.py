"""Per-channel histogram equalisation with OpenCV's ``cv2.equalizeHist`` formula, vectorised in torch."""

from __future__ import annotations

import torch
from torch import Tensor


def equalize_hist(images: Tensor, chunk: int = 1024) -> Tensor:
    """Equalise every channel of every image separately, exactly as ``cv2.equalizeHist`` (uint8 in and out).

    OpenCV's rule, per channel with P pixels and histogram h: let ``lo`` be the smallest value
    present; a constant channel maps to ``lo``; otherwise value v maps to
    ``round((cdf(v) - h[lo]) * (255 / (P - h[lo])))`` in float32, rounding half to even. ``images``
    is ``(..., H, W)`` uint8; channels are processed ``chunk`` at a time to bound memory.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"equalize_hist needs uint8 images (cv2.equalizeHist semantics), got {images.dtype}")
    if images.dim() < 2:
        raise ValueError(f"equalize_hist needs images shaped (..., H, W), got shape {tuple(images.shape)}")
    flat = images.reshape(-1, images.shape[-2] * images.shape[-1])
    out = torch.empty_like(flat)
    for start in range(0, flat.shape[0], chunk):
        out[start:start + chunk] = _equalize_rows(flat[start:start + chunk])
    return out.view_as(images)


def _equalize_rows(rows: Tensor) -> Tensor:
    """Equalise each row of a ``(M, P)`` uint8 tensor as one channel."""
    m, pixels = rows.shape
    idx = rows.long().add_(torch.arange(m, device=rows.device).mul_(256).unsqueeze(1))  # row-major (row, value)
    hist = torch.bincount(idx.view(-1), minlength=m * 256).view(m, 256)
    cdf = hist.cumsum(dim=1)
    lowest = (hist > 0).int().argmax(dim=1, keepdim=True)  # the smallest value present
    count_lowest = hist.gather(1, lowest)
    remaining = pixels - count_lowest
    scale = torch.tensor(255.0, dtype=torch.float32, device=rows.device) / remaining.clamp_min(1).float()
    lut = torch.round((cdf - count_lowest).float() * scale).clamp_(0, 255)
    lut = torch.where(remaining == 0, lowest.float(), lut).to(torch.uint8)  # constant channel: keep its value
    return lut.view(-1)[idx]


__all__ = ["equalize_hist"]
