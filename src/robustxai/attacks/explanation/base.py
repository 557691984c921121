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
from typing import Literal

import torch
from torch import Tensor, nn

from robustxai.attacks.base import Attack, AttackResult, ModelMode
from robustxai.utils.validation import check_choice, check_range
from robustxai.attacks.surrogate import softplus_surrogate
from robustxai.attributions.postprocess import rar_saliency
from robustxai.metrics import functional as MF
from robustxai.metrics.map_measures import map_measure

Attribution = Callable[..., Tensor]
Postprocessing = Callable[[Tensor], Tensor]
Measure = Literal["kendall", "spearman", "intersection", "mass_center"]
Surrogate = Literal["softplus", "none"]
Select = Literal["best", "last"]
MEASURES = ("kendall", "spearman", "intersection", "mass_center")


def top_k_mask(maps: Tensor, k: int) -> Tensor:
    """Boolean mask of each map's ``k`` largest entries; ties go to the lower flat index (deterministic)."""
    flat = maps.flatten(1)
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, MF.topk_indices(flat, k), True).view_as(maps)


def explanation_result(x_adv: Tensor, clean_map: Tensor, adv_map: Tensor, unchanged: Tensor,
                       criterion: Tensor) -> AttackResult:
    """The :class:`AttackResult` of an attack on explanations (success: the map moved, the label kept)."""
    return AttackResult(x_adv, ~unchanged, extras={"clean_map": clean_map, "adv_map": adv_map,
                                                   "unchanged": unchanged, "criterion": criterion})


