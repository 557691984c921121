"""The top-k attack: push saliency out of the clean map's most salient pixels (Ghorbani et al.)."""

from __future__ import annotations

from torch import Tensor, nn

from robustxai.attacks.explanation.base import ExplanationAttack, top_k_mask


class TopKAttack(ExplanationAttack):
    """Push saliency out of the clean map's ``k_top`` most salient pixels: ascend −Σ_{i∈T} S̃_i."""

    def prepare(self, surrogate: nn.Module, x: Tensor, target: Tensor, clean_map: Tensor) -> dict[str, Tensor]:
        return {"top": top_k_mask(clean_map, self.k_top).to(clean_map.dtype)}

    def objective(self, maps: Tensor, context: dict[str, Tensor]) -> Tensor:
        return -(maps * context["top"]).sum(dim=(1, 2))


__all__ = ["TopKAttack"]
