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

from typing import Literal

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


# -- ISA discrepancies (spec §4.2) --------------------------------------------------------------------
# The interpretability sneaking attack compares the maps of the classes in ``index`` (B, K) with weights
# (B, K) that sum to 1: one_class = {y: 1}, two_class = {y: 1/2, t: 1/2} (t the attack target, not
# soft-weighted as in training), all_class = {c: 1/C}. Maps are (B, K, ...) (any trailing shape: CAM
# (h, w), IG (C_in, H, W)); the attack loss is sum_k w_k ||dM_k||_p (l1, or the *squared* l2), the
# reported value divides each class's ||dM_k|| (l1, or the non-squared l2) by the clean map's range.

ISA_CLASSES = ("one_class", "two_class", "all_class")
ISA_NORMS = ("l1", "l2")
ISAClasses = Literal["one_class", "two_class", "all_class"]
ISANorm = Literal["l1", "l2"]


def isa_class_index(y: Tensor, target: Tensor, num_classes: int, classes: str) -> tuple[Tensor, Tensor]:
    """The classes (B, K) whose maps enter an ISA discrepancy and their weights (B, K), from labels and targets."""
    if classes not in ISA_CLASSES:
        raise ValueError(f"classes must be one of {', '.join(ISA_CLASSES)}, got {classes!r}")
    if y.shape != target.shape or y.ndim != 1:
        raise ValueError(f"y and target must both be (B,) class indices, got {tuple(y.shape)} and {tuple(target.shape)}")
    b = len(y)
    if classes == "one_class":
        return y[:, None], torch.ones(b, 1, device=y.device)
    if classes == "two_class":
        return torch.stack([y, target], dim=1), torch.full((b, 2), 0.5, device=y.device)
    index = torch.arange(num_classes, device=y.device).expand(b, num_classes)
    return index, torch.full((b, num_classes), 1.0 / num_classes, device=y.device)


def _class_diffs(maps_clean: Tensor, maps_adv: Tensor, weights: Tensor) -> Tensor:
    """M_k(x') - M_k(x) flattened per class, (B, K, D), after checking the shapes."""
    if maps_clean.shape != maps_adv.shape or maps_clean.ndim < 3:
        raise ValueError(f"maps_clean and maps_adv must both have shape (B, K, ...), got "
                         f"{tuple(maps_clean.shape)} and {tuple(maps_adv.shape)}")
    if weights.shape != maps_clean.shape[:2]:
        raise ValueError(f"weights must have shape (B, K) = {tuple(maps_clean.shape[:2])}, got {tuple(weights.shape)}")
    return (maps_adv - maps_clean).flatten(2)


def isa_discrepancy(maps_clean: Tensor, maps_adv: Tensor, weights: Tensor, norm: str = "l1") -> Tensor:
    """ISA's attack-loss D per example (B,): sum_k w_k ||M_k(x') - M_k(x)||_1 (``l1``) or ||.||_2^2 (``l2``).

    With :func:`isa_class_index`'s weights: one_class ||dM_y||, two_class 0.5 (||dM_y|| + ||dM_t||),
    all_class ||dM||/C over (h, w, C), the seed's ``cam_diff``. Differentiable in both maps.
    """
    if norm not in ISA_NORMS:
        raise ValueError(f"norm must be 'l1' or 'l2' (squared), got {norm!r}")
    diff = _class_diffs(maps_clean, maps_adv, weights)
    per_class = diff.abs().sum(2) if norm == "l1" else (diff * diff).sum(2)
    return (weights.to(per_class.dtype) * per_class).sum(1)


def normalized_isa_discrepancy(maps_clean: Tensor, maps_adv: Tensor, weights: Tensor, norm: str = "l1") -> Tensor:
    """The reported ISA discrepancy (B,): sum_k w_k ||dM_k|| / (max M_k(x) - min M_k(x)).

    ``l1``: the l1 norm; ``l2``: the non-squared l2 norm (as the seed reports it). A constant clean map
    (range 0) gives inf (or NaN if the map did not move either), as the seed's division would.
    """
    if norm not in ISA_NORMS:
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    diff = _class_diffs(maps_clean, maps_adv, weights)
    per_class = diff.abs().sum(2) if norm == "l1" else diff.norm(dim=2)
    flat = maps_clean.flatten(2)
    spread = flat.amax(2) - flat.amin(2)
    return (weights.to(per_class.dtype) * per_class / spread).sum(1)


__all__ = ["ISA_CLASSES", "ISA_NORMS", "ISAClasses", "ISANorm", "d_int", "d_one", "isa_class_index",
           "isa_discrepancy", "normalized_isa_discrepancy", "per_class_l1", "soft_target_weights"]