class ExplanationAttack(Attack):
    """Shared loop of the attacks on explanations; subclasses say which map objective is ascended.

    ``attribution(model, x, target, create_graph)`` gives signed maps, post-processed as RAR does
    (|A| summed over channels, normalised to sum H*W). ``surrogate='softplus'`` takes the directions from
    :func:`softplus_surrogate` ``(model, softplus_beta)``; ``'none'`` from the network itself (a ReLU
    network then gives zero directions for gradient maps). ``measure`` picks the iterate (``k_top``
    for ``intersection``). No random start. ``pixel_levels`` (e.g. 255) truncates iterates to the grid
    ``floor(x * levels) / levels`` like the seed's int cast in its GTSRB/Flower IG attack; off by default.
    ``chunk_size`` is the number of images per attribution pass (memory only: results do not depend
    on it); ``None`` picks ``max(1, max_chunk_values // (points per image * values per image))``
    (the attribution's ``points_per_input``), i.e. a memory bound that follows the image size.
    ``postprocess`` turns attributions into the compared maps (default :func:`rar_saliency`; e.g.
    :class:`~robustxai.attributions.postprocess.Postprocess` from a config).
    ``random_start`` starts from x + U(-eps, eps) (clipped to the box) and ``select="last"`` returns the
    last iterate instead of the best label-keeping one, with ``label_kept`` in the extras (success): seed
    000's AAI (Boopathy et al., spec 3), whose tau averages only the images that kept their label.
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
        postprocess: Postprocessing | None = None,
        random_start: bool = False,
        select: Select = "best",
        box: tuple[float, float] = (0.0, 1.0),
        model_mode: ModelMode = "eval",
    ) -> None:
        super().__init__(box=box, model_mode=model_mode)
        check_choice("select", select, ("best", "last"))
        if select == "last" and restarts > 1:
            raise ValueError("select='last' keeps no per-restart score to choose by: use restarts=1")
        self.random_start, self.select = bool(random_start), select
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
        if restarts > 1 and self.deterministic and not random_start:
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
        if postprocess is not None and not callable(postprocess):
            raise TypeError(f"postprocess must map (N, C, H, W) attributions to (N, H, W) maps, got {postprocess!r}")
        self.postprocess: Postprocessing = postprocess if postprocess is not None else rar_saliency
        self.on_step: Callable[[int], None] | None = None  # progress hook (set by the evaluation callback)

    # -- the contract ---------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.search(model, x, y).x_adv

    def search(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        """Every restart of the loop; ``success`` = some label-preserving iterate beat the clean map.

        Extras: ``clean_map`` and ``adv_map`` ((N, H, W) post-processed maps of the network itself, not
        the surrogate), ``unchanged`` ((N,) bool, ``x_adv`` is the clean image) and ``criterion`` (the
        selection measure of ``x_adv``, lower = farther from the clean map).
        """
        best = None
        for _ in range(self.restarts):
            run = self._run(model, x, y)
            best = run if best is None else _keep_lower_kendall(best, run)
        return best

    # -- maps -----------------------------------------------------------------------------------
    def images_per_pass(self, x: Tensor) -> int:
        """``chunk_size``, or as many images as fit ``max_chunk_values`` path-point input values (at least 1)."""
        if self.chunk_size is not None:
            return self.chunk_size
        points = int(self.attribution.points_per_input)
        return max(1, self.max_chunk_values // (points * x[0].numel()))

    def maps(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool = False) -> Tensor:
        """Post-processed ``(N, H, W)`` maps, :meth:`images_per_pass` images per attribution pass."""
        size = self.images_per_pass(x)
        parts = [self.postprocess(self.attribution(model, x[i:i + size], target[i:i + size], create_graph=create_graph))
                 for i in range(0, len(x), size)]
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    def score(self, clean: Tensor, maps: Tensor, measure: str | None = None) -> Tensor:
        """Per-image selection measure of ``maps`` against ``clean`` (lower = farther from the clean map)."""
        measure = measure or self.measure
        if measure == "mass_center":
            return -map_measure("mass_center_shift")(clean, maps)
        name = "topk_intersection" if measure == "intersection" else measure
        return map_measure(name, k=self.k_top)(clean, maps)

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
            maps = self.postprocess(self.attribution(surrogate, xi, target[i:i + size], create_graph=True))
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

    def _run(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
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
        x_adv = self._project(x + torch.empty_like(x).uniform_(-self.eps, self.eps), x) if self.random_start \
            else x.clone()
        for step in range(self.steps):
            grad = self.direction(surrogate, x_adv, y, context)
            x_adv = self._project(x_adv + self.step_size * grad.sign(), x).detach()
            if self.select == "last":
                if self.on_step is not None:
                    self.on_step(step)
                continue
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
        if self.select == "last":
            with torch.no_grad():
                kept = model(x_adv).argmax(dim=1) == keep
            maps = self.maps(model, x_adv, y).detach()
            result = explanation_result(x_adv, clean_map, maps, torch.zeros_like(kept), self.score(clean_map, maps))
            result.success, result.extras["label_kept"] = kept, kept
            return result
        return explanation_result(best_x, clean_map, best_map, unchanged, best_score)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(eps={self.eps:g}, step_size={self.step_size:g}, steps={self.steps}, "
                f"k_top={self.k_top}, measure={self.measure}, surrogate={self.surrogate}, "
                f"attribution={self.attribution!r})")


def _keep_lower_kendall(a: AttackResult, b: AttackResult) -> AttackResult:
    """Per image, the repeat with the lower Kendall tau to the clean map (RAR); a changed image beats an unchanged one."""
    tau_a = MF.kendall_tau(a.clean_map.flatten(1), a.adv_map.flatten(1))
    tau_b = MF.kendall_tau(b.clean_map.flatten(1), b.adv_map.flatten(1))
    take_b = (~b.unchanged & a.unchanged) | ((b.unchanged == a.unchanged) & (tau_b < tau_a))

    def pick(ta: Tensor, tb: Tensor) -> Tensor:
        return torch.where(take_b.view(-1, *([1] * (ta.dim() - 1))), tb, ta)

    return explanation_result(pick(a.x_adv, b.x_adv), a.clean_map, pick(a.adv_map, b.adv_map),
                              a.unchanged & b.unchanged, pick(a.criterion, b.criterion))


__all__ = ["MEASURES", "ExplanationAttack", "explanation_result", "top_k_mask"]
