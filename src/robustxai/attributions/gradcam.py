"""Grad-CAM (Selvaraju et al.) and Grad-CAM++ (Chattopadhyay et al.) for any network, at a layer named by string.

Both weight the channels of a layer's output A (N, K, h, w) by a function of the gradient
g = d logit_y / dA and return sum_k w_k A_k: Grad-CAM with w_k = mean_ij g, Grad-CAM++ with
w_k = sum_ij alpha_ij relu(g_ij), alpha = g^2 / (2 g^2 + sum_ab A_ab g^3 + eps) (zero where g = 0),
the exponential-output closed form pytorch-grad-cam uses. The layer (``"features.3"``) is looked up
with ``model.get_submodule`` on every call, so one object also serves a copy of the model such as a
softplus surrogate. Maps are signed (``relu=True`` applies Grad-CAM's ReLU), unnormalised, and at
the layer's resolution unless ``upsample`` is set. ``GradCAMPlusPlus()`` without a layer is the seed's
closed form for GAP networks (spec 2): CAM with the negative head weights set to zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attributions.base import Attribution, input_for_grad
from robustxai.attributions.cam import (Upsample, check_upsample, class_maps, require_method,
                                        upsample_maps)


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """``model.get_submodule(layer)``, or a ValueError listing the model's layer names."""
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ValueError(f"layer {layer!r} is not a submodule of {type(model).__name__}; "
                         f"its layers are: {shown}") from None


def layer_activation_and_grad(model: nn.Module, layer: str, x: Tensor, target: Tensor,
                              create_graph: bool) -> tuple[Tensor, Tensor]:
    """The output A of ``layer`` on ``x`` and d logit_target / dA (one forward and one backward pass).

    Rows are independent as long as the model treats batch elements independently (no BatchNorm
    in training mode); only the layer's gradient is requested, so no parameter ``.grad`` is touched.
    """
    module = resolve_layer(model, layer)
    captured: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: object) -> None:
        captured.append(output)  # type: ignore[arg-type]

    handle = module.register_forward_hook(keep)
    try:
        logits = model(input_for_grad(x, create_graph))
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"layer {layer!r} ran {len(captured)} times in one forward pass; pick a layer that "
                         f"runs exactly once")
    acts = captured[0]
    if not isinstance(acts, Tensor) or acts.ndim != 4:
        raise ValueError(f"layer {layer!r} must output an (N, K, h, w) tensor, got "
                         f"{tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"the model must return (N, classes) logits, got shape {tuple(logits.shape)}")
    selected = logits.gather(1, target.unsqueeze(1)).sum()
    (grads,) = torch.autograd.grad(selected, acts, create_graph=create_graph)
    return acts, grads


class GradCAM(Attribution):
    """Grad-CAM at ``layer``: sum_k (mean_ij d logit_y / dA_k) A_k, (N, h, w); signed unless ``relu``.

    On a GAP network (logits = mean of CAM) the Grad-CAM of the last feature map is CAM / (h w).
    pytorch-grad-cam's ``GradCAM`` is ``relu=True`` followed by its per-image min-max scaling and an
    OpenCV bilinear resize (``upsample='bilinear'`` here).
    """

    def __init__(self, layer: str, relu: bool = False, upsample: Upsample | None = None) -> None:
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must name a submodule, e.g. 'features.3', got {layer!r}")
        check_upsample(upsample)
        self.layer = layer
        self.relu = bool(relu)
        self.upsample = upsample

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        """Grad-CAM's channel weights (N, K): the spatial mean of the gradient."""
        return grads.mean((2, 3))

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        acts, grads = layer_activation_and_grad(model, self.layer, x, target, create_graph)
        maps = torch.einsum("nk,nkhw->nhw", self.channel_weights(acts, grads), acts)
        return self._finish(maps, x)

    def _finish(self, maps: Tensor, x: Tensor) -> Tensor:
        if self.relu:
            maps = F.relu(maps)
        return upsample_maps(maps, tuple(x.shape[-2:]), self.upsample)


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++: at ``layer``, the general form; without one, the seed's closed form for GAP networks.

    General: w_k = sum_ij alpha relu(g), alpha = g^2 / (2 g^2 + (sum_ab A_ab) g^3 + eps), alpha = 0
    where g = 0 (``eps`` = 1e-6 is pytorch-grad-cam's constant; 0 gives the paper's exact ratio).
    Closed form (``layer=None``, spec section 2): ``model.cam_plusplus(x)`` = sum_k relu(V[k, y]) A_k,
    the head's negative weights zeroed, no gradient computed. The two are not equal on a GAP
    network: there g = V[k, y] / (h w) is constant per channel, so the general weights are
    relu(V[k, y]) / (2 + mean(A_k) V[k, y]) (for eps = 0), which are proportional to the closed
    form's relu(V[k, y]) only when every mean(A_k) V[k, y] is small against 2.
    """

    def __init__(self, layer: str | None = None, relu: bool = False, upsample: Upsample | None = None,
                 eps: float = 1e-6) -> None:
        if layer is None:
            check_upsample(upsample)
            self.layer, self.relu, self.upsample = None, bool(relu), upsample  # type: ignore[assignment]
        else:
            super().__init__(layer, relu, upsample)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.eps = float(eps)

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        """Grad-CAM++'s channel weights (N, K) from the layer's activations and gradients."""
        g2 = grads * grads
        denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g2 * grads + self.eps
        nonzero = grads != 0
        alpha = torch.where(nonzero, g2 / torch.where(nonzero, denom, torch.ones_like(denom)),
                            torch.zeros_like(g2))
        return (alpha * F.relu(grads)).sum((2, 3))

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        if self.layer is not None:
            return super().attribute(model, x, target, create_graph)
        require_method(model, "cam_plusplus", "GradCAMPlusPlus(layer=...)")
        with torch.set_grad_enabled(create_graph):
            maps = class_maps(model.cam_plusplus(x), target)
        return self._finish(maps, x)


__all__ = ["GradCAM", "GradCAMPlusPlus", "layer_activation_and_grad", "resolve_layer"]
