"""Figure of an attack on explanations: clean image, clean map, attacked image, attacked map, per column."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor

from robustxai.analysis.figures import _show

ROWS = ("clean", "clean map", "attacked", "attacked map")


def _show_map(ax: plt.Axes, saliency: Tensor) -> None:
    array = saliency.detach().cpu().float()
    ax.imshow(array.numpy(), cmap="hot", vmin=0.0, vmax=max(float(array.max()), 1e-12))
    ax.set_xticks([])
    ax.set_yticks([])


def save_explanation_attack_examples(path: Path, x: Tensor, clean_map: Tensor, x_adv: Tensor, adv_map: Tensor,
                                     intersection: Tensor, kendall: Tensor, unchanged: Tensor, title: str) -> Path:
    """Rows: clean image, its map, attacked image, its map; each column titled with its IN (top-k
    intersection) and CO (Kendall tau); "no step" marks images where the attack kept the clean image."""
    n = len(x)
    fig, axes = plt.subplots(4, n, figsize=(max(1.2 * n, 7.0), 5.6), squeeze=False)
    for i in range(n):
        _show(axes[0, i], x[i])
        _show_map(axes[1, i], clean_map[i])
        _show(axes[2, i], x_adv[i])
        _show_map(axes[3, i], adv_map[i])
        note = "\nno step" if bool(unchanged[i]) else ""
        axes[0, i].set_title(f"IN {float(intersection[i]):.2f}\nCO {float(kendall[i]):.2f}{note}", fontsize=7)
    for row, label in enumerate(ROWS):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["save_explanation_attack_examples"]
