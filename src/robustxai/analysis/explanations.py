"""Grid figure of Woods et al.'s adversarial explanations of one image (input, real, second, every class)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def save_explanation_grid(path: Path, image: Tensor, explanations: Sequence[Tensor], titles: Sequence[str],
                          suptitle: str = "") -> Path:
    """One row per 7 panels: the input, then each explanation, clipped to [0, 1] for display only."""
    panels = [("input", image)] + list(zip(titles, explanations))
    cols = 7
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.55 * rows + 0.3), squeeze=False, dpi=100)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, tensor) in zip(axes.flat, panels):
        ax.imshow(tensor.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["save_explanation_grid"]
