"""The interpretability score of ROAR and KAR curves (Kim et al. 2019, notebook 3.5 ``get_scores``; spec 4.4, 4.6).

A curve is the test accuracy of networks retrained on occluded data against the fraction of pixels
*removed*, closed by two endpoints: ``start`` at 0 % removed and ``end`` at 100 % removed. The seed
hard-codes them (0.7366, the standard CIFAR net's clean accuracy, and 0.1, chance); here they are
measured values passed in (the accuracy of a network retrained on the un-occluded data, and chance
or the accuracy measured on fully occluded data). The score is the trapezoid area between the curve
and the random baseline's curve (the same endpoints): ROAR ``AUC(baseline - curve)`` (an attribution
whose top pixels matter should make accuracy fall faster than random removal), KAR
``AUC(curve - baseline)`` (keeping its top pixels should keep more accuracy than random ones).
KAR's accuracies are indexed by the fraction *kept* p, plotted at removed = 1 - p, as the seed does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from robustxai.metrics.functional import pearson, spearman

SEED_START = 0.7366  # the seed's hard-coded 0 %-occluded endpoint (standard CIFAR_CNN clean accuracy)
SEED_END = 0.1       # and its 100 % endpoint (chance on 10 classes)
SEED_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _vector(values: Sequence[float] | Tensor, name: str) -> Tensor:
    out = torch.as_tensor(values, dtype=torch.float64).flatten()
    if out.numel() == 0:
        raise ValueError(f"{name} is empty")
    if torch.isnan(out).any():
        raise ValueError(f"{name} holds NaN: {out.tolist()}")
    return out


def trapezoid_auc(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor) -> float:
    """The trapezoid-rule area under y(x) for increasing x (sklearn.metrics.auc's value), in float64."""
    x, y = _vector(x, "x"), _vector(y, "y")
    if x.shape != y.shape or len(x) < 2:
        raise ValueError(f"x and y need the same length >= 2, got {len(x)} and {len(y)}")
    if not bool((x[1:] > x[:-1]).all()):
        raise ValueError(f"x must be strictly increasing, got {x.tolist()}")
    return float(torch.trapezoid(y, x))


def _check_fractions(fractions: Tensor) -> None:
    if not bool(((fractions > 0) & (fractions < 1)).all()):
        raise ValueError(f"fractions must lie strictly between 0 and 1 (0 and 1 are the endpoints), "
                         f"got {fractions.tolist()}")
    if len(set(fractions.tolist())) != len(fractions):
        raise ValueError(f"fractions must be distinct, got {fractions.tolist()}")


def occlusion_curve(mode: str, fractions: Sequence[float] | Tensor, accuracies: Sequence[float] | Tensor,
                    start: float, end: float) -> tuple[Tensor, Tensor]:
    """(fraction removed, accuracy) with the endpoints: ROAR's ``fractions`` are removed, KAR's kept (x = 1 - p)."""
    if mode not in ("roar", "kar"):
        raise ValueError(f"mode must be 'roar' or 'kar', got {mode!r}")
    f, acc = _vector(fractions, "fractions"), _vector(accuracies, "accuracies")
    if f.shape != acc.shape:
        raise ValueError(f"one accuracy per fraction: got {len(f)} fractions and {len(acc)} accuracies")
    _check_fractions(f)
    removed = f if mode == "roar" else 1.0 - f
    order = removed.argsort()
    x = torch.cat([removed.new_zeros(1), removed[order], removed.new_ones(1)])
    v = torch.cat([acc.new_tensor([float(start)]), acc[order], acc.new_tensor([float(end)])])
    return x, v


def interpretability_score(mode: str, fractions: Sequence[float] | Tensor, accuracies: Sequence[float] | Tensor,
                           baseline: Sequence[float] | Tensor, start: float, end: float) -> float:
    """ROAR: AUC(baseline - curve); KAR: AUC(curve - baseline); both curves closed by ``start`` and ``end``."""
    x, v = occlusion_curve(mode, fractions, accuracies, start, end)
    _, b = occlusion_curve(mode, fractions, baseline, start, end)
    return trapezoid_auc(x, b - v) if mode == "roar" else trapezoid_auc(x, v - b)


def roar_score(fractions: Sequence[float], accuracies: Sequence[float], baseline: Sequence[float],
               start: float = SEED_START, end: float = SEED_END) -> float:
    """ROAR's score (fractions removed); the defaults are the seed's constant endpoints."""
    return interpretability_score("roar", fractions, accuracies, baseline, start, end)


def kar_score(fractions: Sequence[float], accuracies: Sequence[float], baseline: Sequence[float],
              start: float = SEED_START, end: float = SEED_END) -> float:
    """KAR's score (fractions kept); the defaults are the seed's constant endpoints."""
    return interpretability_score("kar", fractions, accuracies, baseline, start, end)


# -- correlations and the fitted line of the score plots (spec 4.6) --------------------------------
def correlations(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor) -> tuple[float, float]:
    """(Pearson r, Spearman rho with average ranks) of two equal-length series; NaN when one is constant."""
    a, b = _vector(x, "x"), _vector(y, "y")
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"correlations need two series of the same length >= 2, got {len(a)} and {len(b)}")
    return float(pearson(a[None], b[None])[0]), float(spearman(a[None], b[None])[0])


def linear_fit(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line (``np.polyfit(x, y, 1)``); NaN slope for constant x."""
    a, b = _vector(x, "x"), _vector(y, "y")
    da = a - a.mean()
    denominator = (da * da).sum()
    slope = float((da * (b - b.mean())).sum() / denominator) if float(denominator) > 0 else float("nan")
    return slope, float(b.mean()) if math.isnan(slope) else float(b.mean() - slope * a.mean())


__all__ = ["SEED_END", "SEED_FRACTIONS", "SEED_START", "correlations", "interpretability_score", "kar_score",
           "linear_fit", "occlusion_curve", "roar_score", "trapezoid_auc"]
