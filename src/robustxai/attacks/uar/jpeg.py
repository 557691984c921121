"""JPEG attacks (Kang et al. 2019): perturb the quantised JPEG-DCT coefficients under an L-inf, L2 or L1 budget.

The variable ``v`` holds one entry per quantised coefficient of the image's Y, Cb and Cr planes
(:class:`~robustxai.attacks.uar.jpeg_codec.JPEGCodec`, 4:2:0 chroma: for a 32x32 image 16 luma
and 2 x 4 chroma blocks, 1,536 entries). As in seed 000 / advex-uar, ``v`` enters the codec through
its "noisy rounding", which moves each quantised coefficient by ``v / 2``; the budget is on ``v``:
``||v||_inf <= eps`` (``jpeg_linf``: sign steps), ``||v||_2 <= eps`` and ``|v_i| <= coefficient_box``
(``jpeg_l2``: normalised-gradient steps), ``||v||_1 <= eps`` and ``|v_i| <= coefficient_box``
(``jpeg_l1``: Frank-Wolfe with step ``1 / (t + 1)``). The image is decoded and clipped to the box.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from robustxai.attacks.base import ModelMode, TargetClass
from robustxai.utils.validation import check_choice, check_range
from robustxai.attacks.uar.base import StepRule, UARAttack
from robustxai.attacks.uar.jpeg_codec import JPEGCodec

JPEGNorm = Literal["linf", "l2", "l1"]
ROUNDING_SCALE = 0.5  # the seed's noisy rounding: x + eps * (0.5 + 0.5 * v / eps - 0.5) = x + v / 2
_DIV_EPS = 1e-12


class JPEGAttack(UARAttack):
    """Targeted attack on the quantised JPEG-DCT coefficients (``norm``: ``"linf"``, ``"l2"`` or ``"l1"``).

    ``eps`` is in quantisation steps of the variable ``v`` (the seed's units: 0.25, 8 and 256 on
    MNIST and CIFAR-10); ``coefficient_box`` is the seed's ``l1_max`` (2), a per-entry bound that
    the L2 and L1 variants add. ``step_size`` is unused by ``"l1"`` (Frank-Wolfe's step is 1/(t+1)).
    """

    def __init__(self, norm: JPEGNorm = "linf", eps: float = 0.25, steps: int = 200,
                 step_size: float | None = None, step_rule: StepRule = "seed", targeted: bool = True,
                 target_class: TargetClass = "random",
                 random_init: bool = True, coefficient_box: float = 2.0, chroma_subsampling: bool = True,
                 box: tuple[float, float] = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, step_rule=step_rule, targeted=targeted,
                         target_class=target_class, random_init=random_init, box=box, model_mode=model_mode)
        check_choice("norm", norm, ("linf", "l2", "l1"))
        check_range("coefficient_box", coefficient_box, low=0.0, low_open=True)
        self.norm: JPEGNorm = norm
        self.coefficient_box = float(coefficient_box)
        self.chroma_subsampling = bool(chroma_subsampling)
        self._codec = JPEGCodec(chroma_subsampling)

    def _setup(self, x: Tensor) -> dict[str, Any]:
        with torch.no_grad():
            clean = self._codec.encode(x)
        return {"clean": clean, "shape": x.shape}

    def _size(self, ctx: dict[str, Any]) -> int:
        return sum(c[0].numel() for c in ctx["clean"])

    def _init(self, x: Tensor, ctx: dict[str, Any]) -> dict[str, Tensor]:
        n, d = x.shape[0], self._size(ctx)
        if not self.random_init:
            return {"coefficients": x.new_zeros(n, d)}
        if self.norm == "linf":
            v = torch.empty(n, d, dtype=x.dtype, device=x.device).uniform_(-1.0, 1.0)
        elif self.norm == "l2":             # uniform in the unit ball
            g = torch.randn(n, d, dtype=x.dtype, device=x.device)
            radius = torch.rand(n, 1, dtype=x.dtype, device=x.device) ** (1.0 / d)
            v = g / g.norm(dim=1, keepdim=True).clamp_min(_DIV_EPS) * radius
        else:                               # uniform in the unit L1 ball (Barthe et al. 2005, Thm 1)
            e = torch.empty(n, d, dtype=x.dtype, device=x.device).exponential_()
            e = e * torch.randn(n, d, dtype=x.dtype, device=x.device).sign()
            extra = torch.empty(n, 1, dtype=x.dtype, device=x.device).exponential_()
            v = e / (e.abs().sum(dim=1, keepdim=True) + extra)
        return {"coefficients": v * self.eps}

    def _render(self, x: Tensor, variables: dict[str, Tensor], ctx: dict[str, Any]) -> Tensor:
        v = variables["coefficients"]
        perturbed, start = [], 0
        for clean in ctx["clean"]:
            size = clean[0].numel()
            part = v[:, start:start + size].reshape(clean.shape)
            perturbed.append(clean + ROUNDING_SCALE * part)
            start += size
        _, c, h, w = ctx["shape"]
        return self._codec.decode(perturbed, c, h, w).clamp(0.0, 1.0)

    def _project(self, variables: dict[str, Tensor], ctx: dict[str, Any]) -> dict[str, Tensor]:
        v = variables["coefficients"]
        if self.norm == "linf":
            return {"coefficients": v.clamp(-self.eps, self.eps)}
        if self.norm == "l2":
            scale = (self.eps / v.norm(dim=1, keepdim=True).clamp_min(_DIV_EPS)).clamp(max=1.0)
            v = v * scale
        else:
            v = _project_l1(v, self.eps)
        return {"coefficients": v.clamp(-self.coefficient_box, self.coefficient_box)}

    def _update(self, variables: dict[str, Tensor], direction: dict[str, Tensor], iteration: int,
                ctx: dict[str, Any]) -> dict[str, Tensor]:
        v, g = variables["coefficients"], direction["coefficients"]
        if self.norm == "linf":
            return self._project({"coefficients": v + self.step * g.sign()}, ctx)
        if self.norm == "l2":
            unit = g / g.norm(dim=1, keepdim=True).clamp_min(_DIV_EPS)
            return self._project({"coefficients": v + self.step * unit}, ctx)
        vertex = _l1_box_vertex(g, self.eps, self.coefficient_box)
        gamma = 1.0 / (iteration + 1.0)
        return {"coefficients": v + gamma * (vertex - v)}   # convex combination: stays in the set

    def _min_side(self) -> int:
        return 2 if self.chroma_subsampling else 1


def _l1_box_vertex(g: Tensor, eps: float, bound: float) -> Tensor:
    """argmax of ``<g, s>`` over ``{||s||_1 <= eps, |s_i| <= bound}``, per row (Frank-Wolfe's oracle).

    The largest ``|g_i|`` get ``sign(g_i) * bound`` until the L1 budget is spent; the next gets the
    remainder. Ranks come from one sort per row; no loop over images.
    """
    order = g.abs().argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(g.shape[1], device=g.device).expand_as(order))
    magnitude = (eps - rank.to(g.dtype) * bound).clamp(0.0, bound)
    return g.sign() * magnitude


def _project_l1(v: Tensor, eps: float) -> Tensor:
    """Euclidean projection of each row onto the L1 ball of radius ``eps`` (Duchi et al. 2008), batched."""
    a = v.abs()
    inside = a.sum(dim=1, keepdim=True) <= eps
    mu = a.sort(dim=1, descending=True).values
    cumsum = mu.cumsum(dim=1)
    k = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    rho = ((mu * k) > (cumsum - eps)).to(v.dtype).mul(k).argmax(dim=1, keepdim=True)
    theta = (cumsum.gather(1, rho) - eps) / (rho + 1).to(v.dtype)
    projected = v.sign() * (a - theta).clamp_min(0.0)
    return torch.where(inside, v, projected)


__all__ = ["JPEGAttack"]
