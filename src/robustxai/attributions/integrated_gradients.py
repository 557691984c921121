"""Integrated Gradients with Riemann rules, all path points batched (chunked to a memory budget)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from robustxai.attributions.base import Attribution, check_positive_int, target_logit_grad
from robustxai.attributions.path_points import DEFAULT_MAX_POINTS_PER_PASS, as_baseline, point_chunks

Rule = Literal["left", "right", "middle"]
_OFFSETS = {"left": 0.0, "right": 1.0, "middle": 0.5}


def riemann_alphas(steps: int, rule: Rule, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> Tensor:
    """Path positions of the rule: right (k/m, k=1..m), left ((k-1)/m), middle ((k-1/2)/m).

    These are Captum's ``riemann_right`` / ``riemann_left`` / ``riemann_middle`` points; every
    point has weight 1/m.
    """
    if rule not in _OFFSETS:
        raise ValueError(f"rule must be one of 'left', 'right', 'middle', got {rule!r}")
    k = torch.arange(steps, dtype=torch.float64)
    return ((k + _OFFSETS[rule]) / steps).to(dtype=dtype, device=device)


class IntegratedGradients(Attribution):
    """IG (Sundararajan et al.): (x - b) * mean over path points z_k = b + a_k (x - b) of d logit_y / dz.

    All N * steps path points go through the model in passes of at most ``max_points_per_pass``
    points (``None``: one pass); the result does not depend on the chunking. With
    ``create_graph=True`` the map is differentiable w.r.t. ``x`` (through the path points and the
    (x - b) factor) and the parameters; the graphs of all passes are then kept until backward.
    RAR's evaluation IG is ``IntegratedGradients(steps=100, rule="right")`` with the zero baseline.
    """

    def __init__(self, steps: int = 50, rule: Rule = "right", baseline: float | Tensor = 0.0,
                 max_points_per_pass: int | None = DEFAULT_MAX_POINTS_PER_PASS) -> None:
        check_positive_int("steps", steps)
        check_positive_int("max_points_per_pass", max_points_per_pass, allow_none=True)
        if rule not in _OFFSETS:
            raise ValueError(f"rule must be one of 'left', 'right', 'middle', got {rule!r}")
        self.steps = steps
        self.rule: Rule = rule
        self.baseline = baseline
        self.max_points_per_pass = max_points_per_pass

    @property
    def points_per_input(self) -> int:
        return self.steps

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        x_in = x if create_graph else x.detach()
        base = as_baseline(self.baseline, x)
        diff = x_in - base
        alphas = riemann_alphas(self.steps, self.rule, x.dtype, x.device)
        point_shape = (-1,) + (1,) * (x.ndim - 1)
        grad_sum = torch.zeros_like(x)
        for img, k in point_chunks(len(x), self.steps, self.max_points_per_pass, x.device):
            z = base[img] + alphas[k].view(point_shape) * diff[img]
            grads = target_logit_grad(model, z, target[img], create_graph)
            if create_graph:
                grad_sum = grad_sum.index_add(0, img, grads)
            else:
                grad_sum.index_add_(0, img, grads)
        return diff * grad_sum / self.steps
