"""The Lipschitz input-gradient penalty of Woods et al. (2019) and its adaptive weight psi.

Plain torch: the output selection (a random logit, or the "tandem" margin with probability zeta),
the penalty ``mean(|d s / d x|^z)`` over B*C*H*W in the model's input space, and the integrator
``I`` behind ``psi = psi_0 * exp(rate * I)``, kept in a float64 buffer so it is saved with checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.utils.validation import check_range


def draw_selection(n: int, num_classes: int, zeta: float, device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Per example: whether to use the tandem margin (probability ``zeta``) and a uniform random class.

    The random class is uniform over all classes, the true one included (as in the seed).
    """
    tandem = torch.rand(n, device=device, generator=generator) < zeta
    fair_class = torch.randint(num_classes, (n,), device=device, generator=generator)
    return tandem, fair_class


def selected_outputs(logits: Tensor, labels: Tensor, tandem: Tensor, fair_class: Tensor) -> Tensor:
    """One scalar per example: ``logits[i, fair_class[i]]``, or where ``tandem[i]`` the margin
    ``logit_y - max_{j != y} logit_j``.

    As in the seed, "j != y" is implemented by overwriting the true logit with the detached batch
    minimum minus 1 before the max, so the gradient of the max flows to the runner-up only.
    """
    fair = logits.gather(1, fair_class.unsqueeze(1)).squeeze(1)
    true = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    is_true = F.one_hot(labels, logits.shape[1]).bool()
    others = torch.where(is_true, logits.detach().min() - 1, logits)
    margin = true - others.max(dim=1).values
    return torch.where(tandem, margin, fair)


def input_gradient_penalty(outputs: Tensor, x: Tensor, power: float = 2.0, create_graph: bool = True) -> Tensor:
    """``mean(|d sum(outputs) / d x|^power)`` over every entry of ``x`` (B*C*H*W), not per example.

    ``x`` must have been given ``requires_grad`` before the forward pass that produced ``outputs``.
    With ``create_graph`` the result is differentiable w.r.t. the parameters (double backprop).
    """
    if not x.requires_grad:
        raise ValueError("input_gradient_penalty: x does not require grad; call x.requires_grad_(True) "
                         "before the forward pass that produced the outputs")
    grad = torch.autograd.grad(outputs.sum(), x, create_graph=create_graph)[0]
    if power == 2.0:
        return grad.square().mean()
    return grad.abs().pow(power).mean()


class PsiIntegrator(nn.Module):
    """The adaptive penalty weight: ``psi = psi_0 * exp(rate * I)``, ``I`` driven by the training CE.

    Each :meth:`update` (once per batch, before the penalty is computed) adds
    ``clip(-ln(ce / ce_target), -eps_worse, +eps_better)`` to ``I`` and clamps ``I`` at 0, so psi
    grows (fast) while the CE is below target and shrinks (slowly) while it is above. ``ce`` is
    detached: no gradient flows through psi. ``I`` is a float64 buffer, so it persists across epochs
    and is saved in, and restored from, every checkpoint; the update runs on the device (no host sync).
    """

    integral: Tensor

    def __init__(self, psi_0: float = 220.0, rate: float = 0.02, ce_target: float = 1.5,
                 eps_better: float = 1.0, eps_worse: float = 0.01) -> None:
        super().__init__()
        check_range("psi_0", psi_0, low=0.0)
        check_range("psi_rate", rate, low=0.0)
        check_range("ce_target", ce_target, low=0.0, low_open=True)
        check_range("eps_better", eps_better, low=0.0)
        check_range("eps_worse", eps_worse, low=0.0)
        self.psi_0, self.rate, self.ce_target = float(psi_0), float(rate), float(ce_target)
        self.eps_better, self.eps_worse = float(eps_better), float(eps_worse)
        self.register_buffer("integral", torch.zeros((), dtype=torch.float64))

    def psi(self) -> Tensor:
        """The current weight (a float64 scalar tensor)."""
        return self.psi_0 * torch.exp(self.rate * self.integral)

    @torch.no_grad()
    def update(self, ce: Tensor) -> Tensor:
        """Advance ``I`` with this batch's mean cross-entropy and return the new psi."""
        step = (-torch.log(ce.detach().to(torch.float64) / self.ce_target)).clamp(-self.eps_worse, self.eps_better)
        self.integral.copy_((self.integral + step).clamp(min=0.0))
        return self.psi()

    def extra_repr(self) -> str:
        return (f"psi_0={self.psi_0:g}, rate={self.rate:g}, ce_target={self.ce_target:g}, "
                f"eps_better={self.eps_better:g}, eps_worse={self.eps_worse:g}")
