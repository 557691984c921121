"""Integrated gradients of the per-example loss along the straight path x -> x' (RAR's regulariser).

This is the training-time attribution of Chen et al. (2019), not an explanation map: the IG of the
cross-entropy loss with the clean image ``x`` as reference and a perturbed ``x'`` as input,

    IG(x, x') = (x' - x) * (every / m) * sum_{k in {every, 2 every, ..., m}} grad_z loss(z_k),
    z_k = x + (k / m) (x' - x),

a right Riemann sum (x itself excluded, x' included). ``every = 1`` is the full sum; ``every = a``
is the seed's cheap IG (its ``approx_factor``), a right Riemann sum with m/a points. Completeness:
``IG.sum() ~= loss(x') - loss(x)``. All points of the batch go through the model in as few passes
as ``max_batch`` allows, with ``create_graph=True`` so training and attacks differentiate through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Reduction = Literal["sum", "mean", "none"]
PROB_FLOOR = 1e-10  # the seed clips the softmax to [1e-10, 1] before the log
_LOG_PROB_FLOOR = math.log(PROB_FLOOR)


def clipped_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example ``-log(clip(softmax(logits)_y, 1e-10, 1))``: the seed's loss inside the IG.

    Computed as a clamped log-softmax (the same value, without the rounding of softmax-then-log).
    It equals ``F.cross_entropy`` except where ``p_y < 1e-10``: there it is ``log(1e10) ~ 23.03``
    and its gradient is zero, as with TF's ``clip_by_value``.
    """
    log_p = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return -torch.clamp(log_p, min=_LOG_PROB_FLOOR, max=0.0)


def path_fractions(steps: int, every: int = 1) -> list[float]:
    """The fractions ``k/m`` of the right Riemann sum kept with ``every``: a/m, 2a/m, ..., 1."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps (m) must be an integer >= 1, got {steps!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every (approx_factor) must be an integer >= 1, got {every!r}")
    if steps % every:
        raise ValueError(f"every (approx_factor) = {every} must divide steps (m) = {steps}: the cheap IG keeps "
                         f"the points a, 2a, ..., m. Choose e.g. approx_factor in "
                         f"{[d for d in range(1, steps + 1) if steps % d == 0]}.")
    return [k / steps for k in range(every, steps + 1, every)]


@dataclass
class PathLossIG:
    """The result of :func:`loss_path_ig`.

    ``norm``: the L1 norm of the IG under the reduction (scalar, or ``(B,)`` for ``"none"``);
    ``end_logits``: the logits at x' (the path's last point), so callers get CE(x') without a pass;
    ``ig``: the attribution itself (same shape as x), when asked for.
    """

    norm: Tensor
    end_logits: Tensor
    ig: Tensor | None = None


def loss_path_ig(model: nn.Module, x: Tensor, x_prime: Tensor, y: Tensor, steps: int = 50, every: int = 1,
                 reduction: Reduction = "sum", create_graph: bool = True, return_ig: bool = False,
                 max_batch: int | None = None) -> PathLossIG:
    """The L1 norm (and optionally the value) of the loss-IG from ``x`` to ``x_prime``.

    ``reduction``: ``"sum"`` is the seed's R = sum over the batch and every pixel of |IG|, ``"mean"``
    divides that by the batch size, ``"none"`` keeps one norm per example. Gradients flow to the
    parameters and to ``x_prime``/``x`` when they require them (``create_graph=True``).
    ``max_batch`` bounds the images per forward pass (whole path points are grouped; at least one
    point per pass); ``None`` sends every point of the batch in one pass of ``B * m / every`` images.
    The model must treat examples independently (no batch norm in train mode): one backward pass
    of the summed loss then yields every per-example gradient.
    """
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    if x.shape != x_prime.shape or y.shape != x.shape[:1]:
        raise ValueError(f"x {tuple(x.shape)}, x_prime {tuple(x_prime.shape)} and y {tuple(y.shape)} do not match")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
    fractions = path_fractions(steps, every)
    n, batch = len(fractions), x.shape[0]
    per_pass = n if max_batch is None else max(1, min(n, max_batch // max(batch, 1)))
    delta = x_prime - x
    view = (-1, 1) + (1,) * (x.dim() - 1)
    grad_sum = torch.zeros_like(x)
    end_logits = None
    with torch.enable_grad():
        for start in range(0, n, per_pass):
            alphas = torch.tensor(fractions[start:start + per_pass], dtype=x.dtype, device=x.device).view(view)
            z = (x.unsqueeze(0) + alphas * delta.unsqueeze(0)).flatten(0, 1)
            if not z.requires_grad:
                z.requires_grad_(True)
            logits = model(z)
            loss = clipped_cross_entropy(logits, y.repeat(len(alphas)))
            (grad,) = torch.autograd.grad(loss.sum(), z, create_graph=create_graph)
            grad_sum = grad_sum + grad.view(len(alphas), *x.shape).sum(0)
            end_logits = logits[-batch:]
    ig = delta * grad_sum * (every / steps)
    per_example = ig.abs().flatten(1).sum(1)
    if reduction == "none":
        norm = per_example
    else:
        norm = per_example.sum() if reduction == "sum" else per_example.mean()
    if not create_graph:
        ig, norm, end_logits = ig.detach(), norm.detach(), end_logits.detach()
    return PathLossIG(norm=norm, end_logits=end_logits, ig=ig if return_ig else None)
