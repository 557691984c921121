"""Occlusion by attribution rank for ROAR and KAR (Hooker et al.; Kim et al. 2019 spec sections 4.1-4.2).

Each image's pixels are ranked by the attribution magnitude A = sum_c |attr_c| (one value per pixel,
all channels together), ties broken by adding U(0, ``noise``) (the seed's 1e-8, seeded here), and
either the top ``fraction`` of the pixels (ROAR, "remove") or the bottom ``1 - fraction`` (KAR,
"keep") are replaced in every channel by the per-channel mean of the training images. The random
baseline replaces pixels by a Bernoulli mask shared across channels, as the seed does (or exactly
``fraction`` of them, ``random_rule="exact"``). Everything works on whole batches of maps.

Two selection rules: ``rank`` (default) replaces exactly ``round(fraction * H * W)`` pixels per image
(ROAR) or the rest (KAR), so ROAR and KAR masks of one fraction are exact complements; ``percentile``
is the seed's rule: threshold t = the ``100 (1 - fraction)``-th percentile of the map (NumPy's linear
interpolation), ROAR replaces A > t and KAR A < t (strict, so a pixel equal to t is in neither).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustxai.attributions.base import Attribution
from robustxai.utils.validation import check_range

Mode = Literal["roar", "kar"]
Rule = Literal["rank", "percentile"]
RandomRule = Literal["bernoulli", "exact"]
Target = Literal["loss", "logit"]
MODES = ("roar", "kar")
CHUNK = 2048  # images per tie-break noise draw: fixed, so the noise does not depend on any batch size


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be 'roar' (remove the top pixels) or 'kar' (keep them), got {mode!r}")


def _check_fraction(fraction: float) -> None:
    check_range("fraction", fraction, low=0.0, high=1.0)


def ranking_map(maps: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """A = sum_c |attr_c| per pixel: (N, C, H, W) -> (N, H, W); (N, h, w) maps (CAM) -> |maps|, resized to ``size``.

    Feature-resolution maps are resized bilinearly (half-pixel centres) so that every input pixel gets a rank.
    """
    if maps.ndim == 4:
        scores = maps.abs().sum(dim=1)
    elif maps.ndim == 3:
        scores = maps.abs()
    else:
        raise ValueError(f"attribution maps must be (N, C, H, W) or (N, h, w), got shape {tuple(maps.shape)}")
    if size is not None and tuple(scores.shape[-2:]) != tuple(size):
        scores = F.interpolate(scores.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    return scores


def tie_break(scores: Tensor, noise: float = 1e-8, seed: int = 0) -> Tensor:
    """``scores + U(0, noise)`` in float64 (the seed adds NumPy float64 noise), seeded per block of images.

    The noise of image i depends only on ``seed`` and i, not on how the caller batches the images.
    """
    check_range("noise", noise, low=0.0)
    out = scores.to(torch.float64).clone()
    if noise == 0:
        return out
    for start in range(0, len(out), CHUNK):
        block = out[start:start + CHUNK]
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + start // CHUNK)
        block += torch.rand(block.shape, generator=g, dtype=torch.float64).to(block.device) * noise
    return out


def replaced_count(fraction: float, pixels: int, mode: Mode = "roar") -> int:
    """How many of ``pixels`` the rank rule replaces: round(fraction * pixels) for ROAR, the rest for KAR."""
    _check_fraction(fraction)
    _check_mode(mode)
    top = math.floor(fraction * pixels + 0.5)
    return top if mode == "roar" else pixels - top


def occlusion_mask(scores: Tensor, fraction: float, mode: Mode, rule: Rule = "rank") -> Tensor:
    """(N, H, W) bool, True where a pixel is replaced: ROAR the top ``fraction`` by score, KAR the bottom ``1 - fraction``.

    ``rule="rank"``: exactly ``round(fraction * H * W)`` top pixels (ties between equal scores go to the
    lower index, stably); ``rule="percentile"``: the seed's strict comparisons with NumPy's percentile.
    """
    _check_fraction(fraction)
    _check_mode(mode)
    if scores.ndim != 3:
        raise ValueError(f"scores must be (N, H, W) ranking maps, got shape {tuple(scores.shape)}")
    flat = scores.flatten(1)
    if rule == "rank":
        k = replaced_count(fraction, flat.shape[1], "roar")
        order = flat.argsort(dim=1, descending=True, stable=True)
        top = torch.zeros_like(flat, dtype=torch.bool)
        top.scatter_(1, order[:, :k], True)
        mask = top if mode == "roar" else ~top
    elif rule == "percentile":
        thr = torch.quantile(flat.to(torch.float64), 1.0 - fraction, dim=1, keepdim=True, interpolation="linear")
        mask = flat.to(torch.float64) > thr if mode == "roar" else flat.to(torch.float64) < thr
    else:
        raise ValueError(f"rule must be 'rank' (exact counts) or 'percentile' (the seed's), got {rule!r}")
    return mask.view_as(scores)


def random_mask(shape: tuple[int, int, int], fraction: float, mode: Mode, seed: int = 0,
                rule: RandomRule = "bernoulli", device: torch.device | str = "cpu") -> Tensor:
    """The random baseline's (N, H, W) mask, True where replaced (shared by all channels of a pixel).

    ``bernoulli`` (the seed): m ~ Bernoulli(1 - fraction) per pixel; ROAR replaces m = 0 (about
    ``fraction``), KAR m = 1 (about ``1 - fraction``), so ROAR and KAR of one seed are complements.
    ``exact``: the rank rule on uniform random scores (exactly the rank rule's counts).
    """
    _check_fraction(fraction)
    _check_mode(mode)
    g = torch.Generator().manual_seed(int(seed))
    if rule == "bernoulli":
        keep = torch.rand(shape, generator=g) < (1.0 - fraction)
        mask = ~keep if mode == "roar" else keep
    elif rule == "exact":
        mask = occlusion_mask(torch.rand(shape, generator=g), fraction, mode, "rank")
    else:
        raise ValueError(f"random_rule must be 'bernoulli' (the seed's) or 'exact', got {rule!r}")
    return mask.to(device)


@torch.no_grad()
def channel_mean(images: Tensor, chunk: int = 4096) -> Tensor:
    """The per-channel mean of (N, C, H, W) images, accumulated in float64: the replacement value, (C,)."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    for part in images.split(chunk):
        total += part.to(torch.float64).sum(dim=(0, 2, 3))
    return (total / (len(images) * images.shape[2] * images.shape[3])).to(torch.float32)


def occlude(x: Tensor, mask: Tensor, mean: Tensor) -> Tensor:
    """``x`` with every channel of the masked pixels set to the per-channel ``mean`` (a new tensor)."""
    if x.ndim != 4 or mask.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"x must be (N, C, H, W) and mask (N, H, W); got {tuple(x.shape)} and {tuple(mask.shape)}")
    if mean.shape != (x.shape[1],):
        raise ValueError(f"mean must hold one value per channel ({x.shape[1]}), got shape {tuple(mean.shape)}")
    fill = mean.to(x.dtype).to(x.device).view(1, -1, 1, 1)
    return torch.where(mask.to(x.device).unsqueeze(1), fill, x)


