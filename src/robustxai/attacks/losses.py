"""Per-example attack objectives (to be maximised), each ``(logits, target) -> (B,)``."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

AttackLoss = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Softmax cross-entropy of the true label."""
    return F.cross_entropy(logits, y, reduction="none")


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (positive once misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - true


KIM_CW_CAP = 500.0  # the seed's margin cap: relu(z_y - z_w + 500) is practically never 0


def cw_kim(logits: Tensor, y: Tensor) -> Tensor:
    """Kim et al.'s training CW loss ``-relu(z_y - z_w + 500)`` with ``z_w = max_j ((1 - onehot_y) * z)_j``.

    The seed zeroes the true class's slot instead of masking it to -inf, so ``z_w = max(0, max_{j != y} z_j)``:
    while every wrong logit is negative, only ``-z_y`` drives the attack (spec seed_kim.md sections 2 and 8.4).
    """
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.scatter(1, y[:, None], 0.0).amax(dim=1)
    return -F.relu(true - wrong + KIM_CW_CAP)


def kl_from_clean(logits: Tensor, clean_probs: Tensor) -> Tensor:
    """KL(p(x) || p(x')) with ``p(x)`` given as a fixed distribution: the TRADES objective."""
    log_p_adv = F.log_softmax(logits, dim=1)
    return torch.sum(clean_probs * (torch.log(clean_probs.clamp_min(1e-12)) - log_p_adv), dim=1)


LOSSES: dict[str, AttackLoss] = {"ce": cross_entropy, "cw": cw_margin, "kl": kl_from_clean, "cw_kim": cw_kim}
