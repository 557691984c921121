"""Grid figure of Woods et al.'s adversarial explanations of one image (input, real, second, every class)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor


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


def save_side_by_side(path: Path, originals: Sequence[Tensor], rows: Sequence[tuple[str, Sequence[Tensor], Sequence[Tensor]]],
                      column_names: Sequence[str]) -> Path:
    """Seed vs ours: per row (a network) and column (an image), the seed's PNG next to ours, plus |diff| x 10."""
    n = len(originals)
    fig, axes = plt.subplots(len(rows) + 1, 3 * n, figsize=(0.9 * 3 * n, 1.0 * (len(rows) + 1) + 0.4),
                             squeeze=False, dpi=110)
    for ax in axes.flat:
        ax.axis("off")
    for j, image in enumerate(originals):
        axes[0, 3 * j + 1].imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[0, 3 * j + 1].set_title(f"{column_names[j]}", fontsize=7)
    for i, (name, seed, ours) in enumerate(rows, start=1):
        for j in range(n):
            diff = ((seed[j] - ours[j]).abs() * 10).clamp(0, 1)
            for k, (tensor, title) in enumerate(((seed[j], "seed"), (ours[j], "ours"), (diff, "|diff|x10"))):
                axes[i, 3 * j + k].imshow(tensor.permute(1, 2, 0).numpy(), interpolation="nearest")
                if i == 1:
                    axes[i, 3 * j + k].set_title(title, fontsize=6)
        axes[i, 0].text(-0.15, 0.5, name, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ += ["save_side_by_side"]


def seed_comparison_figure(prebuilt_dir: Path, out_path: Path) -> dict[str, list[float]]:
    """Re-make the seed README's explanation images with ours and save :func:`save_side_by_side`.

    Returns, per network, the mean |seed - ours| in grey levels of each of the 4 images.
    """
    import tempfile

    import numpy as np
    import torch
    from PIL import Image
    from torchvision.utils import save_image

    from robustxai.models.woods_resnet import woods_resnet_from_file
    from robustxai.analysis.woods_explanations import ExplainSettings, explain_toward

    examples = prebuilt_dir / "example_output"

    def load(p: Path) -> Tensor:
        return torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255

    x = torch.stack([load(examples / f"prebuilt_orig_{j}.png") for j in range(4)])
    y = torch.tensor([8, 6, 3, 1])  # test images 2, 5, 8, 9: ship, frog, cat, automobile
    rows, diffs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(["standard", "adv-train", "all", "robust"]):
            model = woods_resnet_from_file(prebuilt_dir / f"resnet44-{name}.pt")
            expl = explain_toward(model, x, y, ExplainSettings(sanity_check="off"))
            ours = []
            for j in range(4):  # through the PNG, so the figure shows exactly what the files hold
                save_image(expl[j], Path(tmp) / f"{i}_{j}.png")
                ours.append(load(Path(tmp) / f"{i}_{j}.png"))
            seed = [load(examples / f"prebuilt_{i}_{j}.png") for j in range(4)]
            diffs[name] = [round(float((s - o).abs().mean() * 255), 2) for s, o in zip(seed, ours)]
            rows.append((name, seed, ours))
    save_side_by_side(out_path, list(x), rows, ["test 2 ship", "test 5 frog", "test 8 cat", "test 9 auto"])
    Image.open(out_path).convert("RGB").quantize(128).save(out_path, optimize=True)  # keep the docs small
    return diffs


if __name__ == "__main__":  # python -m robustxai.analysis.explanations ../shared/models/woods-prebuilt docs/images/x.png
    import sys

    print(seed_comparison_figure(Path(sys.argv[1]), Path(sys.argv[2])))
