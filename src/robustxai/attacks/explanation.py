"""Attacks on explanations (Ghorbani et al. 2019, as used by RAR): move the attribution map, keep the label.

Each step moves every pixel by ``step_size`` along the sign of the gradient of an objective on the
attribution map of a smooth *surrogate* of the network (see :mod:`robustxai.attacks.surrogate`),
taken by autograd through the attribution (``create_graph=True``; for IG this is exactly the seed's
per-counterfactual chain rule Σ_i (i/m) grad_i), then projects to the L-inf ball and the pixel box.
After each step the ReLU network must still predict the clean label; among such iterates the one
whose ReLU map is farthest from the clean map by ``measure`` (Kendall's tau by default) is kept, per
image. The whole batch advances together with per-image state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor, nn

from robustxai.attacks.base import (
    Attack,
    ModelMode,
    attack_mode,
    check_choice,
    check_range,
)
from robustxai.attacks.surrogate import softplus_surrogate
from robustxai.attributions.postprocess import rar_saliency
from robustxai.metrics import functional as MF

if TYPE_CHECKING:  # pragma: no cover
    import lightning as L

Attribution = Callable[..., Tensor]
Measure = Literal["kendall", "spearman", "intersection", "mass_center"]
Surrogate = Literal["softplus", "none"]
MEASURES = ("kendall", "spearman", "intersection", "mass_center")
TARGET_PATTERNS = ("top_left", "top_right", "bottom_left", "bottom_right", "center", "border")


def top_k_mask(maps: Tensor, k: int) -> Tensor:
    """Boolean mask of each map's ``k`` largest entries; ties go to the lower flat index (deterministic)."""
    flat = maps.flatten(1)
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, MF.topk_indices(flat, k), True).view_as(maps)


@dataclass
class ExplanationAttackResult:
    """What one attack run found, per image (all tensors share the batch dimension N)."""

    x_adv: Tensor       # best label-preserving iterate, or the clean image where none beat the clean map
    clean_map: Tensor   # (N, H, W) post-processed map of the clean image (the network itself, not the surrogate)
    adv_map: Tensor     # (N, H, W) the same map of x_adv
    unchanged: Tensor   # (N,) bool: no label-preserving iterate beat the clean map, x_adv is the clean image
    criterion: Tensor   # (N,) the selection measure of x_adv (lower = farther from the clean map)