# -- attributions as ranking maps ------------------------------------------------------------------
class _LogProbabilities(nn.Module):
    """log softmax of the wrapped model: its "logit" gradient at class k is -d CE(., k) / dx."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.inner(x), dim=1)

    def cam(self, x: Tensor) -> Tensor:  # CAM maps do not depend on the target's loss
        return self.inner.cam(x)


class _FromSeedUnits(nn.Module):
    """The wrapped [0, 1] model as a function of z = 2x - 1 (the seed's [-1, 1] units)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: Tensor) -> Tensor:
        return self.inner((z + 1.0) / 2.0)

    def cam(self, z: Tensor) -> Tensor:
        return self.inner.cam((z + 1.0) / 2.0)


class AttributionRanker:
    """Ranking maps A = sum_c |attr_c| of a model's images, batched, with the seed's target and units as options.

    ``target="loss"`` (the seed, spec 4.1): the attribution of CE(f(x), y_hat) at the model's
    *predicted* label y_hat (computed as the attribution of log p_y_hat, whose gradient is minus
    that of the CE; the sign does not matter for |attr|); ``"logit"``: the predicted class's logit
    (the attributions' own target). ``seed_units``: attributions w.r.t. z = 2x - 1, the seed's input,
    so that gradient x input is the seed's GX (near 0 for mid-grey, not for black) and IG's zero
    baseline is mid-grey; for plain gradients it only halves the scale.
    """

    def __init__(self, attribution: Attribution | Callable[..., Tensor], target: Target = "loss",
                 seed_units: bool = True, batch_size: int = 500, progress: bool = False) -> None:
        if target not in ("loss", "logit"):
            raise ValueError(f"target must be 'loss' (CE at the predicted label, the seed's) or 'logit', got {target!r}")
        check_range("batch_size", batch_size, low=1)
        self.attribution, self.target, self.seed_units = attribution, target, seed_units
        self.batch_size, self.progress = int(batch_size), progress

    def __call__(self, model: nn.Module, x: Tensor) -> Tensor:
        """(N, H, W) float32 ranking maps of the (N, C, H, W) images ``x`` (no tie-break noise yet)."""
        wrapped: nn.Module = model
        if self.target == "loss":
            wrapped = _LogProbabilities(wrapped)
        if self.seed_units:
            wrapped = _FromSeedUnits(wrapped)
        parts = []
        for xb in tqdm(x.split(self.batch_size), desc="attributions", leave=False, disable=not self.progress):
            with torch.no_grad():
                predicted = model(xb).argmax(dim=1)
            inputs = 2.0 * xb - 1.0 if self.seed_units else xb
            maps = self.attribution(wrapped, inputs, predicted)
            parts.append(ranking_map(maps, tuple(x.shape[-2:])).float())
        return torch.cat(parts)


__all__ = [
    "MODES",
    "AttributionRanker",
    "channel_mean",
    "occlude",
    "occlusion_mask",
    "random_mask",
    "ranking_map",
    "replaced_count",
    "tie_break",
]
