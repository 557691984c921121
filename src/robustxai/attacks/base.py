"""The attack contract: ``attack(model, x, y) -> x_adv`` and ``attack.run(model, x, y) -> AttackResult``.

The threat model is fixed at construction. ``__call__`` returns only the adversarial batch (the cheap
path for training methods); ``run`` also says, per example, whether the attack succeeded, and carries
what a particular attack knows besides (a minimal radius, attribution maps, ...) for evaluation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch
from torch import Tensor, nn

from robustxai.utils.validation import check_choice

ModelMode = Literal["eval", "train", "keep"]
TargetClass = Literal["given", "next", "random", "least_likely"]
TARGET_CLASSES = ("given", "next", "random", "least_likely")


@dataclass
class AttackResult:
    """What an attack found, per example (every tensor shares the batch dimension N).

    ``x_adv``: the returned inputs; ``success``: (N,) bool, the attack's own criterion (prediction
    changed; the target class reached for a targeted attack; the map moved with the label kept for an
    attack on explanations); ``radius``: (N,) size of the returned perturbation where the attack is a
    minimal-perturbation search, else ``None``; ``extras``: anything else the attack reports (also
    readable as attributes, e.g. ``result.clean_map``).
    """

    x_adv: Tensor
    success: Tensor
    radius: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Tensor:
        extras = self.__dict__.get("extras", {})
        if name in extras:
            return extras[name]
        raise AttributeError(f"{type(self).__name__} has no field or extra {name!r} (extras: {sorted(extras)})")

    def detached(self) -> "AttackResult":
        """A copy whose tensors are cut from any autograd graph."""
        return AttackResult(self.x_adv.detach(), self.success.detach(),
                            None if self.radius is None else self.radius.detach(),
                            {k: v.detach() if isinstance(v, Tensor) else v for k, v in self.extras.items()})

    def select(self, mask: Tensor, other: "AttackResult") -> "AttackResult":
        """Per example, ``other``'s entries where ``mask`` is true and this result's elsewhere."""

        def pick(a: Tensor, b: Tensor) -> Tensor:
            return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), b, a)

        radius = None if self.radius is None or other.radius is None else pick(self.radius, other.radius)
        extras = {k: pick(v, other.extras[k]) if isinstance(v, Tensor) and k in other.extras else v
                  for k, v in self.extras.items()}
        return AttackResult(pick(self.x_adv, other.x_adv), pick(self.success, other.success), radius, extras)


def choose_targets(logits: Tensor, y: Tensor, rule: TargetClass) -> Tensor:
    """Target classes of a targeted attack from the clean ``logits`` and labels ``y``.

    ``given``: ``y`` already holds the targets; ``next``: ``(y + 1) mod C``; ``random``: uniform over the
    classes other than ``y`` (the global torch RNG, so ``seed`` fixes it); ``least_likely``: the class of
    lowest clean logit.
    """
    check_choice("target_class", rule, TARGET_CLASSES)
    num_classes = logits.shape[1]
    if rule == "given":
        return y
    if rule == "next":
        return (y + 1) % num_classes
    if rule == "least_likely":
        return logits.argmin(dim=1)
    return (y + torch.randint(1, num_classes, y.shape, device=y.device)) % num_classes


@contextmanager
def attack_mode(model: nn.Module, mode: ModelMode = "eval") -> Iterator[None]:
    """Run the model in ``mode`` with parameter gradients off, then restore its exact state.

    Every module's ``training`` flag and every parameter's ``requires_grad`` are put back, so an
    attack never changes the model it is given, even when called from inside a training step.
    """
    training = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if mode == "eval":
            model.eval()
        elif mode == "train":
            model.train()
        for p, _ in grads:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for m, flag in training:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)


class Attack(ABC):
    """Base class: subclasses implement :meth:`perturb` on a detached batch in the pixel box."""

    def __init__(self, box: tuple[float, float] = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        check_choice("model_mode", model_mode, ("eval", "train", "keep"))
        if len(box) != 2 or not box[0] < box[1]:
            raise ValueError(f"box must be (low, high) with low < high, got {box}")
        self.box = (float(box[0]), float(box[1]))
        self.model_mode: ModelMode = model_mode

    targeted: bool = False

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with attack_mode(model, self.model_mode):
            x_adv = self.perturb(model, x.detach().clone(), y.detach())
        return x_adv.detach()

    def run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        """Like ``attack(model, x, y)``, but returns the :class:`AttackResult` (success and extras too)."""
        with attack_mode(model, self.model_mode):
            result = self.search(model, x.detach().clone(), y.detach())
        return result.detached()

    def search(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        """The result for a detached batch, model mode already set; the default judges :meth:`perturb`'s output.

        Attacks that know more (targets, radii, maps) override this and :meth:`perturb` returns its ``x_adv``.
        """
        x_adv = self.perturb(model, x, y)
        with torch.no_grad():
            pred = model(x_adv).argmax(dim=1)
        return AttackResult(x_adv, pred != y)

    def rescaled(self, fraction: float) -> "Attack":
        """A copy whose budget is multiplied by ``fraction``; attacks without a budget refuse."""
        raise NotImplementedError(f"{type(self).__name__} has no budget to rescale")

    @abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Return adversarial examples for the batch ``x`` with labels ``y``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
