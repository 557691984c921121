"""Gradient-masking sanity checks (Carlini et al. 2019, Athalye et al. 2018) on a PGD evaluation.

A robust accuracy measured with a gradient attack is only an upper bound; when gradients are masked
(zero, shattered, saturated) it can be far too high. Each check here compares numbers that must
relate in a known way for a model whose gradients are informative, and flags the ones that do not:

- ``large_eps``: at a budget that spans the box, robust accuracy must fall to about 0;
- ``monotone_eps``: robust accuracy must not rise as eps grows;
- ``gradient_free``: a gradient-free attack (Square) must not beat PGD;
- ``transfer``: adversarial examples crafted on a surrogate model must not beat PGD on the model itself;
- ``more_steps``: robust accuracy must not rise with more PGD steps.

The decision functions (``check_*``) are pure: numbers in, a :class:`Check` out. :func:`run_checks`
measures the numbers on a bounded set of images and applies them.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustxai.attacks.base import Attack
from robustxai.attacks.pgd import PGD
from robustxai.attacks.square import Square
from robustxai.utils.validation import check_range

PASS, FLAG, SKIP = "pass", "flag", "skip"


@dataclass
class Check:
    """One check's outcome: ``status`` is ``pass``, ``flag`` or ``skip``; ``measured`` holds its numbers."""

    name: str
    status: str
    measured: dict[str, Any] = field(default_factory=dict)
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MaskingSettings:
    """Settings of the checks (``conf/masking/default.yaml``); the cost is bounded by ``n_images``.

    ``eps_multiples``: multiples of the attack's eps for the monotonicity check; ``large_eps_multiple``:
    the multiple at which robust accuracy must be at most ``max_acc_large_eps``; ``steps_multiple``: how
    many times more PGD steps the ``more_steps`` check runs; ``square_queries``: the Square attack's
    query budget; ``tolerance``: how much (absolute accuracy) a comparison may be off before it flags;
    ``surrogate_ckpt``: a checkpoint of another (e.g. clean-trained) copy of the architecture for the
    transfer check (``null``: the check is skipped).
    """

    def __init__(self, n_images: int = 64, eps_multiples: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 large_eps_multiple: float = 10.0, max_acc_large_eps: float = 0.1, steps_multiple: int = 5,
                 square_queries: int = 500, tolerance: float = 0.05, batch_size: int = 256,
                 surrogate_ckpt: str | None = None) -> None:
        check_range("n_images", n_images, low=1)
        if not eps_multiples or len(eps_multiples) < 2:
            raise ValueError(f"eps_multiples needs at least two values, got {list(eps_multiples)}")
        for m in eps_multiples:
            check_range("eps_multiples[...]", m, low=0.0)
        check_range("large_eps_multiple", large_eps_multiple, low=1.0)
        check_range("max_acc_large_eps", max_acc_large_eps, low=0.0, high=1.0)
        check_range("steps_multiple", steps_multiple, low=2)
        check_range("square_queries", square_queries, low=1)
        check_range("tolerance", tolerance, low=0.0, high=1.0)
        check_range("batch_size", batch_size, low=1)
        self.n_images, self.eps_multiples = int(n_images), tuple(sorted(float(m) for m in eps_multiples))
        self.large_eps_multiple, self.max_acc_large_eps = float(large_eps_multiple), float(max_acc_large_eps)
        self.steps_multiple, self.square_queries = int(steps_multiple), int(square_queries)
        self.tolerance, self.batch_size, self.surrogate_ckpt = float(tolerance), int(batch_size), surrogate_ckpt

    def __repr__(self) -> str:
        return "MaskingSettings(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()) + ")"


# -- the decisions (pure) -------------------------------------------------------------------------

