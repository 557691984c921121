"""The attribution contract: ``attribution(model, x, target, create_graph=False) -> maps``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


def check_positive_int(name: str, value: int | None, allow_none: bool = False) -> None:
    """Raise a ValueError naming the argument unless ``value`` is an int >= 1 (or None if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1{' or None' if allow_none else ''}, got {value!r}")


def as_target(target: int | Tensor, x: Tensor) -> Tensor:
    """The target classes as a (N,) int64 tensor on ``x``'s device (an int means the same class for all)."""
    n = x.shape[0]
    if isinstance(target, bool):
        raise TypeError("target must be an int or a (N,) integer tensor, got a bool")
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=x.device)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be an int or a (N,) integer tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must hold class indices (an integer tensor), got dtype {target.dtype}")
    if target.ndim == 0:
        target = target.expand(n)
    if target.shape != (n,):
        raise ValueError(f"target must have shape ({n},) to match x's batch, got {tuple(target.shape)}")
    return target.to(device=x.device, dtype=torch.long)


def target_logit_grad(model: nn.Module, z: Tensor, target: Tensor, create_graph: bool) -> Tensor:
    """d logit_target / d z for every row of ``z`` (one forward and one backward pass).

    Rows are independent as long as the model treats batch elements independently (no BatchNorm
    in training mode). Only input gradients are requested, so no parameter ``.grad`` is touched.
    """
    if not z.requires_grad:
        z = z.requires_grad_()
    logits = model(z)
    if logits.ndim != 2:
        raise ValueError(f"the model must return (N, classes) logits, got shape {tuple(logits.shape)}")
    selected = logits.gather(1, target.unsqueeze(1))
    (grad,) = torch.autograd.grad(selected.sum(), z, create_graph=create_graph)
    return grad


def input_for_grad(x: Tensor, create_graph: bool) -> Tensor:
    """``x`` itself when the result must stay differentiable w.r.t. it, otherwise a detached leaf."""
    if create_graph and x.requires_grad:
        return x
    return x.detach().requires_grad_()


class Attribution(ABC):
    """Base class: subclasses implement :meth:`attribute`; ``__call__`` checks inputs and detaches.

    The model's mode (train/eval) and parameters are left as they are: call ``model.eval()``
    yourself if that is what you want. With ``create_graph=True`` the maps are differentiable
    w.r.t. ``x`` (if it requires grad) and the model's parameters.
    """

    def __call__(self, model: nn.Module, x: Tensor, target: int | Tensor,
                 create_graph: bool = False) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor (N, ...), got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
        if x.ndim < 2:
            raise ValueError(f"x must be batched, shape (N, ...), got {tuple(x.shape)}")
        target = as_target(target, x)
        with torch.enable_grad():
            maps = self.attribute(model, x, target, create_graph)
        return maps if create_graph else maps.detach()

    @property
    def points_per_input(self) -> int:
        """Model evaluations per input image (path points, noise samples); callers size their batches by it."""
        return 1

    @abstractmethod
    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        """Signed attribution maps for the (N,) int64 ``target`` classes: ``x``'s shape, or (N, h, w) at a
        layer's resolution for the CAM family (:mod:`robustxai.attributions.cam`, ``gradcam``)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
