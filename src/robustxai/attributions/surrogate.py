"""An attribution computed on the softplus surrogate of the model (seed 000's IG, Ghorbani et al.'s attacks).

Seed 000's IG is IG of the same network with every ReLU replaced by a softplus, so that attacks
can differentiate through it; logits and predictions still come from the ReLU network. The
surrogate is :func:`robustxai.attacks.surrogate.softplus_surrogate`'s copy, built once per model and
re-pointed at the model's own parameters and buffers on every call: it always sees the current
weights, costs no weight copy per call, and with ``create_graph=True`` gradients reach the
model's parameters.
"""

from __future__ import annotations

import weakref

from torch import Tensor, nn

from robustxai.attributions.base import Attribution


class SurrogateAttribution(Attribution):
    """``attribution`` evaluated on the softplus (``beta``) surrogate of the model it is called with.

    ``SurrogateAttribution(IntegratedGradients(steps=100, rule="right"))`` is seed 000's IG (zero
    baseline, 100 right-Riemann points, softplus network). Layer-based attributions (GradCAM) find
    their layer in the surrogate under the same name.
    """

    def __init__(self, attribution: Attribution, beta: float = 1.0) -> None:
        if not isinstance(attribution, Attribution):
            raise ValueError(f"attribution must be an Attribution, got {type(attribution).__name__}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ValueError(f"beta must be a number > 0, got {beta!r}")
        self.attribution = attribution
        self.beta = float(beta)
        self._surrogates: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()

    @property
    def points_per_input(self) -> int:
        return self.attribution.points_per_input

    def surrogate(self, model: nn.Module) -> nn.Module:
        """The softplus twin of ``model``, sharing its parameters, buffers and train/eval flags."""
        twin = self._surrogates.get(model)
        if twin is None:
            # imported here: robustxai.attacks (whose package imports attribution modules) stays out of
            # the import of robustxai.attributions
            from robustxai.attacks.surrogate import softplus_surrogate

            twin = softplus_surrogate(model, beta=self.beta)
            self._surrogates[model] = twin
        twins = dict(twin.named_modules())
        for name, module in model.named_modules():
            other = twins.get(name)
            if other is None:
                raise ValueError(f"{type(model).__name__} changed structure since its surrogate was built "
                                 f"(no module {name!r}); use a new SurrogateAttribution")
            other.training = module.training
            other._parameters.update(module._parameters)  # the same Parameter objects: no copy
            other._buffers.update(module._buffers)
        return twin

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        return self.attribution.attribute(self.surrogate(model), x, target, create_graph)

    def __repr__(self) -> str:
        return f"SurrogateAttribution({self.attribution!r}, beta={self.beta:g})"

    def __getstate__(self) -> dict:
        state = dict(vars(self))
        state.pop("_surrogates")
        return state

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        self._surrogates = weakref.WeakKeyDictionary()


__all__ = ["SurrogateAttribution"]