def check_large_eps(eps: float, robust_acc: float, max_acc: float = 0.1) -> Check:
    """Flag a robust accuracy above ``max_acc`` at a budget so large that every image can be changed."""
    ok = robust_acc <= max_acc
    why = (f"at eps={eps:g} PGD drives robust accuracy to {robust_acc:.3f} (<= {max_acc:g})" if ok else
           f"at eps={eps:g}, where any image can be turned into another, robust accuracy is still "
           f"{robust_acc:.3f} (> {max_acc:g}): PGD is not finding examples that exist")
    return Check("large_eps", PASS if ok else FLAG, {"eps": eps, "robust_acc": robust_acc, "max_acc": max_acc}, why)


def check_monotone_eps(eps: Sequence[float], robust_acc: Sequence[float], tolerance: float = 0.05) -> Check:
    """Flag robust accuracy that rises by more than ``tolerance`` as eps grows (it must not increase)."""
    pairs = sorted(zip(eps, robust_acc))
    rises = [(a[0], b[0], b[1] - a[1]) for a, b in zip(pairs, pairs[1:]) if b[1] - a[1] > tolerance]
    measured = {"eps": [p[0] for p in pairs], "robust_acc": [p[1] for p in pairs], "tolerance": tolerance}
    if not rises:
        return Check("monotone_eps", PASS, measured, "robust accuracy does not rise with eps")
    lo, hi, by = max(rises, key=lambda r: r[2])
    return Check("monotone_eps", FLAG, measured,
                 f"robust accuracy rises by {by:.3f} from eps={lo:g} to eps={hi:g}: a larger budget "
                 f"contains every smaller one, so the attack is failing")


def check_gradient_free(pgd_acc: float, free_acc: float | None, tolerance: float = 0.05,
                        reason: str = "") -> Check:
    """Flag a gradient-free attack that beats PGD by more than ``tolerance`` (``None``: skipped)."""
    if free_acc is None:
        return Check("gradient_free", SKIP, {"pgd_acc": pgd_acc}, reason or "no gradient-free attack was run")
    measured = {"pgd_acc": pgd_acc, "square_acc": free_acc, "tolerance": tolerance}
    if free_acc < pgd_acc - tolerance:
        return Check("gradient_free", FLAG, measured,
                     f"the gradient-free Square attack gets robust accuracy {free_acc:.3f}, below PGD's "
                     f"{pgd_acc:.3f}: the gradients PGD follows are uninformative")
    return Check("gradient_free", PASS, measured, f"Square ({free_acc:.3f}) does not beat PGD ({pgd_acc:.3f})")


def check_transfer(pgd_acc: float, transfer_acc: float | None, tolerance: float = 0.05, reason: str = "") -> Check:
    """Flag a transfer attack from a surrogate that beats white-box PGD (``None``: skipped, with ``reason``)."""
    if transfer_acc is None:
        return Check("transfer", SKIP, {"pgd_acc": pgd_acc}, reason or "no surrogate model was given")
    measured = {"pgd_acc": pgd_acc, "transfer_acc": transfer_acc, "tolerance": tolerance}
    if transfer_acc < pgd_acc - tolerance:
        return Check("transfer", FLAG, measured,
                     f"examples crafted on the surrogate get robust accuracy {transfer_acc:.3f}, below white-box "
                     f"PGD's {pgd_acc:.3f}: the model's own gradients mislead the attack")
    return Check("transfer", PASS, measured,
                 f"transfer from the surrogate ({transfer_acc:.3f}) does not beat PGD ({pgd_acc:.3f})")


def check_more_steps(steps: Sequence[int], robust_acc: Sequence[float], tolerance: float = 0.05) -> Check:
    """Flag robust accuracy that rises by more than ``tolerance`` with more PGD steps."""
    pairs = sorted(zip(steps, robust_acc))
    measured = {"steps": [p[0] for p in pairs], "robust_acc": [p[1] for p in pairs], "tolerance": tolerance}
    rise = pairs[-1][1] - pairs[0][1]
    if rise > tolerance:
        return Check("more_steps", FLAG, measured,
                     f"{pairs[-1][0]} steps give robust accuracy {pairs[-1][1]:.3f}, above {pairs[0][0]} steps' "
                     f"{pairs[0][1]:.3f}: more optimisation should never help the model")
    return Check("more_steps", PASS, measured,
                 f"{pairs[-1][0]} steps: {pairs[-1][1]:.3f}, {pairs[0][0]} steps: {pairs[0][1]:.3f}")


