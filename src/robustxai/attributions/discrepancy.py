"""Differentiable, batched discrepancies between clean and perturbed interpretation maps (seed 000).

Every function takes per-class maps ``(B, C, h, w)`` (e.g. ``BoopathyNet.cam(x)``: raw, signed, at
feature resolution) and returns one value per example ``(B,)``, differentiable in both maps (and in
the logits where they enter), so training losses and attacks differentiate through them.

Training-time discrepancies of Boopathy et al. 2020 (spec §1.3: raw l1 sums over h x w, no 1/2):

    D_one(x, x') = sum_ij |CAM_y(x') - CAM_y(x)|
    D_int(x, x') = D_one(x, x') + sum_{c != y} q_c(x') sum_ij |CAM_c(x') - CAM_c(x)|,
    q_c(x')      = softmax_c(z(x')) 1[c != y] / sum_{c' != y} softmax_{c'}(z(x'))   (gradient NOT stopped)
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_maps(cam_clean: Tensor, cam_adv: Tensor, y: Tensor) -> None:
    """Raise a ValueError naming the argument unless the maps are (B, C, h, w) alike and y is (B,) labels."""
    if cam_clean.ndim != 4 or cam_clean.shape != cam_adv.shape:
        raise ValueError(f"cam_clean and cam_adv must both have shape (B, classes, h, w), got "
                         f"{tuple(cam_clean.shape)} and {tuple(cam_adv.shape)}")
    if y.shape != cam_clean.shape[:1]:
        raise ValueError(f"y must hold one label per example, shape ({cam_clean.shape[0]},), got {tuple(y.shape)}")


def per_class_l1(cam_clean: Tensor, cam_adv: Tensor) -> Tensor:
    """sum_ij |M_c(x') - M_c(x)| for every class: (B, C, h, w) twice -> (B, C)."""
    if cam_clean.ndim != 4 or cam_clean.shape != cam_adv.shape:
        raise ValueError(f"cam_clean and cam_adv must both have shape (B, classes, h, w), got "
                         f"{tuple(cam_clean.shape)} and {tuple(cam_adv.shape)}")
    return (cam_adv - cam_clean).abs().sum((2, 3))


def soft_target_weights(logits: Tensor, y: Tensor) -> Tensor:
    """q(x'): the softmax over the non-true classes (0 at y), differentiable in the logits: (B, C) -> (B, C).

    Equal to softmax(z) 1[c != y] / sum_{c' != y} softmax(z)_{c'}, computed as a softmax of the logits
    with the true class masked out (the same value without dividing small probabilities).
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (B, classes >= 2), got {tuple(logits.shape)}")
    if y.shape != logits.shape[:1]:
        raise ValueError(f"y must hold one label per example, shape ({logits.shape[0]},), got {tuple(y.shape)}")
    true = torch.nn.functional.one_hot(y, logits.shape[1]).bool()
    return torch.softmax(logits.masked_fill(true, float("-inf")), dim=1)


def d_one(cam_clean: Tensor, cam_adv: Tensor, y: Tensor) -> Tensor:
    """D_one: the true class's l1 map difference, per example (B,)."""
    _check_maps(cam_clean, cam_adv, y)
    return per_class_l1(cam_clean, cam_adv).gather(1, y[:, None]).squeeze(1)


def d_int(cam_clean: Tensor, cam_adv: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
    """D_int: true-class l1 plus the q(x')-weighted l1 of the other classes, per example (B,).

    ``logits_adv`` are z(x'); q is not detached, so gradients flow through it (spec §7.3).
    """
    _check_maps(cam_clean, cam_adv, y)
    if logits_adv.shape != cam_clean.shape[:2]:
        raise ValueError(f"logits_adv must have shape (B, classes) = {tuple(cam_clean.shape[:2])}, "
                         f"got {tuple(logits_adv.shape)}")
    l1 = per_class_l1(cam_clean, cam_adv)
    q = soft_target_weights(logits_adv, y)
    true = l1.gather(1, y[:, None]).squeeze(1)
    return true + (q * l1).sum(1)


__all__ = ["d_int", "d_one", "per_class_l1", "soft_target_weights"]
