"""Minimal adversarial radii: Woods et al.'s search per image (seed 001, spec section 3), the input of ARA."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustxai.attacks.woods import WoodsAttack

ARA_MODES = {"attack": "l2min", "btr": "btr"}  # ARA name -> WoodsAttack keep/shrink rule


def seed_subset(n_total: int, n_images: int, seed: int = 1776) -> Tensor:
    """The seed's ARA image set: the first ``n_images`` of ``torch.randperm(n_total)`` after seeding 1776.

    A private generator seeded like the global one gives the same mt19937 stream, so the global RNG
    is untouched (the seed saved and restored it).
    """
    if not 1 <= n_images <= n_total:
        raise ValueError(f"n_images must be in [1, {n_total}] (the test split size), got {n_images}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=generator)[:n_images]


def make_ara_attack(kind: str, eps: float = 20.0, steps: int = 450, momentum: float = 0.9,
                    sanity_check: str = "error") -> WoodsAttack:
    """The seed's ``calculate-ara`` search: eval mode, overshoot 1, best-tracking, momentum EMA."""
    if kind not in ARA_MODES:
        raise ValueError(f"ARA kind must be one of {sorted(ARA_MODES)}, got {kind!r}")
    return WoodsAttack(eps=eps, steps=steps, eps_overshoot=1.0, momentum=momentum, mode=ARA_MODES[kind],
                       track_best=True, sanity_check=sanity_check, model_mode="eval")  # type: ignore[arg-type]


def minimal_radii(model: nn.Module, x: Tensor, y: Tensor, attack: WoodsAttack, batch_size: int = 128) -> Tensor:
    """Per-image RMS of the smallest successful perturbation; 0 if already failing, inf if never found.

    The radius is the attack's ``radius``, RMS(x_adv - x) of the returned images, as the seed measures
    it; images the search never fooled (possible only with ``sanity_check`` warn/off) get ``inf``.
    """
    out = []
    for start in range(0, len(x), batch_size):
        result = attack.run(model, x[start:start + batch_size], y[start:start + batch_size])
        out.append(torch.where(result.success, result.radius, torch.full_like(result.radius, float("inf"))))
    return torch.cat(out)


__all__ = ["ARA_MODES", "make_ara_attack", "minimal_radii", "seed_subset"]