def summarise(checks: Sequence[Check], **facts: Any) -> dict[str, Any]:
    """The ``masking`` record of one attack for ``results.json``: ``flagged`` names the checks that failed."""
    flagged = [c.name for c in checks if c.status == FLAG]
    return {**facts, "status": FLAG if flagged else PASS, "flagged": flagged,
            "checks": {c.name: c.to_dict() for c in checks}}


# -- the measurements -----------------------------------------------------------------------------

def robust_accuracy(model: nn.Module, attack: Attack, x: Tensor, y: Tensor, batch_size: int = 256,
                    source: nn.Module | None = None) -> float:
    """Accuracy of ``model`` on ``attack``'s examples (crafted on ``source``, default ``model``)."""
    correct = torch.zeros((), device=x.device)
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        x_adv = attack(source if source is not None else model, xb, yb)
        with torch.no_grad():
            correct += (model(x_adv).argmax(dim=1) == yb).sum()
    return float(correct) / len(y)


def _with_steps(attack: PGD, steps: int) -> PGD:
    clone = copy.copy(attack)
    clone.steps = steps
    return clone


def run_checks(model: nn.Module, attack: PGD, x: Tensor, y: Tensor, settings: MaskingSettings | None = None,
               surrogate: nn.Module | None = None, progress: bool = True) -> dict[str, Any]:
    """Measure every check for ``attack`` (a PGD) on ``x, y`` (at most ``settings.n_images``) and decide it."""
    if not isinstance(attack, PGD):
        raise ValueError(f"the masking checks need a PGD attack (its eps, steps and step size), got {attack!r}")
    s = settings or MaskingSettings()
    x, y = x[: s.n_images], y[: s.n_images]
    bs = s.batch_size
    with torch.no_grad():
        clean = float((model(x).argmax(dim=1) == y).float().mean())
    runs = len(s.eps_multiples) + 3 + (surrogate is not None)
    bar = tqdm(total=runs, desc="masking checks", leave=False, disable=not progress)

    def measure(a: Attack, source: nn.Module | None = None) -> float:
        value = robust_accuracy(model, a, x, y, bs, source=source)
        bar.update(1)
        return value

    curve = {m: measure(attack.rescaled(m)) if m > 0 else clean for m in s.eps_multiples}
    base = curve[1.0] if 1.0 in curve else measure(attack)
    large = measure(attack.rescaled(s.large_eps_multiple))
    more = measure(_with_steps(attack, attack.steps * s.steps_multiple))
    if attack.norm == "linf":
        square_acc, square_reason = measure(Square(eps=attack.eps, n_queries=s.square_queries, box=attack.box)), ""
    else:
        square_acc, square_reason = None, f"the Square attack here is L-inf only; this attack is {attack.norm}"
    transfer_acc = measure(attack, source=surrogate) if surrogate is not None else None
    bar.close()
    checks = [
        check_large_eps(attack.eps * s.large_eps_multiple, large, s.max_acc_large_eps),
        check_monotone_eps([attack.eps * m for m in curve], list(curve.values()), s.tolerance),
        check_gradient_free(base, square_acc, s.tolerance, square_reason),
        check_transfer(base, transfer_acc, s.tolerance,
                       "no surrogate model given (masking.surrogate_ckpt=<checkpoint of a clean-trained copy>)"),
        check_more_steps([attack.steps, attack.steps * s.steps_multiple], [base, more], s.tolerance),
    ]
    return summarise(checks, n_images=len(y), clean_acc=clean, eps=attack.eps, norm=attack.norm,
                     attack=repr(attack), square_queries=s.square_queries if square_acc is not None else None)
