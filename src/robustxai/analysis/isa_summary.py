"""The seed's ISA statistics (spec 4.2, ``funcs.isa_cam``): monotone discrepancy curves, total discrepancy, slope.

Inputs are per image and per point of the ISA curve, shape (N, K): point 0 is the minimum-eps adversarial
example (gamma = 0), points 1..K-1 the ISA examples at the eps multipliers, in increasing order.
``valid`` is False where the seed scores -1 (the attack failed, z_t(x') < z_y(x'), or the clean image
already preferred the target); such points are left out, as the seed drops them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def point_valid(clean_logits: Tensor, adv_logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """The seed's scoring rule per point: the target beats the true class at x' and did not at x (ties count)."""
    def pick(z: Tensor, c: Tensor) -> Tensor:
        return z.gather(-1, c.unsqueeze(-1)).squeeze(-1)

    return ~(pick(adv_logits, target) < pick(adv_logits, y)) & ~(pick(clean_logits, target) > pick(clean_logits, y))


def monotone_curve(d: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, the running minimum of ``d`` over its valid points (N, K; inf before the first), and the
    index of the point it comes from (the seed's "a larger discrepancy at a larger eps can reuse the
    previous attack")."""
    masked = torch.where(valid, d, torch.full_like(d, float("inf")))
    values, index = torch.cummin(masked, dim=1)
    return values, index


@dataclass
class ISASummary:
    """The seed's aggregates over the kept images (those whose monotone curve is not flat).

    ``total_discrepancy`` and ``nslope`` are divided by the number of kept *points*, as the seed does;
    ``nslope_per_image`` divides the same sum by the number of kept images. ``kendall`` averages the
    monotone curve's tau over kept points (the seed computes it, unreported); ``pearson`` the raw points' r.
    """

    total_discrepancy: float
    nslope: float
    nslope_per_image: float
    kendall: float
    pearson: float
    kept_images: int
    points: int
    curve: Tensor          # (K,) mean monotone discrepancy at each point over the images defined there
    curve_eps: Tensor      # (K,) mean L-inf size of the points over the same images


def summarize(d: Tensor, eps: Tensor, valid: Tensor, tau: Tensor | None = None,
              pearson: Tensor | None = None) -> ISASummary:
    """Aggregate (N, K) discrepancies ``d``, point sizes ``eps`` and the ``valid`` mask as the seed's ``isa_cam``."""
    if not (d.shape == eps.shape == valid.shape) or d.ndim != 2:
        raise ValueError(f"d, eps and valid must share a (N, K) shape, got {tuple(d.shape)}, "
                         f"{tuple(eps.shape)}, {tuple(valid.shape)}")
    d, eps = d.double(), eps.double()
    tau = torch.zeros_like(d) if tau is None else tau.double()
    pearson = torch.zeros_like(d) if pearson is None else pearson.double()
    n, k = d.shape
    mono, index = monotone_curve(d, valid)
    any_valid = valid.any(dim=1)
    first = valid.int().argmax(dim=1)
    last = k - 1 - valid.flip(1).int().argmax(dim=1)
    rows = torch.arange(n, device=d.device)
    x0, xl = d[rows, first], mono[rows, last]
    y0, yl = eps[rows, first], eps[rows, last]
    kept = any_valid & (x0 != xl)
    counts = valid.sum(dim=1)
    points = int(counts[kept].sum())
    zero = torch.zeros_like(d)
    mono_valid = torch.where(valid & kept[:, None], mono, zero)
    tau_mono = torch.where(valid & kept[:, None], tau.gather(1, index.clamp(max=k - 1)), zero)
    pearson_valid = torch.where(valid & kept[:, None], pearson, zero)
    slope = (x0 - xl) * y0 / ((yl - y0) * x0)
    slope_kept = kept & torch.isfinite(slope)  # equal first and last sizes would divide by 0 (the seed's crash)
    slope_sum = float(torch.where(slope_kept, slope, torch.zeros_like(slope)).sum())
    per_points = max(points, 1)
    defined = torch.isfinite(mono)
    curve = torch.where(defined, mono, zero).sum(0) / defined.sum(0).clamp(min=1)
    curve = torch.where(defined.any(0), curve, torch.full_like(curve, float("nan")))
    curve_eps = torch.where(defined, eps, zero).sum(0) / defined.sum(0).clamp(min=1)
    nan = float("nan")
    return ISASummary(
        total_discrepancy=float(mono_valid.sum()) / per_points if points else nan,
        nslope=slope_sum / per_points if points else nan,
        nslope_per_image=slope_sum / max(int(slope_kept.sum()), 1) if bool(slope_kept.any()) else nan,
        kendall=float(tau_mono.sum()) / per_points if points else nan,
        pearson=float(pearson_valid.sum()) / per_points if points else nan,
        kept_images=int(kept.sum()), points=points, curve=curve.float(), curve_eps=curve_eps.float())


@dataclass
class BoundCheck:
    """The bound-tightness check of the min-eps attack (spec 3, ``min_pgd_attack``)."""

    holds: float           # fraction of successful images where D / (h w) >= margin (within ``tol``)
    min_slack: float       # min over successful images of D / (h w) - margin (>= -tol when the bound holds)
    margin: float          # mean clean margin 0.5 (z_y(x) - z_t(x)) over successful images
    discrepancy: float     # mean D / (h w) over successful images
    images: int            # successful images


def bound_check(margin: Tensor, discrepancy: Tensor, success: Tensor, tol: float = 1e-4) -> BoundCheck:
    """Check D_2class,l1(x, x') / (h w) >= 0.5 (z_y(x) - z_t(x)) on every image where the attack succeeded.

    ``tol`` is relative to the margin's scale (float32 rounding of the logits as CAM means).
    """
    ok = success.bool()
    if not bool(ok.any()):
        nan = float("nan")
        return BoundCheck(nan, nan, nan, nan, 0)
    m, dd = margin[ok].double(), discrepancy[ok].double()
    slack = dd - m
    scale = tol * max(1.0, float(m.abs().max()))
    return BoundCheck(holds=float((slack >= -scale).double().mean()), min_slack=float(slack.min()),
                      margin=float(m.mean()), discrepancy=float(dd.mean()), images=int(ok.sum()))


__all__ = ["BoundCheck", "ISASummary", "bound_check", "monotone_curve", "point_valid", "summarize"]
