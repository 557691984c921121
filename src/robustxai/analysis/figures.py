"""Figures people look at rather than read: adversarial examples with their predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def _show(ax: plt.Axes, image: Tensor) -> None:
    array = image.detach().cpu().float()
    if array.shape[0] == 1:
        ax.imshow(array[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(array.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def save_adversarial_examples(path: Path, x: Tensor, x_adv: Tensor, y: Tensor, pred_clean: Tensor,
                              pred_adv: Tensor, title: str, class_names: Sequence[str] = ()) -> Path:
    """Rows: clean image (label, prediction), adversarial image (prediction, red when it changed the
    answer to a wrong one), perturbation rescaled to the batch's largest entry (grey = 0)."""
    name = (lambda i: class_names[i]) if class_names else str
    n = len(x)
    delta = x_adv - x
    scale = float(delta.abs().max().clamp_min(1e-12))
    fig, axes = plt.subplots(3, n, figsize=(1.1 * n, 4.4), squeeze=False)
    for i in range(n):
        _show(axes[0, i], x[i])
        axes[0, i].set_title(f"y={name(int(y[i]))}\npred {name(int(pred_clean[i]))}", fontsize=7)
        _show(axes[1, i], x_adv[i])
        wrong = int(pred_adv[i]) != int(y[i])
        axes[1, i].set_title(f"pred {name(int(pred_adv[i]))}", fontsize=7, color="red" if wrong else "black")
        _show(axes[2, i], (0.5 + 0.5 * delta[i] / scale).clamp(0, 1))
    for row, label in enumerate(("clean", "adversarial", f"delta (x{0.5 / scale:.1f})")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
