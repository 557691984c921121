"""Projected gradient descent (Madry et al.) under an L-inf or L2 budget, and FGSM as its one-step case."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn

from robustxai.attacks.base import Attack, ModelMode, check_choice, check_range
from robustxai.attacks.losses import LOSSES

Norm = Literal["linf", "l2"]
_DIV_EPS = 1e-10  # guards the per-example L2 normalisation, as torchattacks' PGDL2 does


def _per_example_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


class PGD(Attack):
    """Maximise a per-example loss inside ``{x' : ||x' - x|| <= eps} ∩ box`` with ``steps`` projected steps.

    L-inf steps move by ``step_size * sign(grad)``; L2 steps by ``step_size`` along the normalised
    gradient. ``restarts`` repeats the attack from fresh random starts and keeps, per example, the
    strongest result; ``track_best`` keeps the strongest iterate of each run instead of the last.
    "Strongest" means misclassified first, then the highest loss.
    """

    def __init__(
        self,
        norm: Norm = "linf",
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        random_start: bool = True,
        restarts: int = 1,
        loss: Literal["ce", "cw"] = "ce",
        track_best: bool = False,
        box: tuple[float, float] = (0.0, 1.0),
        model_mode: ModelMode = "eval",
    ) -> None:
        super().__init__(box=box, model_mode=model_mode)
        check_choice("norm", norm, ("linf", "l2"))
        check_range("eps", eps, low=0.0)
        check_range("step_size", step_size, low=0.0, low_open=True)
        check_range("steps", steps, low=1)
        check_range("restarts", restarts, low=1)
        self._check_loss(loss)
        if restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=True (otherwise every restart is identical)")
        self.norm: Norm = norm
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.loss = loss
        self.track_best = bool(track_best)

    def rescaled(self, fraction: float) -> "PGD":
        """A copy with ``eps`` and ``step_size`` multiplied by ``fraction`` (budget schedules)."""
        check_range("fraction", fraction, low=0.0, low_open=True)
        clone = copy.copy(self)
        clone.eps, clone.step_size = self.eps * fraction, self.step_size * fraction
        return clone

    # -- hooks a subclass may override ------------------------------------------------------
    def _check_loss(self, loss: str) -> None:
        check_choice("loss", loss, tuple(LOSSES))

    def _targets(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """What the loss compares the adversarial logits with (the labels, for CE and CW)."""
        return y

    def _objective(self, logits: Tensor, targets: Tensor) -> Tensor:
        return LOSSES[self.loss](logits, targets)

    def _random_delta(self, x: Tensor) -> Tensor:
        if self.norm == "linf":
            return torch.empty_like(x).uniform_(-self.eps, self.eps)
        direction = torch.randn_like(x)
        radius = torch.rand(x.shape[0], device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return direction / (_per_example_norm(direction) + _DIV_EPS) * radius * self.eps

    # -- the algorithm ------------------------------------------------------------------------
    def _project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            delta = torch.clamp(delta, -self.eps, self.eps)
        else:
            norms = _per_example_norm(delta).clamp_min(1e-12)  # a zero delta stays zero (no 0/0)
            delta = delta * torch.clamp(self.eps / norms, max=1.0)
        return torch.clamp(x + delta, *self.box)

    def _step(self, x_adv: Tensor, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return x_adv + self.step_size * grad.sign()
        return x_adv + self.step_size * grad / (_per_example_norm(grad) + _DIV_EPS)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        targets = self._targets(model, x, y)
        best = None
        for _ in range(self.restarts):
            run = self._run(model, x, y, targets, keep_score=self.restarts > 1)
            best = run if best is None else _BestIterate.merge(best, run)
        return best.x

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor, keep_score: bool) -> "_BestIterate":
        x_adv = self._project(x + self._random_delta(x), x) if self.random_start else x.clone()
        best = _BestIterate.empty(x) if self.track_best else None
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            loss = self._objective(logits, targets)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
            x_adv = x_adv.detach()
            if best is not None:
                best.update(x_adv, logits.detach(), y, loss.detach())
            x_adv = self._project(self._step(x_adv, grad), x)
        if best is None and not keep_score:
            return _BestIterate(x_adv, None, None)
        with torch.no_grad():
            logits = model(x_adv)
            loss = self._objective(logits, targets)
        if best is None:
            best = _BestIterate.empty(x)
        best.update(x_adv, logits, y, loss)
        return best


class _BestIterate:
    """Per-example strongest iterate so far: misclassified beats classified, then higher loss wins."""

    def __init__(self, x: Tensor, fooled: Tensor | None, loss: Tensor | None) -> None:
        self.x, self.fooled, self.loss = x, fooled, loss

    @classmethod
    def empty(cls, x: Tensor) -> "_BestIterate":
        n = x.shape[0]
        return cls(x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device),
                   torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype))

    def update(self, x: Tensor, logits: Tensor, y: Tensor, loss: Tensor) -> None:
        fooled = logits.argmax(dim=1) != y
        better = (fooled & ~self.fooled) | ((fooled == self.fooled) & (loss > self.loss))
        self.x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x, self.x)
        self.fooled = self.fooled | fooled
        self.loss = torch.where(better, loss, self.loss)

    @staticmethod
    def merge(a: "_BestIterate", b: "_BestIterate") -> "_BestIterate":
        better = (b.fooled & ~a.fooled) | ((b.fooled == a.fooled) & (b.loss > a.loss))
        mask = better.view(-1, *([1] * (a.x.dim() - 1)))
        return _BestIterate(torch.where(mask, b.x, a.x), a.fooled | b.fooled, torch.where(better, b.loss, a.loss))


class FGSM(PGD):
    """Fast gradient sign method: one full-size step from the clean point (PGD with ``steps=1``)."""

    def __init__(self, norm: Norm = "linf", eps: float = 0.3, loss: Literal["ce", "cw"] = "ce",
                 box: tuple[float, float] = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        check_range("eps", eps, low=0.0, low_open=True)
        super().__init__(norm=norm, eps=eps, step_size=eps, steps=1, random_start=False, loss=loss,
                         box=box, model_mode=model_mode)