class ExplanationAttack(Attack):
    """Shared loop of the attacks on explanations; subclasses say which map objective is ascended.

    ``attribution(model, x, target, create_graph)`` gives signed maps, post-processed as RAR does
    (|A| summed over channels, normalised to sum H*W). ``surrogate='softplus'`` takes the directions from
    :func:`softplus_surrogate` ``(model, softplus_beta)``; ``'none'`` from the network itself (a ReLU
    network then gives zero directions for gradient maps). ``measure`` picks the iterate (``k_top``
    for ``intersection``). No random start. ``pixel_levels`` (e.g. 255) truncates iterates to the grid
    ``floor(x * levels) / levels`` like the seed's int cast in its GTSRB/Flower IG attack; off by default.
    ``chunk_size`` is the number of images per attribution pass (memory only: results do not depend
    on it); ``None`` picks ``max(1, max_chunk_values // (path points per image * values per image))``
    (path points: the attribution's ``steps``, else 1), i.e. a memory bound that follows the image size.
    """

    deterministic = True

    def __init__(
        self,
        attribution: Attribution,
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 100,
        k_top: int = 100,
        measure: Measure = "kendall",
        eval_k: int = 100,
        surrogate: Surrogate = "softplus",
        softplus_beta: float = 1.0,
        restarts: int = 1,
        pixel_levels: int | None = None,
        chunk_size: int | None = None,
        max_chunk_values: int = 2_500_000,
        box: tuple[float, float] = (0.0, 1.0),
        model_mode: ModelMode = "eval",
    ) -> None:
        super().__init__(box=box, model_mode=model_mode)
        if not callable(attribution):
            raise TypeError(f"attribution must be an attribution method (IntegratedGradients, Saliency), "
                            f"got {attribution!r}")
        check_range("eps", eps, low=0.0)
        check_range("step_size", step_size, low=0.0, low_open=True)
        check_range("steps", steps, low=1)
        check_range("k_top", k_top, low=1)
        check_range("eval_k", eval_k, low=1)
        check_choice("measure", measure, MEASURES)
        check_choice("surrogate", surrogate, ("softplus", "none"))
        check_range("softplus_beta", softplus_beta, low=0.0, low_open=True)
        check_range("restarts", restarts, low=1)
        if pixel_levels is not None:
            check_range("pixel_levels", pixel_levels, low=1)
        if chunk_size is not None:
            check_range("chunk_size", chunk_size, low=1)
        check_range("max_chunk_values", max_chunk_values, low=1)
        if restarts > 1 and self.deterministic:
            raise ValueError(f"restarts > 1 only makes sense for the random attack: {type(self).__name__} is "
                             "deterministic (no random start), so every repeat would be identical; use restarts=1")
        self.attribution = attribution
        self.eps, self.step_size, self.steps = float(eps), float(step_size), int(steps)
        self.k_top, self.eval_k, self.measure = int(k_top), int(eval_k), measure
        self.surrogate, self.softplus_beta = surrogate, float(softplus_beta)
        self.restarts = int(restarts)
        self.pixel_levels = None if pixel_levels is None else int(pixel_levels)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.max_chunk_values = int(max_chunk_values)
        self.on_step: Callable[[int], None] | None = None  # progress hook (set by the evaluation callback)

    # -- the contract ---------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self._run_all(model, x, y).x_adv

    def run(self, model: nn.Module, x: Tensor, y: Tensor) -> ExplanationAttackResult:
        """Like ``attack(model, x, y)`` but returns the maps and per-image bookkeeping too."""
        with attack_mode(model, self.model_mode):
            result = self._run_all(model, x.detach().clone(), y.detach())
        return ExplanationAttackResult(*(t.detach() for t in (result.x_adv, result.clean_map, result.adv_map,
                                                              result.unchanged, result.criterion)))

    def evaluation_callback(self, name: str, output_dir: Path) -> L.Callback:
        """The test-loop callback of ``src/eval.py attack=<name>``: IN, CO, Spearman, mass-centre shift."""
        from robustxai.callbacks.explanation_eval import ExplanationAttackEvaluation

        return ExplanationAttackEvaluation(name, self, output_dir=output_dir)

    # -- maps -----------------------------------------------------------------------------------
    def images_per_pass(self, x: Tensor) -> int:
        """``chunk_size``, or as many images as fit ``max_chunk_values`` path-point input values (at least 1)."""
        if self.chunk_size is not None:
            return self.chunk_size
        points = int(getattr(self.attribution, "steps", 1))
        return max(1, self.max_chunk_values // (points * x[0].numel()))

    def maps(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool = False) -> Tensor:
        """Post-processed ``(N, H, W)`` maps, :meth:`images_per_pass` images per attribution pass."""
        size = self.images_per_pass(x)
        parts = [rar_saliency(self.attribution(model, x[i:i + size], target[i:i + size], create_graph=create_graph))
                 for i in range(0, len(x), size)]
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    def score(self, clean: Tensor, maps: Tensor, measure: str | None = None) -> Tensor:
        """Per-image selection measure of ``maps`` against ``clean`` (lower = farther from the clean map)."""
        measure = measure or self.measure
        a, b = clean.flatten(1), maps.flatten(1)
        if measure == "kendall":
            return MF.kendall_tau(a, b)
        if measure == "spearman":
            return MF.spearman(a, b)
        if measure == "intersection":
            return MF.topk_intersection(a, b, self.k_top)
        return -MF.mass_center_shift(clean, maps)

    # -- what a subclass defines ----------------------------------------------------------------
    def prepare(self, surrogate: nn.Module, x: Tensor, target: Tensor, clean_map: Tensor) -> dict[str, Tensor]:
        """Per-batch constants of the objective (e.g. the clean top-k set)."""
        return {}

    def objective(self, maps: Tensor, context: dict[str, Tensor]) -> Tensor:
        """Per-image quantity to *increase*, from differentiable surrogate maps ``(N, H, W)``."""
        raise NotImplementedError

    def direction(self, surrogate: nn.Module, x: Tensor, target: Tensor, context: dict[str, Tensor]) -> Tensor:
        """Ascent direction of :meth:`objective` w.r.t. ``x`` (images are independent: chunks are exact)."""
        size = self.images_per_pass(x)
        grads = []
        for i in range(0, len(x), size):
            xi = x[i:i + size].detach().requires_grad_(True)
            maps = rar_saliency(self.attribution(surrogate, xi, target[i:i + size], create_graph=True))
            part = {k: v[i:i + size] for k, v in context.items()}
            (grad,) = torch.autograd.grad(self.objective(maps, part).sum(), xi)
            grads.append(grad)
        return torch.cat(grads) if len(grads) != 1 else grads[0]

    # -- the algorithm --------------------------------------------------------------------------
    def _surrogate(self, model: nn.Module) -> nn.Module:
        return softplus_surrogate(model, self.softplus_beta) if self.surrogate == "softplus" else model

    def _project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        x_adv = torch.clamp(x + torch.clamp(x_adv - x, -self.eps, self.eps), *self.box)
        if self.pixel_levels is not None:
            # the seed's int cast, on the [0,1] scale; the small offset keeps exact grid points in place,
            # the re-projection keeps the budget for images that are not on the grid themselves
            x_adv = torch.floor(x_adv * self.pixel_levels + 1e-4) / self.pixel_levels
            x_adv = torch.clamp(x + torch.clamp(x_adv - x, -self.eps, self.eps), *self.box)
        return x_adv

    def _run_all(self, model: nn.Module, x: Tensor, y: Tensor) -> ExplanationAttackResult:
        best = None
        for _ in range(self.restarts):
            run = self._run(model, x, y)
            best = run if best is None else _keep_lower_kendall(best, run)
        return best

    def _run(self, model: nn.Module, x: Tensor, y: Tensor) -> ExplanationAttackResult:
        pixels = x.shape[-2] * x.shape[-1]
        for name in ("k_top", "eval_k"):
            if getattr(self, name) > pixels:
                raise ValueError(f"{name}={getattr(self, name)} is larger than the {pixels} pixels of a map; "
                                 f"choose {name} <= {pixels}")
        with torch.no_grad():
            keep = model(x).argmax(dim=1)  # the label that must not change: the clean prediction
        clean_map = self.maps(model, x, y).detach()
        surrogate = self._surrogate(model)
        context = self.prepare(surrogate, x, y, clean_map)
        best_x, best_map = x.clone(), clean_map.clone()
        best_score = self.score(clean_map, clean_map)  # the clean image's own value: an iterate must beat it
        unchanged = torch.ones(len(x), dtype=torch.bool, device=x.device)
        x_adv = x.clone()
        for step in range(self.steps):
            grad = self.direction(surrogate, x_adv, y, context)
            x_adv = self._project(x_adv + self.step_size * grad.sign(), x).detach()
            with torch.no_grad():
                kept = model(x_adv).argmax(dim=1) == keep
            maps = self.maps(model, x_adv, y).detach()
            score = self.score(clean_map, maps)
            better = kept & (score < best_score)  # NaN scores (constant maps) never win
            mask = better.view(-1, *([1] * (x.dim() - 1)))
            best_x = torch.where(mask, x_adv, best_x)
            best_map = torch.where(better.view(-1, 1, 1), maps, best_map)
            best_score = torch.where(better, score, best_score)
            unchanged &= ~better
            if self.on_step is not None:
                self.on_step(step)
        return ExplanationAttackResult(best_x, clean_map, best_map, unchanged, best_score)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(eps={self.eps:g}, step_size={self.step_size:g}, steps={self.steps}, "
                f"k_top={self.k_top}, measure={self.measure}, surrogate={self.surrogate}, "
                f"attribution={self.attribution!r})")


def _keep_lower_kendall(a: ExplanationAttackResult, b: ExplanationAttackResult) -> ExplanationAttackResult:
    """Per image, the repeat with the lower Kendall tau to the clean map (RAR); a changed image beats an unchanged one."""
    tau_a = MF.kendall_tau(a.clean_map.flatten(1), a.adv_map.flatten(1))
    tau_b = MF.kendall_tau(b.clean_map.flatten(1), b.adv_map.flatten(1))
    take_b = (~b.unchanged & a.unchanged) | ((b.unchanged == a.unchanged) & (tau_b < tau_a))

    def pick(ta: Tensor, tb: Tensor) -> Tensor:
        return torch.where(take_b.view(-1, *([1] * (ta.dim() - 1))), tb, ta)

    return ExplanationAttackResult(pick(a.x_adv, b.x_adv), a.clean_map, pick(a.adv_map, b.adv_map),
                                   a.unchanged & b.unchanged, pick(a.criterion, b.criterion))


class TopKAttack(ExplanationAttack):
    """Push saliency out of the clean map's ``k_top`` most salient pixels: ascend −Σ_{i∈T} S̃_i."""

    def prepare(self, surrogate: nn.Module, x: Tensor, target: Tensor, clean_map: Tensor) -> dict[str, Tensor]:
        return {"top": top_k_mask(clean_map, self.k_top).to(clean_map.dtype)}

    def objective(self, maps: Tensor, context: dict[str, Tensor]) -> Tensor:
        return -(maps * context["top"]).sum(dim=(1, 2))


class MassCenterAttack(ExplanationAttack):
    """Move the map's centre of mass away from the clean one: ascend ‖c(S̃) − c₀‖².

    As in the seed, c₀ is the centre of the *surrogate's* clean map truncated to whole pixels; the
    truncation is what gives the first step a direction (at c₀ = c(S̃) exactly the gradient is zero).
    """

    def prepare(self, surrogate: nn.Module, x: Tensor, target: Tensor, clean_map: Tensor) -> dict[str, Tensor]:
        with torch.enable_grad():
            smooth = self.maps(surrogate, x, target).detach()
        return {"center": torch.trunc(MF.mass_center(smooth))}

    def objective(self, maps: Tensor, context: dict[str, Tensor]) -> Tensor:
        return (MF.mass_center(maps) - context["center"]).square().sum(dim=1)


class RandomDirectionAttack(ExplanationAttack):
    """Random sign steps (the seed's ``random`` baseline): a fresh N(0, 1) sign per pixel and step.

    The seed aggregates one Gaussian draw per counterfactual as Σ_i (i/m) n_i, which is itself Gaussian,
    so its sign is a fair ±1 per pixel; no attribution gradients are needed. The only random attack, so
    the only one where ``restarts > 1`` helps (the repeat with the lowest Kendall tau is kept, as in RAR).
    """

    deterministic = False

    def direction(self, surrogate: nn.Module, x: Tensor, target: Tensor, context: dict[str, Tensor]) -> Tensor:
        return torch.randn_like(x)

    def _surrogate(self, model: nn.Module) -> nn.Module:
        return model  # directions do not use the model


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
                 max_chunk_values: int = 2_500_000, box: tuple[float, float] = (0.0, 1.0),
                 model_mode: ModelMode = "eval") -> None:
        super().__init__(attribution, eps=eps, step_size=step_size, steps=steps, k_top=k_top, measure=measure,
                         eval_k=eval_k, surrogate=surrogate, softplus_beta=softplus_beta, restarts=restarts,
                         pixel_levels=pixel_levels, chunk_size=chunk_size, max_chunk_values=max_chunk_values,
                         box=box, model_mode=model_mode)
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


