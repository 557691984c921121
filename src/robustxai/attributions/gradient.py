"""Single-pass gradient attributions: Saliency (signed input gradient) and gradient x input."""

from __future__ import annotations

from torch import Tensor, nn

from robustxai.attributions.base import Attribution, input_for_grad, target_logit_grad


class Saliency(Attribution):
    """The signed gradient of the target logit w.r.t. the input (Simonyan et al.; RAR "simple_gradient").

    Unlike Captum's ``Saliency`` (``abs=True`` by default) the map is signed; take ``.abs()`` or
    :func:`robustxai.attributions.postprocess.rar_saliency` for a magnitude map.
    """

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        return target_logit_grad(model, input_for_grad(x, create_graph), target, create_graph)


class InputXGradient(Attribution):
    """The input times the gradient of the target logit (Shrikumar et al.)."""

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        x_in = input_for_grad(x, create_graph)
        return x_in * target_logit_grad(model, x_in, target, create_graph)
