"""The target-map attack: pull saliency towards a target region (a file or a named pattern)."""

from __future__ import annotations

from torch import Tensor, nn

from robustxai.attacks.base import ModelMode
from robustxai.attacks.explanation.base import Attribution, ExplanationAttack, Measure, Postprocessing, Surrogate
from robustxai.attacks.explanation.target_maps import TARGET_PATTERNS, load_target_map, target_pattern


class TargetMapAttack(ExplanationAttack):
    """Pull saliency towards a target region: ascend Σ S̃ ⊙ target_map.

    ``target_map`` is a file (``.pt``/``.pth`` tensor, ``.npy`` array, or an image: ``.png``/``.jpg``/...)
    holding an (H, W) map of the input's size, or a named pattern (one of ``TARGET_PATTERNS``: a quadrant,
    the central half-size square, or the border around it) built at the input's size.
    """

    def __init__(self, attribution: Attribution, target_map: str | None = None, eps: float = 0.3,
                 step_size: float = 0.01, steps: int = 100, k_top: int = 100, measure: Measure = "kendall",
                 eval_k: int = 100, surrogate: Surrogate = "softplus", softplus_beta: float = 1.0,
                 restarts: int = 1, pixel_levels: int | None = None, chunk_size: int | None = None,
                 max_chunk_values: int = 2_500_000, postprocess: Postprocessing | None = None,
                 box: tuple[float, float] = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        super().__init__(attribution, eps=eps, step_size=step_size, steps=steps, k_top=k_top, measure=measure,
                         eval_k=eval_k, surrogate=surrogate, softplus_beta=softplus_beta, restarts=restarts,
                         pixel_levels=pixel_levels, chunk_size=chunk_size, max_chunk_values=max_chunk_values,
                         postprocess=postprocess, box=box, model_mode=model_mode)
        if target_map is None or str(target_map).strip() == "":
            raise ValueError("target_map is required for the target attack: give a file (.pt, .npy or an image) "
                             f"with an (H, W) map, or one of the patterns {', '.join(TARGET_PATTERNS)}")
        self.target_map = str(target_map)
        self._file_map = None if self.target_map in TARGET_PATTERNS else load_target_map(self.target_map)

    def prepare(self, surrogate: nn.Module, x: Tensor, target: Tensor, clean_map: Tensor) -> dict[str, Tensor]:
        h, w = x.shape[-2:]
        if self._file_map is None:
            region = target_pattern(self.target_map, h, w)
        else:
            region = self._file_map
            if tuple(region.shape) != (h, w):
                raise ValueError(f"target_map {self.target_map!r} is {tuple(region.shape)} but the images are "
                                 f"{h}x{w}; give a map of the input's size")
        region = region.to(device=x.device, dtype=x.dtype)
        return {"region": region.expand(len(x), h, w)}

    def objective(self, maps: Tensor, context: dict[str, Tensor]) -> Tensor:
        return (maps * context["region"]).sum(dim=(1, 2))


__all__ = ["TargetMapAttack"]
