"""The attack contract: ``attack(model, x, y) -> x_adv``, threat model fixed at construction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Iterator, Literal

import torch
from torch import Tensor, nn

ModelMode = Literal["eval", "train", "keep"]


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> None:
    """Raise a ValueError naming the argument when ``value`` is outside ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high:g}, got {value}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


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

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with attack_mode(model, self.model_mode):
            x_adv = self.perturb(model, x.detach().clone(), y.detach())
        return x_adv.detach()

    def rescaled(self, fraction: float) -> "Attack":
        """A copy whose budget is multiplied by ``fraction``; attacks without a budget refuse."""
        raise NotImplementedError(f"{type(self).__name__} has no budget to rescale")

    @abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Return adversarial examples for the batch ``x`` with labels ``y``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
