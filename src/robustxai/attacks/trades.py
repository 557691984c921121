"""The TRADES inner maximisation: move p(x') away from p(x) in KL, inside an L-inf ball."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from robustxai.attacks.base import ModelMode
from robustxai.utils.validation import check_choice
from robustxai.attacks.pgd import PGD, Norm


class TradesKL(PGD):
    """PGD with ``loss="kl"``: ascend ``KL(p(x) || p(x'))`` (Zhang et al. 2019); labels are not used.

    ``start="normal"`` is TRADES' ``x + 0.001 * N(0, 1)``; ``start="uniform"`` is the U(-eps, eps)
    start of the interpretability-aware training code (seed 000, note T).
    """

    def __init__(
        self,
        norm: Norm = "linf",
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        start: Literal["normal", "uniform"] = "normal",
        box: tuple[float, float] = (0.0, 1.0),
        model_mode: ModelMode = "eval",
    ) -> None:
        check_choice("start", start, ("normal", "uniform"))
        super().__init__(norm=norm, eps=eps, step_size=step_size, steps=steps, random_start=True,
                         loss="kl", box=box, model_mode=model_mode)
        self.start = start

    def _random_delta(self, x: Tensor) -> Tensor:
        if self.start == "normal":
            return 0.001 * torch.randn_like(x)
        return super()._random_delta(x)


__all__ = ["TradesKL"]
