"""Figures of the ISA evaluation: eps-vs-discrepancy curves, image + map overlays, the min-eps bound scatter."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor


def _finish(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_isa_curves(path: Path, curves: Mapping[str, tuple[Tensor, Tensor, Tensor]], ylabel: str, title: str,
                    highlight: int | None = None) -> Path:
    """eps (x) against the monotone discrepancy (y): one thin line per image, image ``highlight`` bold.

    ``curves`` maps a label (a class variant) to ``(eps (N, K), monotone d (N, K), valid (N, K))``;
    ``highlight`` None picks the first image with two or more valid points in the first variant.
    """
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    styles = ("-", "--", ":", "-.")
    if highlight is None and curves:
        _, mono0, valid0 = next(iter(curves.values()))
        enough = ((valid0 & torch.isfinite(mono0)).sum(1) >= 2).nonzero()
        highlight = int(enough[0]) if len(enough) else 0
    for i, (label, (eps, mono, valid)) in enumerate(curves.items()):
        eps, mono, valid = eps.detach().cpu(), mono.detach().cpu(), valid.detach().cpu()
        color = f"C{i}"
        for n in range(len(eps)):
            keep = valid[n] & torch.isfinite(mono[n])
            if keep.sum() < 1:
                continue
            bold = n == highlight
            ax.plot(eps[n][keep].numpy(), mono[n][keep].numpy(), ls=styles[i % 4], color=color,
                    alpha=1.0 if bold else 0.3, lw=2.0 if bold else 0.8, marker="o" if bold else None,
                    label=f"{label} (image {n})" if bold else None)
    ax.set_xlabel(r"$\epsilon$ ($\ell_\infty$ size of the attack)")
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=7)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _finish(fig, path)


def _as_map(m: Tensor, size: tuple[int, int]) -> Tensor:
    """A (h, w) CAM or (C, H, W) input-shaped map as an (H, W) array at the image size (nearest, as the seed)."""
    if m.dim() == 3:
        m = m.sum(0)
    return F.interpolate(m[None, None].float(), size=size, mode="nearest")[0, 0]


def save_isa_overlays(path: Path, x: Tensor, columns: Mapping[str, tuple[Tensor, Tensor]], title: str) -> Path:
    """One row per image: the image, then for each column (e.g. clean, gamma = 0, ISA) its image with the map over it.

    ``columns`` maps a heading to ``(images (N, C, H, W), maps (N, ...))``; maps share a diverging colour
    scale per row (blue negative, red positive), so the columns of a row are comparable.
    """
    x = x.detach().cpu()
    n, size = len(x), tuple(x.shape[-2:])
    fig, axes = plt.subplots(n, 1 + len(columns), figsize=(1.6 * (1 + len(columns)), 1.6 * n), squeeze=False)
    for r in range(n):
        maps = [_as_map(m[r].detach().cpu(), size) for _, m in columns.values()]
        scale = max(float(torch.stack(maps).abs().max()), 1e-12)
        gray = x[r].mean(0).numpy()
        axes[r, 0].imshow(gray, cmap="gray", vmin=0, vmax=1)
        for c, ((heading, (images, _)), m) in enumerate(zip(columns.items(), maps), start=1):
            axes[r, c].imshow(images[r].detach().cpu().mean(0).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].imshow(m.numpy(), cmap="coolwarm", vmin=-scale, vmax=scale, alpha=0.6)
            if r == 0:
                axes[r, c].set_title(heading, fontsize=7)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    return _finish(fig, path)


def save_bound_scatter(path: Path, margin: Tensor, discrepancy: Tensor, success: Tensor, title: str) -> Path:
    """The bound-tightness scatter: clean margin 0.5 (z_y - z_t) against D_2class,l1 / (h w), with y = x."""
    ok = success.bool().cpu()
    m, d = margin.detach().cpu()[ok].numpy(), discrepancy.detach().cpu()[ok].numpy()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(m, d, s=10)
    top = float(max(m.max(initial=0.0), d.max(initial=0.0))) * 1.05 or 1.0
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="bound: D / (h w) = margin")
    ax.set_xlabel(r"clean margin $\frac{1}{2}(z_y(x) - z_t(x))$")
    ax.set_ylabel(r"two-class $\ell_1$ CAM discrepancy / (h w)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    return _finish(fig, path)


__all__ = ["save_bound_scatter", "save_isa_curves", "save_isa_overlays"]
