"""Woods et al.'s iterative RMS attack ("Algorithm 1", seed 001 spec section 5).

One routine serves adversarial training (plain, L2,min), the ARA minimal-perturbation search
(l2min, btr) and adversarial explanations (plain with ``encourage_labels``). Directions are
per-example unit-RMS, step lengths decay linearly and sum to ``eps * eps_overshoot``; there is
never a projection and never a clip to the pixel box (the seed's semantics).
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attacks.base import Attack, AttackResult, ModelMode
from robustxai.utils.validation import check_choice, check_range

Mode = Literal["plain", "l2min", "btr"]
SanityCheck = Literal["error", "warn", "off"]


def rms(v: Tensor) -> Tensor:
    """Per-example root mean square over all non-batch dimensions."""
    return v.pow(2).flatten(1).mean(1).sqrt()


def step_lengths(total: float, steps: int) -> Tensor:
    """The seed's schedule: step t has length total * (steps - t) / (steps (steps + 1) / 2)."""
    t = torch.arange(steps, dtype=torch.float64)
    return total * (steps - t) / (steps * (steps + 1) / 2)


class SanityCheckError(ValueError):
    """The criterion was first met after half the steps (or never): raise eps or steps."""


class WoodsAttack(Attack):
    """Algorithm 1 of Woods et al. with every option of the seed's ``_adv_images``.

    Per step: CE gradient on the whole batch; per-example rule ``keep`` (follow the gradient) vs.
    shrink (step toward the clean image): ``plain``: RMS(delta) < eps; ``l2min``: still classified
    as ``y``; ``btr``: softmax p_y > 1/C. ``track_best`` (default: on for l2min/btr, as the seed's
    HEAD) returns the smallest-RMS iterate that met the criterion (the clean image if none did) after
    one extra evaluation-only pass; off returns the final iterate (the May-2019 code that trained
    ``resnet44-all.pt``). ``encourage_labels`` descends the CE of ``y`` (explanations);
    ``half_and_half`` leaves a Bernoulli(0.5) half of the batch clean; ``momentum`` is an EMA of
    unit-RMS directions without renormalisation. ``sanity_check`` handles examples that first met the
    criterion after ``steps // 2`` (or never): error (seed), warn, or off. ``box`` is accepted for
    the Attack interface only: nothing is clipped. ``model_mode="train"`` reproduces the seed's
    adversarial training (BN batch statistics; running statistics updated by every attack forward).
    """

    def __init__(self, eps: float = 0.1, steps: int = 7, eps_overshoot: float = 1.0, momentum: float = 0.0,
                 mode: Mode = "plain", track_best: bool | None = None, encourage_labels: bool = False,
                 half_and_half: bool = False, sanity_check: SanityCheck = "error",
                 model_mode: ModelMode = "eval", box: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__(box=box, model_mode=model_mode)
        check_range("eps", eps, low=0.0)
        check_range("steps", steps, low=0)
        check_range("eps_overshoot", eps_overshoot, low=0.0, low_open=True)
        check_range("momentum", momentum, low=0.0, high=1.0)
        if momentum == 1.0:
            raise ValueError("momentum must be < 1 (momentum 1 never moves), got 1.0")
        check_choice("mode", mode, ("plain", "l2min", "btr"))
        check_choice("sanity_check", sanity_check, ("error", "warn", "off"))
        if encourage_labels and mode != "plain":
            raise ValueError("encourage_labels needs mode='plain' (the seed refuses l2min/btr with it)")
        if isinstance(steps, bool) or int(steps) != steps:
            raise ValueError(f"steps must be an integer, got {steps!r}")
        self.eps = float(eps)
        self.steps = int(steps)
        self.eps_overshoot = float(eps_overshoot)
        self.momentum = float(momentum)
        self.mode: Mode = mode
        self.track_best = (mode != "plain") if track_best is None else bool(track_best)
        self.encourage_labels = encourage_labels
        self.half_and_half = half_and_half
        self.sanity_check: SanityCheck = sanity_check

    @property
    def total(self) -> float:
        """Total path length (sum of all step lengths), RMS units."""
        return self.eps * self.eps_overshoot

    def step_lengths(self) -> Tensor:
        return step_lengths(self.total, self.steps)

    def rescaled(self, fraction: float) -> WoodsAttack:
        check_range("fraction", fraction, low=0.0)
        clone = copy.copy(self)
        clone.eps = self.eps * fraction
        return clone

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.search(model, x, y).x_adv

    def _keep(self, logits: Tensor, y: Tensor, ms: Tensor) -> Tensor:
        """1.0 where the example keeps following the gradient, 0.0 where it shrinks back."""
        if self.mode == "btr":
            p = logits.softmax(1).gather(1, y[:, None])[:, 0]
            return (p > 1.0 / logits.shape[1]).to(logits.dtype)
        if self.mode == "l2min":
            return (logits.argmax(1) == y).to(logits.dtype)
        return (ms < self.eps ** 2).to(logits.dtype)

    def search(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        """Run Algorithm 1 on ``x`` (model mode and grads as the caller set them).

        ``success``: the criterion was met at some step (keep == 0); ``radius``: RMS of the returned
        perturbation; extras ``first_success``: the first step it was met (``steps + 1`` if never) and
        ``best_ms``: mean square of the returned perturbation when best-tracking (0 if never met), else
        of the final iterate.
        """
        n = x.shape[0]
        view = (n,) + (1,) * (x.dim() - 1)
        x = x.detach()
        never = torch.full((n,), self.steps + 1, dtype=torch.long, device=x.device)
        if self.steps <= 0:
            zeros = torch.zeros(n, dtype=x.dtype, device=x.device)
            return AttackResult(x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device), zeros,
                                {"first_success": never, "best_ms": zeros})
        delta = torch.zeros_like(x, requires_grad=True)
        if self.half_and_half:
            affected = (torch.rand(view, device=x.device) < 0.5).to(x.dtype)
        else:
            affected = torch.ones(view, dtype=x.dtype, device=x.device)
        mom = torch.zeros_like(x)
        first_ok = never.clone()
        if self.track_best:
            best = torch.zeros_like(x)
            best_ms = torch.full((n,), 1e30, dtype=x.dtype, device=x.device)
        lengths = self.step_lengths().tolist()
        for step in range(self.steps + int(self.track_best)):
            logits = model(x + delta)
            loss = F.cross_entropy(logits, y, reduction="none")
            grad, = torch.autograd.grad(loss.sum(), delta)
            d = delta.detach()
            ms = d.pow(2).flatten(1).mean(1)
            keep = self._keep(logits.detach(), y, ms)
            ok = keep == 0
            first_ok = torch.where(ok & (first_ok > step), torch.full_like(first_ok, step), first_ok)
            if self.track_best:
                better = ok & (ms < best_ms)
                best = torch.where(better.view(view), d, best)
                best_ms = torch.where(better, ms, best_ms)
                if step == self.steps:
                    break
            if self.encourage_labels:
                grad = -grad
            k = keep.view(view)
            direction = k * grad + (1 - k) * -d
            direction = direction / (1e-8 + direction.pow(2).flatten(1).mean(1).sqrt().view(view))
            if self.momentum > 0:
                mom = mom.mul_(self.momentum).add_(direction, alpha=1 - self.momentum)
                direction = mom.clone()
            direction = direction * affected
            with torch.no_grad():
                delta.add_(direction, alpha=lengths[step])
        final = best if self.track_best else delta.detach()
        self._check(first_ok)
        result_ms = best_ms if self.track_best else final.pow(2).flatten(1).mean(1)
        if self.track_best:
            result_ms = torch.where(first_ok <= self.steps, result_ms, torch.zeros_like(result_ms))
        x_adv = x + final
        return AttackResult(x_adv, first_ok <= self.steps, rms(x_adv - x),
                            {"first_success": first_ok, "best_ms": result_ms})

    def _check(self, first_ok: Tensor) -> None:
        """The seed's ``ensure_proper_minimization``: criterion met within ``steps // 2`` steps."""
        if self.sanity_check == "off":
            return
        late = first_ok > self.steps // 2
        if not bool(late.any()):
            return
        count, never = int(late.sum()), int((first_ok > self.steps).sum())
        message = (f"WoodsAttack sanity check: {count} of {len(first_ok)} examples met the "
                   f"{self.mode!r} criterion only after step {self.steps // 2} (= steps // 2) "
                   f"or never ({never} never), so the returned perturbation is not a good minimum. "
                   f"Increase eps (now {self.eps:g}) or steps (now {self.steps}), or set "
                   f"sanity_check='warn' or 'off'.")
        if self.sanity_check == "error":
            raise SanityCheckError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


__all__ = ["SanityCheckError", "WoodsAttack", "rms", "step_lengths"]
