"""Square attack (Andriushchenko et al. 2020), L-inf: a gradient-free random search of square patches.

It never looks at a gradient, only at the model's logits, so a model whose gradients are masked
(zero, noisy or shattered) is still attacked: a gradient-free attack that beats PGD is the classic
sign of gradient masking (see :mod:`robustxai.analysis.masking`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from robustxai.attacks.base import Attack, ModelMode
from robustxai.attacks.losses import cw_margin
from robustxai.utils.validation import check_choice, check_range

# the halving points of the patch-size schedule, in iterations of a 10,000-query run (the paper's)
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def patch_fraction(iteration: int, n_queries: int, p_init: float) -> float:
    """Fraction of the pixels a patch covers at ``iteration``: ``p_init`` halved at each schedule point.

    The schedule is the paper's for 10,000 queries, stretched to ``n_queries`` (as its reference code
    does with ``resc_schedule``), so a short run still ends with small patches.
    """
    it = int(iteration / n_queries * 10000)
    return p_init / 2 ** sum(it > point for point in _SCHEDULE)


class Square(Attack):
    """Untargeted L-inf Square attack on the margin ``z_y - max_{j != y} z_j``.

    Starts from vertical stripes of ``±eps``; then each query redraws one random square window (one
    random sign per channel) and keeps it only where it lowers an image's margin. An image stops being
    queried once it is misclassified. ``n_queries`` bounds the model evaluations per image (the initial
    stripes count as one; one more evaluation checks the clean images first). Budget and box always hold.
    Only ``norm="linf"`` is implemented.
    """

    def __init__(self, norm: str = "linf", eps: float = 0.3, n_queries: int = 1000, p_init: float = 0.8,
                 box: tuple[float, float] = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        super().__init__(box=box, model_mode=model_mode)
        check_choice("norm", norm, ("linf",))
        check_range("eps", eps, low=0.0)
        check_range("n_queries", n_queries, low=1)
        check_range("p_init", p_init, low=0.0, high=1.0, low_open=True)
        self.norm = norm
        self.eps = float(eps)
        self.n_queries = int(n_queries)
        self.p_init = float(p_init)

    def rescaled(self, fraction: float) -> "Square":
        """A copy with ``eps`` multiplied by ``fraction``."""
        check_range("fraction", fraction, low=0.0, low_open=True)
        clone = copy.copy(self)
        clone.eps = self.eps * fraction
        return clone

    @torch.no_grad()
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0:
            return x
        low, high = self.box
        n, c, h, w = x.shape
        margin = -cw_margin(model(x), y)  # > 0 while correctly classified
        best = x.clone()
        # 1 query: vertical stripes, one random sign per (image, channel, column)
        signs = torch.randint(0, 2, (n, c, 1, w), device=x.device).to(x.dtype) * 2 - 1
        candidate = torch.clamp(x + self.eps * signs, low, high)
        cand_margin = -cw_margin(model(candidate), y)
        take = (margin > 0) & (cand_margin < margin)
        best[take], margin[take] = candidate[take], cand_margin[take]
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        for i in range(1, self.n_queries):
            active = torch.nonzero(margin > 0).squeeze(1)
            if active.numel() == 0:
                break
            xa, ba = x[active], best[active]
            side = int(round(math.sqrt(patch_fraction(i, self.n_queries, self.p_init) * h * w)))
            side = min(max(side, 1), h - 1, w - 1) if min(h, w) > 1 else 1
            m = active.numel()
            top = torch.randint(0, h - side + 1, (m,), device=x.device)
            left = torch.randint(0, w - side + 1, (m,), device=x.device)
            in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
            in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
            window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (m, 1, h, w)
            new_signs = torch.randint(0, 2, (m, c, 1, 1), device=x.device).to(x.dtype) * 2 - 1
            proposal = torch.where(window, torch.clamp(xa + self.eps * new_signs, low, high), ba)
            # a window that the draw left unchanged is a wasted query: flip its signs instead
            same = ((proposal - ba).abs().flatten(1).amax(dim=1) < 1e-7).view(-1, 1, 1, 1)
            flipped = torch.where(window, torch.clamp(xa - self.eps * new_signs, low, high), ba)
            proposal = torch.where(same, flipped, proposal)
            new_margin = -cw_margin(model(proposal), y[active])
            better = new_margin < margin[active]
            best[active] = torch.where(better.view(-1, 1, 1, 1), proposal, ba)
            margin[active] = torch.where(better, new_margin, margin[active])
        return best
