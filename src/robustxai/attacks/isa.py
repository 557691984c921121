"""The interpretability sneaking attack (ISA) of Boopathy et al. 2020 (seed 000, spec section 4), and its min-eps search.

ISA looks for a *targeted* adversarial example whose interpretation map stays close to the clean one:
it minimises, per image, the targeted Carlini-Wagner margin plus gamma times a map discrepancy,

    L(x') = max(max_{j != t} z_j(x') - z_t(x'), -kappa) + gamma * D(M(x), M(x'))

inside the L-inf ball, with the seed's two-stage per-image bisection: first on eps with gamma = 0
(the smallest eps that reaches the target, ``eps_adv``), then, for each eps multiplier c, on gamma at
eps = c * eps_adv (the largest gamma that still reaches the target). Every bisection round is a short
run of our one PGD loop (:class:`~robustxai.attacks.pgd.PGD`) whose objective hook is ``-L`` and whose
eps, step and gamma are per-image tensors, so the whole batch (and, in stage 2, every multiplier at
once) advances together: no Python loop over images.

``mode="min_eps"`` stops after stage 1 (gamma = 0: the seed's ``min_pgd_attack``, the bound-tightness
experiment); ``mode="tradeoff"`` runs stage 2 for every class variant (all, two, one class) after one
shared stage 1 (the seed's ``tradeoff_cam``).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attacks.base import AttackResult, ModelMode, TargetClass
from robustxai.attacks.losses import cw_margin
from robustxai.attacks.pgd import PGD
from robustxai.attributions.base import Attribution
from robustxai.attributions.cam import CAM
from robustxai.attributions.discrepancy import (
    ISA_CLASSES,
    ISA_NORMS,
    ISAClasses,
    ISANorm,
    isa_class_index,
    isa_discrepancy,
)
from robustxai.attributions.gradcam import GradCAMPlusPlus
from robustxai.utils.validation import check_choice, check_range

ISAMode = Literal["isa", "min_eps", "tradeoff"]
ISA_MODES = ("isa", "min_eps", "tradeoff")


def reached_target(logits: Tensor, target: Tensor) -> Tensor:
    """The seed's success test, per image: the target logit beats every other one (margin < 0)."""
    return cw_margin(logits, target) < 0


def _col(t: Tensor, like: Tensor) -> Tensor:
    """A per-image (N,) tensor shaped to broadcast against ``like`` (N, ...)."""
    return t.view(-1, *([1] * (like.dim() - 1)))


