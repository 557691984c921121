"""``study=gradient_maps``: loss-gradient maps of a model grid side by side (Kim et al. 2019 section 2.1, spec 3.4).

The seed's figure: for a few test images, the gradient of -CE(f(x), onehot(y_hat)) = d log p_y_hat / dx
(y_hat the network's prediction) of every network, post-processed by the seed's
``preprocess(q1=0.5, q2=99.5)``: the signed sum over channels, clipped per image to its 0.5th-99.5th
percentiles, and, when the lower percentile is above 0, the values below it set to 0; shown with the
``bwr`` colormap on a range symmetric about 0. Standard networks give noisy maps, adversarially
trained ones maps that follow the digit or object. The figure goes to ``gradient_maps.png`` under the
run directory and to every configured W&B logger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from robustxai.analysis.manifold_distance import load_network
from robustxai.analysis.roar import _grid, _instantiate, _slug
from robustxai.metrics.functional import pearson
from robustxai.utils.validation import check_range
from robustxai.utils.wandb import log_image_files


def seed_preprocess(maps: Tensor, q1: float = 0.5, q2: float = 99.5) -> Tensor:
    """The seed's ``preprocess``: signed channel sum, per-image clip to the [q1, q2] percentiles, and values
    below a positive lower percentile set to 0. (N, C, H, W) or (N, H, W) -> (N, H, W)."""
    check_range("q1", q1, low=0.0, high=100.0)
    check_range("q2", q2, low=q1, high=100.0)
    a = maps.sum(dim=1) if maps.ndim == 4 else maps
    if a.ndim != 3:
        raise ValueError(f"maps must be (N, C, H, W) or (N, H, W), got shape {tuple(maps.shape)}")
    flat = a.flatten(1).to(torch.float64)
    lo = torch.quantile(flat, q1 / 100.0, dim=1, keepdim=True)
    hi = torch.quantile(flat, q2 / 100.0, dim=1, keepdim=True)
    out = torch.minimum(torch.maximum(flat, lo), hi)
    out = torch.where((lo > 0) & (flat < lo), torch.zeros_like(out), out)
    return out.view_as(a).to(maps.dtype)


def loss_gradient(model: nn.Module, x: Tensor, seed_units: bool = True) -> tuple[Tensor, Tensor]:
    """(d log p_y_hat / dx, y_hat): the gradient of -CE at the predicted label, w.r.t. z = 2x - 1 when ``seed_units``."""
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    z = (2.0 * x - 1.0 if seed_units else x).detach().requires_grad_(True)
    with torch.enable_grad():
        inputs = (z + 1.0) / 2.0 if seed_units else z
        loss = -torch.nn.functional.cross_entropy(model(inputs), predicted, reduction="sum")
        (grad,) = torch.autograd.grad(loss, z)
    return grad, predicted


class GradientMapsStudy:
    """Loss-gradient maps of every network of ``models`` (or ``models_dir``) on the test images ``indices``.

    ``loggers``: name -> logger (``conf/logger/``; W&B loggers get the figure). Returns, per network,
    ``test/image_alignment/<name>``: the mean over the images of the Pearson correlation between the
    processed map's magnitude and the image (channel mean), a number for "the gradient follows the
    digit", and ``test/correct/<name>``, the share of the shown images it classifies correctly.
    """

    def __init__(self, data: Any, models: Sequence[Mapping[str, Any]] | None = None, models_dir: str | None = None,
                 indices: Sequence[int] = (1, 3, 5), q1: float = 0.5, q2: float = 99.5, seed_units: bool = True,
                 loggers: Mapping[str, Any] | None = None, device: str = "auto", dpi: int = 130) -> None:
        if not indices:
            raise ValueError("indices must name at least one test image, e.g. [1, 3, 5] (the seed's MNIST images)")
        check_range("q1", q1, low=0.0, high=100.0)
        check_range("q2", q2, low=q1, high=100.0)
        check_range("dpi", dpi, low=10)
        self.grid = _grid(models, models_dir)
        self.data, self.indices = data, [int(i) for i in indices]
        self.q1, self.q2, self.seed_units = float(q1), float(q2), seed_units
        self.loggers = dict(loggers or {})
        self.dpi = int(dpi)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))

    def maps(self) -> tuple[Tensor, Tensor, list[tuple[str, Tensor, Tensor]]]:
        """The images, labels and, per network, its processed maps and predictions."""
        data = _instantiate(self.data)
        data.setup("test")
        n = data.split_size("test")
        if max(self.indices) >= n:
            raise ValueError(f"indices go up to {max(self.indices)} but the test split has {n} images")
        x, y = data.take("test", self.indices)
        x, y = x.to(self.device), y.to(self.device)
        out = []
        for entry in self.grid:
            net = load_network(entry.ckpt_path, entry.model, tuple(x.shape[1:]), int(data.num_classes),
                               f"models[{entry.name}]").to(self.device)
            grad, predicted = loss_gradient(net, x, self.seed_units)
            out.append((entry.name, seed_preprocess(grad, self.q1, self.q2).cpu(), predicted.cpu()))
        return x.cpu(), y.cpu(), out

    def figure(self, path: Path, x: Tensor, y: Tensor, panels: list[tuple[str, Tensor, Tensor]]) -> Path:
        """Rows: images; columns: the input, then each network's map (bwr, symmetric about 0)."""
        rows, cols = len(x), len(panels) + 1
        fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows), squeeze=False)
        eps = {m.name: m.eps for m in self.grid}
        for i in range(rows):
            image = x[i].permute(1, 2, 0).squeeze(-1).numpy()
            axes[i, 0].imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            axes[i, 0].set_title(f"test {self.indices[i]} (y={int(y[i])})", fontsize=7)
            for j, (name, maps, predicted) in enumerate(panels, start=1):
                m = float(maps[i].abs().max()) or 1.0
                axes[i, j].imshow(maps[i].numpy(), cmap="bwr", vmin=-m, vmax=m)
                color = "k" if int(predicted[i]) == int(y[i]) else "r"
                axes[i, j].set_title(f"{name}\neps {eps[name]:g}, pred {int(predicted[i])}", fontsize=6, color=color)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=self.dpi)
        plt.close(fig)
        return path

    def run(self, output_dir: Path) -> dict[str, float]:
        """Compute the maps, write ``gradient_maps.png``, send it to the W&B loggers; return the per-network numbers."""
        x, y, panels = self.maps()
        path = self.figure(Path(output_dir) / "gradient_maps.png", x, y, panels)
        loggers = list(self.loggers.values())
        log_image_files(loggers, "analysis/gradient_maps", [path], ["loss gradients: " + ", ".join(
            f"{m.name} (eps {m.eps:g})" for m in self.grid)])
        for logger in loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(logger, "log_image") and hasattr(experiment, "finish"):
                experiment.finish()  # flush the offline run files now
        out: dict[str, float] = {}
        image = x.mean(dim=1)
        for name, maps, predicted in panels:
            r = pearson(maps.abs(), image)
            finite = r[~torch.isnan(r)]
            out[f"test/image_alignment/{_slug(name)}"] = float(finite.mean()) if len(finite) else math.nan
            out[f"test/correct/{_slug(name)}"] = float((predicted == y).float().mean())
        return out


__all__ = ["GradientMapsStudy", "loss_gradient", "seed_preprocess"]
