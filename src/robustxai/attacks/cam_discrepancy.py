"""Inner maximisations of seed 000's interpretability-aware training (Boopathy et al. 2020) as PGD objectives.

Each class only says what L-inf PGD (:class:`~robustxai.attacks.pgd.PGD`: the seed's U(-eps, eps) start
clipped to the box, sign steps, projection onto the ball then the box, last iterate) increases:

* :class:`CAMDiscrepancyPGD`: ``ce_weight * CE(x') + lam * D(x, x')`` with D the CAM discrepancy D_int
  (``int``, ``int_adv``) or D_one (``int_one``) of :mod:`robustxai.attributions.discrepancy`; the clean
  CAM is computed once per batch, and q(x') is not detached (spec §7.3).
* :class:`LossIGDiscrepancyPGD`: ``ce_weight * CE(x') + (lam / B) * S(x, x')`` with S the loss-IG sums of
  the seed's IG-Norm (``ig``) or IG-based Int (``ig2``), see :func:`loss_ig_discrepancy`. The 1/B is the
  seed's: it differentiates a batch *mean* CE inside its IG (spec §7.4).

The seed ascends the gradient of the batch mean; PGD ascends the batch sum of these per-example values,
which has the same sign. The helpers are plain functions that the training methods share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attacks.base import ModelMode
from robustxai.attacks.pgd import PGD
from robustxai.attributions.cam import require_method
from robustxai.attributions.discrepancy import d_int, d_one
from robustxai.attributions.path_loss import loss_path_ig, path_fractions
from robustxai.utils.validation import check_choice, check_range

CAMKind = Literal["int", "one"]
IGKind = Literal["ig", "ig2"]


def cam_pair(model: nn.Module, x: Tensor, x_adv: Tensor) -> tuple[Tensor, Tensor]:
    """``model.cam`` of the clean and the perturbed batch in one pass: (CAM(x), CAM(x')), each (B, C, h, w)."""
    cams = model.cam(torch.cat([x, x_adv]))
    return cams[:len(x)], cams[len(x):]


def cam_discrepancy(cam_clean: Tensor, cam_adv: Tensor, y: Tensor, kind: CAMKind) -> tuple[Tensor, Tensor]:
    """Per-example D_int or D_one (B,) and the logits at x' (the spatial mean of its CAM, exactly the GAP head)."""
    logits_adv = cam_adv.mean((2, 3))
    if kind == "int":
        return d_int(cam_clean, cam_adv, logits_adv, y), logits_adv
    return d_one(cam_clean, cam_adv, y), logits_adv


def loss_ig_discrepancy(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, kind: IGKind, steps: int = 5,
                        max_batch: int | None = None) -> tuple[Tensor, Tensor]:
    """Per-example S(x, x') (B,) of the seed's loss-IG regularisers, and the logits at x'.

    IG_b = (x' - x) * mean over the ``steps`` right-Riemann points of grad CE_b (per example, graph kept).
    ``ig``: S = ||IG_b||_1 (IG-Norm); ``ig2``: S = ||IG_b||_1 + sum_hw |sum_cin IG_b| (the seed's ``twoclass``
    R_IG2, derived in spec §1.3). The seed's value is (lam / B) * S: callers multiply by that weight.
    """
    path = loss_path_ig(model, x, x_adv, y, steps=steps, every=1, reduction="none", create_graph=True,
                        return_ig=kind == "ig2", max_batch=max_batch)
    if kind == "ig":
        return path.norm, path.end_logits
    channel_sum = path.ig.sum(1).abs().flatten(1).sum(1)
    return path.norm + channel_sum, path.end_logits


@dataclass
class CleanMaps:
    """What the CAM objective compares with, computed once per batch: the labels and the clean CAM."""

    labels: Tensor
    cam: Tensor


class _WeightedPGD(PGD):
    """L-inf PGD on ``ce_weight * CE(x') + lam * R(x, x')``; with ``lam = 0`` it is plain CE PGD, exactly."""

    def __init__(self, eps: float, step_size: float, steps: int, ce_weight: float, lam: float, random_start: bool,
                 box: tuple[float, float], model_mode: ModelMode) -> None:
        super().__init__(norm="linf", eps=eps, step_size=step_size, steps=steps, random_start=random_start,
                         restarts=1, loss="ce", track_best=False, box=box, model_mode=model_mode)
        check_range("ce_weight", ce_weight, low=0.0)
        check_range("lam", lam, low=0.0)
        if ce_weight == 0.0 and not random_start:
            raise ValueError("random_start must be true when ce_weight is 0: at x' = x the discrepancy is 0 and "
                             "the gradient of its l1 norm is 0, so sign steps would never move away from x")
        self.ce_weight, self.lam = float(ce_weight), float(lam)

    def _plain(self, model: nn.Module, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(x_adv)
        return self.ce_weight * F.cross_entropy(logits, y, reduction="none"), logits

    def _combined(self, reg: Tensor, logits: Tensor, y: Tensor, weight: float) -> tuple[Tensor, Tensor]:
        value = weight * reg
        if self.ce_weight:
            value = value + self.ce_weight * F.cross_entropy(logits, y, reduction="none")
        return value, logits


class CAMDiscrepancyPGD(_WeightedPGD):
    """Seed 000's Int inner attack: maximise ``ce_weight * CE(x') + lam * D(x, x')``, D = D_int or D_one.

    ``int``/``int_one``: ``ce_weight = 0`` (the clean CE term is constant in x'; lam only scales the
    objective); ``int_adv``: ``ce_weight = 1`` with the method's lam. Needs a GAP network with ``cam()``
    (:class:`~robustxai.models.boopathy.BoopathyNet`).
    """

    def __init__(self, eps: float = 0.3, step_size: float = 0.01, steps: int = 40, discrepancy: CAMKind = "int",
                 ce_weight: float = 0.0, lam: float = 0.01, random_start: bool = True,
                 box: tuple[float, float] = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        super().__init__(eps, step_size, steps, ce_weight, lam, random_start, box, model_mode)
        check_choice("discrepancy", discrepancy, ("int", "one"))
        self.discrepancy: CAMKind = discrepancy

    def targets(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor | CleanMaps:
        """The labels and, when the discrepancy counts (lam > 0), the clean CAM (no graph: x is fixed)."""
        if self.lam == 0.0:
            return y
        require_method(model, "cam", "an attack without a CAM discrepancy (method/attack=pgd)")
        with torch.no_grad():
            return CleanMaps(y, model.cam(x))

    def attack_objective(self, model: nn.Module, x: Tensor, x_adv: Tensor,
                         targets: Tensor | CleanMaps) -> tuple[Tensor, Tensor]:
        if not isinstance(targets, CleanMaps):
            return self._plain(model, x_adv, targets)
        d, logits = cam_discrepancy(targets.cam, model.cam(x_adv), targets.labels, self.discrepancy)
        return self._combined(d, logits, targets.labels, self.lam)


class LossIGDiscrepancyPGD(_WeightedPGD):
    """Seed 000's IG inner attacks: maximise ``ce_weight * CE(x') + (lam / B) * S(x, x')``.

    S is :func:`loss_ig_discrepancy` (``ig`` or ``ig2``) with ``ig_steps`` right-Riemann points (the seed: 5),
    a gradient of a gradient w.r.t. x'. B is the batch size (the seed's batch-mean CE inside the IG).
    ``int_ig``: ``regulariser=ig2, ce_weight=0``; ``int_ig_adv``: ``ig2, ce_weight=1, lam=0.01``; the seed's
    IG-Sum-Norm: ``ig, ce_weight=1, lam=1``; its IG-Norm: ``ig, ce_weight=0``.
    """

    def __init__(self, eps: float = 0.3, step_size: float = 0.01, steps: int = 40, regulariser: IGKind = "ig2",
                 ce_weight: float = 0.0, lam: float = 0.01, ig_steps: int = 5, random_start: bool = True,
                 max_batch: int | None = None, box: tuple[float, float] = (0.0, 1.0),
                 model_mode: ModelMode = "eval") -> None:
        super().__init__(eps, step_size, steps, ce_weight, lam, random_start, box, model_mode)
        check_choice("regulariser", regulariser, ("ig", "ig2"))
        path_fractions(ig_steps)  # ValueError unless ig_steps is an integer >= 1
        if max_batch is not None:
            check_range("max_batch", max_batch, low=1)
        self.regulariser: IGKind = regulariser
        self.ig_steps, self.max_batch = int(ig_steps), max_batch

    def attack_objective(self, model: nn.Module, x: Tensor, x_adv: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if self.lam == 0.0:
            return self._plain(model, x_adv, targets)
        s, logits = loss_ig_discrepancy(model, x, x_adv, targets, self.regulariser, self.ig_steps, self.max_batch)
        return self._combined(s, logits, targets, self.lam / x.shape[0])


__all__ = ["CAMDiscrepancyPGD", "CleanMaps", "LossIGDiscrepancyPGD", "cam_discrepancy", "cam_pair",
           "loss_ig_discrepancy"]