class ISA(PGD):
    """Targeted CW margin + gamma * map discrepancy, with the seed's per-image bisection on eps then gamma.

    ``attribution`` gives the maps: :class:`~robustxai.attributions.cam.CAM` (default) and the seed's
    closed-form :class:`~robustxai.attributions.gradcam.GradCAMPlusPlus` (``layer=None``) read every
    class's map from one forward pass of a GAP network (``model.cam``; the logits are their spatial
    means); any other attribution (e.g. the seed's softplus IG, ``SurrogateAttribution``) is called once
    per class that enters the discrepancy, with ``create_graph=True``. ``classes`` (one, two or all
    class) and ``discrepancy`` (``l1``, or the squared ``l2``) choose D as in spec 4.2, with the seed's
    1/2 (two classes) and 1/C (all classes) factors.

    Each bisection round is ``steps`` PGD steps from x (no random start) of size
    ``step_fraction * eps`` per image along ``clip(grad_scale * grad, -1, 1)``, projected onto the
    image's eps-ball and the box. The seed clips 1000 times the gradient of the *batch-mean* loss, i.e.
    1000 / B times the per-image gradient, so its step depends on the batch size; ours scales the
    per-image gradient by ``grad_scale`` (default 1000, the seed's constant: a near-sign step whatever
    the batch; ``grad_scale = 1000 / B`` is the seed's exact step for a batch of B images). Stage 1
    starts at ``eps_start`` in ``[0, eps_max]``: success sets hi = eps, eps = (lo + hi) / 2; failure
    sets lo = eps, eps = min(2 eps, (lo + hi) / 2); ``eps_adv`` = hi after ``rounds`` rounds. Stage 2,
    per multiplier c in ``penalties``, starts gamma at ``gamma_start`` in ``[0, gamma_max]``: success
    sets lo = gamma, gamma = min(2 gamma, (lo + hi) / 2); failure sets hi = gamma, gamma = (lo + hi) / 2;
    the final gamma is lo. Every stage ends with a run at its final value, as the seed does.

    ``run()`` returns, as ``x_adv``, the example at the largest multiplier (``mode="min_eps"``: the
    minimum-eps example, with its L-inf size as ``radius``); ``success`` = the target reached there.
    Extras: ``target``, ``eps_adv``, ``eps_brackets`` (N, rounds + 1, 2) and, per class variant V,
    ``points_<V>`` (N, 1 + P, C, H, W: the min-eps example, then one per multiplier), ``eps_<V>``
    (their L-inf sizes), ``gamma_<V>``, ``success_<V>`` and ``gamma_brackets_<V>`` (N, P, rounds + 1, 2).
    """

    def __init__(
        self,
        attribution: Attribution | None = None,
        classes: ISAClasses = "two_class",
        discrepancy: ISANorm = "l1",
        mode: ISAMode = "isa",
        penalties: Sequence[float] = (1.0, 1.5, 2.0, 2.5, 3.0),
        kappa: float = 0.1,
        steps: int = 10,
        rounds: int = 10,
        eps_start: float = 0.05,
        eps_max: float = 1.0,
        gamma_start: float = 5e-5,
        gamma_max: float = 1.0,
        step_fraction: float = 0.2,
        grad_scale: float = 1000.0,
        target_class: TargetClass = "random",
        box: tuple[float, float] = (0.0, 1.0),
        model_mode: ModelMode = "eval",
    ) -> None:
        check_range("eps_max", eps_max, low=0.0, low_open=True)
        check_range("step_fraction", step_fraction, low=0.0, low_open=True)
        super().__init__(norm="linf", eps=eps_max, step_size=step_fraction * eps_max, steps=steps,
                         random_start=False, loss="cw", targeted=True, target_class=target_class, box=box,
                         model_mode=model_mode)
        if attribution is not None and not isinstance(attribution, Attribution):
            raise ValueError(f"attribution must be an Attribution (CAM, GradCAMPlusPlus, SurrogateAttribution...), "
                             f"got {type(attribution).__name__}")
        check_choice("classes", classes, ISA_CLASSES)
        check_choice("discrepancy", discrepancy, ISA_NORMS)
        check_choice("mode", mode, ISA_MODES)
        check_range("kappa", kappa, low=0.0)
        check_range("rounds", rounds, low=1)
        check_range("eps_start", eps_start, low=0.0, high=eps_max, low_open=True)
        check_range("gamma_max", gamma_max, low=0.0, low_open=True)
        check_range("gamma_start", gamma_start, low=0.0, high=gamma_max, low_open=True)
        check_range("grad_scale", grad_scale, low=0.0, low_open=True)
        penalties = [float(p) for p in penalties]
        if mode != "min_eps" and not penalties:
            raise ValueError("penalties (the eps multipliers of stage 2) must not be empty unless mode='min_eps'")
        if any(p <= 0 for p in penalties) or any(b <= a for a, b in itertools.pairwise(penalties)):
            raise ValueError(f"penalties must be positive and strictly increasing (eps multipliers of eps_adv), "
                             f"got {penalties}")
        self.attribution: Attribution = attribution if attribution is not None else CAM()
        self.classes: ISAClasses = classes
        self.discrepancy: ISANorm = discrepancy
        self.mode: ISAMode = mode
        self.penalties = penalties
        self.kappa = float(kappa)
        self.rounds = int(rounds)
        self.eps_start, self.eps_max = float(eps_start), float(eps_max)
        self.gamma_start, self.gamma_max = float(gamma_start), float(gamma_max)
        self.step_fraction = float(step_fraction)
        self.grad_scale = float(grad_scale)
        self._context: dict[str, Tensor] | None = None

    @property
    def variants(self) -> tuple[ISAClasses, ...]:
        """The class variants whose stage 2 is run: all three in ``tradeoff`` mode, else ``classes``."""
        return ("all_class", "two_class", "one_class") if self.mode == "tradeoff" else (self.classes,)

    # -- maps ---------------------------------------------------------------------------------------
    def _fused(self) -> str | None:
        """'cam' / 'campp' when every class's map comes from one forward pass of a GAP network, else None."""
        a = self.attribution
        if type(a) is CAM and a.upsample is None:
            return "cam"
        if type(a) is GradCAMPlusPlus and a.layer is None and not a.relu and a.upsample is None:
            return "campp"
        return None

    def logits_and_maps(self, model: nn.Module, x: Tensor, class_index: Tensor,
                        create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """The logits (N, C) and the maps of the classes ``class_index`` (N, K) of every image: (N, K, ...).

        Differentiable w.r.t. ``x`` with ``create_graph=True`` (the attack's objective).
        """
        fused = self._fused()
        with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
            if fused is not None:
                if fused == "cam":
                    cam = model.cam(x)
                    logits, maps = cam.mean((2, 3)), cam
                elif hasattr(model, "features") and hasattr(model, "head"):  # one pass for logits and CAM++
                    acts = model.features(x)
                    logits = model.head(acts).mean((2, 3))
                    maps = F.conv2d(acts, model.head.weight.clamp(min=0))
                else:
                    logits, maps = model(x), model.cam_plusplus(x)
                index = class_index.view(*class_index.shape, *([1] * (maps.dim() - 2))).expand(
                    -1, -1, *maps.shape[2:])
                return logits, maps.gather(1, index)
            logits = model(x)
            maps = torch.stack([self.attribution(model, x, class_index[:, k], create_graph=create_graph)
                                for k in range(class_index.shape[1])], dim=1)
            return logits, maps

    # -- the objective (PGD's hook) -------------------------------------------------------------------
    def attack_objective(self, model: nn.Module, x: Tensor, x_adv: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """-(margin + gamma * D) per image: PGD ascends it (gamma = 0 skips the maps)."""
        ctx = self._context
        if ctx is None:
            raise RuntimeError("ISA.attack_objective is called by ISA.run / ISA.perturb, not on its own")
        if ctx.get("with_maps") is None:
            logits = model(x_adv)
            return -cw_margin(logits, targets).clamp(min=-self.kappa), logits
        logits, maps = self.logits_and_maps(model, x_adv, ctx["index"], create_graph=True)
        margin = cw_margin(logits, targets).clamp(min=-self.kappa)
        d = isa_discrepancy(ctx["clean_maps"], maps, ctx["weights"], self.discrepancy)
        return -(margin + ctx["gamma"] * d), logits

    def _step(self, x_adv: Tensor, grad: Tensor) -> Tensor:
        """The seed's near-sign step: ``step_fraction * eps`` (per image) times ``clip(grad_scale * grad, -1, 1)``."""
        return x_adv + self.step_size * torch.clamp(self.grad_scale * grad, -1.0, 1.0)

    def _attack_at(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor, eps: Tensor,
                   context: dict[str, Tensor]) -> Tensor:
        """``steps`` PGD steps from x at per-image ``eps`` (N,), with the objective's per-batch ``context``."""
        runner = copy.copy(self)
        runner.eps = _col(eps, x)
        runner.step_size = self.step_fraction * runner.eps
        runner._context = context
        return runner._run(model, x, y, target, judge=False).x

    def _reached(self, model: nn.Module, x_adv: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            return reached_target(model(x_adv), target)

    # -- the two stages -------------------------------------------------------------------------------
    def min_eps(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Stage 1 (gamma = 0): per-image bisection on eps; returns (x at eps_adv, eps_adv, brackets (N, R + 1, 2))."""
        n = len(x)
        eps = torch.full((n,), self.eps_start, device=x.device, dtype=x.dtype)
        lo, hi = torch.zeros_like(eps), torch.full_like(eps, self.eps_max)
        brackets = [torch.stack([lo, hi], dim=1)]
        plain: dict[str, Tensor] = {}
        for _ in range(self.rounds):
            ok = self._reached(model, self._attack_at(model, x, y, target, eps, plain), target)
            hi, lo = torch.where(ok, eps, hi), torch.where(ok, lo, eps)
            mid = (lo + hi) / 2
            eps = torch.where(ok, mid, torch.minimum(2 * eps, mid))
            brackets.append(torch.stack([lo, hi], dim=1))
        return self._attack_at(model, x, y, target, hi, plain), hi, torch.stack(brackets, dim=1)

    def sneak(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor, eps_adv: Tensor,
              variant: ISAClasses) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Stage 2 for every multiplier at once: returns x (N, P, ...), gamma (N, P), success (N, P), brackets (N, P, R + 1, 2)."""
        n, p = len(x), len(self.penalties)
        mult = torch.tensor(self.penalties, device=x.device, dtype=x.dtype)
        # rows are multiplier-major: row j * n + i is image i at multiplier j
        xs, ys, ts = x.repeat(p, *([1] * (x.dim() - 1))), y.repeat(p), target.repeat(p)
        eps = (mult[:, None] * eps_adv[None, :]).reshape(-1)
        index, weights = isa_class_index(ys, ts, self._num_classes(model, x), variant)
        with torch.no_grad():
            clean_maps = self.logits_and_maps(model, x, index[:n])[1].detach()
        context = {"with_maps": torch.ones(()), "index": index, "weights": weights,
                   "clean_maps": clean_maps.repeat(p, *([1] * (clean_maps.dim() - 1)))}
        gamma = torch.full((n * p,), self.gamma_start, device=x.device, dtype=x.dtype)
        lo, hi = torch.zeros_like(gamma), torch.full_like(gamma, self.gamma_max)
        brackets = [torch.stack([lo, hi], dim=1)]
        for _ in range(self.rounds):
            context["gamma"] = gamma
            ok = self._reached(model, self._attack_at(model, xs, ys, ts, eps, context), ts)
            lo, hi = torch.where(ok, gamma, lo), torch.where(ok, hi, gamma)
            mid = (lo + hi) / 2
            gamma = torch.where(ok, torch.minimum(2 * gamma, mid), mid)
            brackets.append(torch.stack([lo, hi], dim=1))
        context["gamma"] = lo
        x_int = self._attack_at(model, xs, ys, ts, eps, context)
        success = self._reached(model, x_int, ts)

        def per_image(t: Tensor) -> Tensor:  # (P * N, ...) -> (N, P, ...)
            return t.view(p, n, *t.shape[1:]).transpose(0, 1)

        return per_image(x_int), per_image(lo), per_image(success), per_image(torch.stack(brackets, dim=1))

    def _num_classes(self, model: nn.Module, x: Tensor) -> int:
        with torch.no_grad():
            return int(model(x[:1]).shape[1])

    # -- the contract ---------------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.search(model, x, y).x_adv

    def search(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        target = self.targets(model, x, y)
        x_min, eps_adv, eps_brackets = self.min_eps(model, x, y, target)
        with torch.no_grad():
            min_success = reached_target(model(x_min), target)
        linf = (x_min - x).flatten(1).abs().amax(dim=1)
        extras: dict[str, Tensor] = {"target": target, "eps_adv": eps_adv, "eps_brackets": eps_brackets}
        if self.mode == "min_eps":
            extras.update({"points_min_eps": x_min[:, None], "eps_min_eps": linf[:, None]})
            return AttackResult(x_min, min_success, radius=linf, extras=extras)
        last_x, last_success = x_min, min_success
        for variant in self.variants:
            x_int, gamma, success, brackets = self.sneak(model, x, y, target, eps_adv, variant)
            points = torch.cat([x_min[:, None], x_int], dim=1)
            extras[f"points_{variant}"] = points
            extras[f"eps_{variant}"] = (points - x[:, None]).flatten(2).abs().amax(dim=2)
            extras[f"gamma_{variant}"] = torch.cat([torch.zeros_like(gamma[:, :1]), gamma], dim=1)
            extras[f"success_{variant}"] = torch.cat([min_success[:, None], success], dim=1)
            extras[f"gamma_brackets_{variant}"] = brackets
            last_x, last_success = x_int[:, -1], success[:, -1]
        return AttackResult(last_x, last_success, extras=extras)

    def __repr__(self) -> str:
        return (f"ISA(mode={self.mode}, attribution={self.attribution!r}, classes={self.classes}, "
                f"discrepancy={self.discrepancy}, penalties={self.penalties}, kappa={self.kappa:g}, "
                f"rounds={self.rounds}x{self.steps} steps)")


__all__ = ["ISA", "ISA_MODES", "ISAMode", "reached_target"]
