"""The optimisation loop shared by the UAR attacks (Kang et al. 2019) as seed 000 runs them.

Every UAR attack optimises its own variables (JPEG coefficients, fog weights, Gabor weights, snow
flake intensities, a flow field) rather than pixels: a subclass says how to draw them
(:meth:`UARAttack._init`), how to turn them into an image (:meth:`UARAttack._render`) and how to
keep them inside their budget (:meth:`UARAttack._project`). The loop itself is the seed's: a random
start, ``steps`` signed-gradient steps that *descend* the cross-entropy of a random non-true target
class (``targeted=True``, ``avoid_target=False`` in advex-uar), and the last iterate (no best-iterate
tracking). A whole batch advances at once; nothing leaves the device inside the loop.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attacks.base import TARGET_CLASSES, Attack, AttackResult, ModelMode, TargetClass, choose_targets
from robustxai.utils.validation import check_choice, check_range

StepRule = Literal["seed", "upstream"]
STEP_RULES: tuple[str, ...] = ("seed", "upstream")
# advex-uar's calibrated step for fog, snow and gabor (analysis/calibrations/imagenet-100/calibs.out)
UPSTREAM_CALIBRATED_STEP = 0.002236


def check_int(name: str, value: int, low: int = 1, odd: bool = False) -> None:
    """Raise a ValueError naming the argument unless ``value`` is an integer ``>= low`` (and odd if asked)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (odd and value % 2 == 0):
        kind = "an odd integer" if odd else "an integer"
        raise ValueError(f"{name} must be {kind} >= {low}, got {value!r}")


class UARAttack(Attack):
    """Base of the UAR attacks: targeted signed-gradient descent on an attack-specific variable.

    ``eps`` is in the seed's units (see each attack). The step is ``step_size`` when given, otherwise
    the ``step_rule``: ``"seed"`` is seed 000's ``eps / sqrt(steps)`` for every attack,
    ``"upstream"`` is advex-uar's calibrated step where it has one (fog, snow, gabor: 0.002236)
    and ``eps / sqrt(steps)`` otherwise. ``targeted=True`` descends the cross-entropy of a target
    class per image, by default (``target_class="random"``) the seed's: uniform over the classes
    other than the label; ``"given"`` takes ``y`` as the targets (e.g. the seed's seed-99 draw).
    Success is ``prediction == target``. ``targeted=False`` ascends the label's cross-entropy
    instead (success: prediction changed). :meth:`run` returns the targets (extra ``target``) and
    the optimised variables (one extra each).
    """

    calibrated_step: ClassVar[float | None] = None

    def __init__(self, eps: float, steps: int = 200, step_size: float | None = None,
                 step_rule: StepRule = "seed", targeted: bool = True, target_class: TargetClass = "random",
                 random_init: bool = True, box: tuple[float, float] = (0.0, 1.0),
                 model_mode: ModelMode = "eval") -> None:
        super().__init__(box=box, model_mode=model_mode)
        check_range("eps", eps, low=0.0, low_open=True)
        check_int("steps", steps, low=1)
        if step_size is not None:
            check_range("step_size", step_size, low=0.0, low_open=True)
        check_choice("step_rule", step_rule, STEP_RULES)
        check_choice("target_class", target_class, TARGET_CLASSES)
        self.eps = float(eps)
        self.steps = int(steps)
        self.step_size = None if step_size is None else float(step_size)
        self.step_rule: StepRule = step_rule
        self.targeted = bool(targeted)
        self.target_class: TargetClass = target_class
        self.random_init = bool(random_init)

    # -- public API ---------------------------------------------------------------------------
    @property
    def step(self) -> float:
        """The step size used: ``step_size`` if given, else the ``step_rule``'s."""
        if self.step_size is not None:
            return self.step_size
        if self.step_rule == "upstream" and self.calibrated_step is not None:
            return self.calibrated_step
        return self.eps / math.sqrt(self.steps)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial images for ``x`` (the ``x_adv`` of :meth:`search`)."""
        return self.search(model, x, y).x_adv

    # -- what a subclass supplies -------------------------------------------------------------
    def _setup(self, x: Tensor) -> dict[str, Any]:
        """Random quantities fixed for the whole run (kernels, masks, encodings); none by default."""
        return {}

    @abstractmethod
    def _init(self, x: Tensor, ctx: dict[str, Any]) -> dict[str, Tensor]:
        """The seed's starting variables, each with the batch as first axis.

        The start only sets where the first gradient is taken; it need not be projected (the seed
        leaves snow's start and Gabor's start off the "complement" mask unprojected), because every
        step ends with :meth:`_project` and ``steps >= 1``.
        """

    @abstractmethod
    def _render(self, x: Tensor, variables: dict[str, Tensor], ctx: dict[str, Any]) -> Tensor:
        """The image the variables make of ``x`` (in [0, 1]); differentiable in the variables."""

    @abstractmethod
    def _project(self, variables: dict[str, Tensor], ctx: dict[str, Any]) -> dict[str, Tensor]:
        """The variables brought back inside their budget."""

    def _update(self, variables: dict[str, Tensor], direction: dict[str, Tensor], iteration: int,
                ctx: dict[str, Any]) -> dict[str, Tensor]:
        """One step along ``direction`` (the descent direction of the objective), then projection."""
        moved = {k: v + self.step * direction[k].sign() for k, v in variables.items()}
        return self._project(moved, ctx)

    # -- the loop -------------------------------------------------------------------------------
    def search(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        """The whole attack on a detached batch (model mode set by :meth:`run` or ``__call__``)."""
        self._check_batch(x, y)
        low, high = self.box
        unit = (x - low) / (high - low)                          # the attacks work in [0, 1]
        if self.targeted:
            with torch.no_grad():
                targets = choose_targets(model(x), y, self.target_class)
        else:
            targets = y
        ctx = self._setup(unit)
        variables = self._init(unit, ctx)   # the seed's start (every returned iterate is projected)
        sign = -1.0 if self.targeted else 1.0                    # towards the target, or away from the label
        for iteration in range(self.steps):
            live = {k: v.detach().requires_grad_(True) for k, v in variables.items()}
            logits = model(self._render(unit, live, ctx) * (high - low) + low)
            loss = F.cross_entropy(logits, targets, reduction="sum")
            grads = torch.autograd.grad(loss, list(live.values()))
            direction = {k: sign * g for k, g in zip(live, grads)}
            with torch.no_grad():
                variables = self._update({k: v.detach() for k, v in live.items()}, direction, iteration, ctx)
        with torch.no_grad():
            x_adv = (self._render(unit, variables, ctx).clamp(0.0, 1.0) * (high - low) + low).detach()
            pred = model(x_adv).argmax(dim=1)
        success = pred == targets if self.targeted else pred != y
        return AttackResult(x_adv, success, None, {**{k: v.detach() for k, v in variables.items()}, "target": targets})

    def _check_batch(self, x: Tensor, y: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{type(self).__name__} takes images of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must hold one label per image ({x.shape[0]}), got shape {tuple(y.shape)}")
        min_side = self._min_side()
        if x.shape[2] < min_side or x.shape[3] < min_side:
            raise ValueError(f"{type(self).__name__} needs images of at least {min_side}x{min_side} pixels, "
                             f"got {x.shape[2]}x{x.shape[3]}")

    def _min_side(self) -> int:
        return 1