def target_pattern(name: str, height: int, width: int) -> Tensor:
    """A named (H, W) 0/1 target region: a quadrant, the central half-size square, or the border around it."""
    check_choice("target_map", name, TARGET_PATTERNS)
    region = torch.zeros(height, width)
    h2, w2 = height // 2, width // 2
    if name == "top_left":
        region[:h2, :w2] = 1
    elif name == "top_right":
        region[:h2, w2:] = 1
    elif name == "bottom_left":
        region[h2:, :w2] = 1
    elif name == "bottom_right":
        region[h2:, w2:] = 1
    else:
        region[height // 4:height // 4 + h2, width // 4:width // 4 + w2] = 1
        if name == "border":
            region = 1 - region
    return region


def load_target_map(path: str) -> Tensor:
    """Read an (H, W) target map from ``.pt``/``.pth``, ``.npy`` or an image file (grey levels scaled to [0,1])."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"target_map file {str(file)!r} does not exist; give an existing .pt/.npy/image file "
                         f"or one of the patterns {', '.join(TARGET_PATTERNS)}")
    suffix = file.suffix.lower()
    if suffix in (".pt", ".pth"):
        data = torch.load(file, weights_only=True, map_location="cpu")
        if not isinstance(data, Tensor):
            raise ValueError(f"target_map {str(file)!r} must hold a tensor, found {type(data).__name__}")
        region = data.float()
    elif suffix == ".npy":
        region = torch.from_numpy(np.load(file, allow_pickle=False)).float()
    else:
        try:
            from PIL import Image

            region = torch.from_numpy(np.asarray(Image.open(file).convert("L"), dtype=np.float32) / 255.0)
        except Exception as err:  # an unreadable or unknown format
            raise ValueError(f"target_map {str(file)!r} could not be read as .pt, .npy or an image ({err})") from err
    region = region.squeeze()
    if region.dim() != 2:
        raise ValueError(f"target_map {str(file)!r} must be an (H, W) map, got shape {tuple(region.shape)}")
    return region


__all__ = ["ExplanationAttack", "ExplanationAttackResult", "MassCenterAttack", "RandomDirectionAttack",
           "TargetMapAttack", "TopKAttack", "load_target_map", "target_pattern", "top_k_mask"]
