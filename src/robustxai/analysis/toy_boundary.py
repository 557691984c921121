"""``study=toy_boundary``: boundary tilting on the 2-D toy (Kim et al. 2019, section 2.2, spec section 5).

For every seed, the same initial MLP is trained under each regime (standard, weak and strong L2
adversarial training through the framework's own methods and PGD), attacked with the evaluation
attack, and measured:

- ``tilt_deg``: the angle between the decision boundary's normal at the boundary point nearest
  the class-1 mean and the data's long axis (the major eigenvector of the pooled within-class
  covariance). 90 degrees: the boundary runs along the data (fully "tilted" into the low-variance
  direction); 0: it cuts the data perpendicular to the long axis.
- ``on_manifold``: the share of class-1 adversarial examples inside the class-2 distribution's
  ``manifold_quantile`` Mahalanobis ellipse (empirical class-2 mean and covariance).
- ``arrow_deg``: the angle between the mean displacement (class-1 mean -> mean of its adversarial
  examples, the figure's arrow) and the long axis; ``displacement``: that arrow's length.
- ``acc`` / ``robust_acc``: accuracy on the clean and the attacked points (all of them).

It writes one figure per seed (the data, then each regime's decision regions with the class-1
adversarial examples in red and the mean-displacement arrow) and the table of every measurement.
Distances are in the framework's [0, 1] units (half the seed's); angles and shares do not depend on units.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from robustxai.attacks.base import Attack  # noqa: E402
from robustxai.utils.validation import check_range
from robustxai.data.toy import TwoGaussiansDataModule  # noqa: E402
from robustxai.methods.base import ClassifierModule  # noqa: E402

TITLES = {"standard": "Standard Training", "weak": "Adv. Training (Weak)", "strong": "Adv. Training (Strong)"}
METRICS = ("acc", "robust_acc", "tilt_deg", "on_manifold", "arrow_deg", "displacement")


# -- geometry (plain functions, tested on hand-made cases) ----------------------------------------
def margin(model: nn.Module, x: Tensor, chunk: int = 1 << 18) -> Tensor:
    """``z_1 - z_0`` for every point (positive: class 1, "Class 2"), in chunks of ``chunk`` points."""
    parts = []
    for part in x.split(chunk):
        logits = model(part)
        parts.append(logits[:, 1] - logits[:, 0])
    return torch.cat(parts)


def long_axis(points: Tensor, labels: Tensor) -> Tensor:
    """The unit major eigenvector of the pooled within-class covariance (the data's long axis)."""
    covs = [torch.cov(points[labels == k].T.double()) for k in labels.unique()]
    _, vectors = torch.linalg.eigh(sum(covs) / len(covs))
    return vectors[:, -1].to(points.dtype)


def line_angle_deg(v: Tensor, axis: Tensor) -> Tensor:
    """The angle in [0, 90] degrees between the lines along ``v`` and ``axis`` (signs ignored)."""
    cos = (v @ axis).abs() / (v.norm() * axis.norm()).clamp_min(1e-30)
    return torch.rad2deg(torch.arccos(cos.clamp(max=1.0)))


@torch.no_grad()
def nearest_boundary_point(model: nn.Module, center: Tensor, radius: float = 1.0, directions: int = 720,
                           samples: int = 1000, bisection_steps: int = 40) -> Tensor | None:
    """The point of the decision boundary nearest ``center`` within ``radius``, or None if there is none.

    Casts ``directions`` rays from ``center``, finds each ray's first change of predicted class
    among ``samples`` radii, refines it by bisection and returns the nearest crossing.
    """
    angles = torch.arange(directions, dtype=center.dtype, device=center.device) * (2 * math.pi / directions)
    rays = torch.stack([angles.cos(), angles.sin()], dim=1)
    radii = torch.linspace(0.0, radius, samples + 1, dtype=center.dtype, device=center.device)[1:]
    reference = margin(model, center[None])[0] > 0
    side = margin(model, (center + radii[None, :, None] * rays[:, None, :]).reshape(-1, 2)).view(directions, samples) > 0
    crossed = side != reference
    hit = crossed.any(dim=1)
    if not bool(hit.any()):
        return None
    first = crossed.float().argmax(dim=1)[hit]
    rays = rays[hit]
    high = radii[first]
    low = torch.where(first > 0, radii[(first - 1).clamp_min(0)], torch.zeros_like(high))
    for _ in range(bisection_steps):
        mid = (low + high) / 2
        changed = (margin(model, center + mid[:, None] * rays) > 0) != reference
        high, low = torch.where(changed, mid, high), torch.where(changed, low, mid)
    best = torch.argmin(high)
    return center + (low[best] + high[best]) / 2 * rays[best]


def boundary_normal(model: nn.Module, point: Tensor) -> Tensor:
    """The gradient of the margin at ``point``: the normal of the (piecewise-linear) boundary there."""
    x = point.detach().clone()[None].requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(margin(model, x).sum(), x)
    return grad[0]


def _check_quantile(name: str, quantile: float) -> None:
    check_range(name, quantile, low=0.0, high=1.0, low_open=True)
    if quantile >= 1.0:
        raise ValueError(f"{name} must be < 1 (the ellipse of quantile 1 is the whole plane), got {quantile}")


def on_manifold_share(points: Tensor, reference: Tensor, quantile: float = 0.99) -> Tensor:
    """The share of ``points`` inside the ``quantile`` Mahalanobis ellipse of the 2-D ``reference`` cloud.

    For a 2-D Gaussian the squared Mahalanobis radius is chi-square with 2 degrees of freedom,
    whose quantile is ``-2 ln(1 - quantile)``.
    """
    _check_quantile("quantile", quantile)
    mean, cov = reference.double().mean(0), torch.cov(reference.double().T)
    d = points.double() - mean
    squared = (d @ torch.linalg.inv(cov) * d).sum(1)
    return (squared <= -2.0 * math.log(1.0 - quantile)).double().mean().to(points.dtype)


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's INFO banners and the no-validation-split warning off for the duration."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero",
                                                     "lightning.fabric.utilities.rank_zero")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Total length of .* across ranks is zero.*")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# -- the study ------------------------------------------------------------------------------------
class ToyBoundaryStudy:
    """Standard vs weak vs strong adversarial training of the toy MLP, over several seeds.

    ``model`` builds a fresh network (a Hydra partial), ``regimes`` maps a name to a training
    method factory taking ``model=`` (partials of ``NaturalTraining`` / ``PGDAdversarialTraining``),
    ``attack`` is the evaluation attack. Each (seed, regime) starts from ``seed_everything(seed)``,
    so the regimes of one seed share their initial weights. ``expected_order`` names the regimes
    whose mean tilt should decrease in that order (``test/tilt_ordered`` is 1.0 when it does).
    """

    def __init__(self, data: TwoGaussiansDataModule, model: Callable[[], nn.Module],
                 regimes: Mapping[str, Callable[..., ClassifierModule]], attack: Attack,
                 seeds: Sequence[int] = (0,), epochs: int = 10, accelerator: str = "cpu",
                 expected_order: Sequence[str] = ("standard", "weak", "strong"),
                 grid_size: int = 600, manifold_quantile: float = 0.99, boundary_radius: float = 1.0,
                 boundary_directions: int = 720, boundary_samples: int = 1000, progress: bool = True) -> None:
        check_range("epochs", epochs, low=1)
        check_range("grid_size", grid_size, low=2)
        check_range("boundary_radius", boundary_radius, low=0.0, low_open=True)
        check_range("boundary_directions", boundary_directions, low=4)
        check_range("boundary_samples", boundary_samples, low=2)
        if not regimes:
            raise ValueError("regimes must name at least one training regime (e.g. standard: NaturalTraining)")
        if len(seeds) == 0:
            raise ValueError("seeds must hold at least one seed, e.g. seeds=[0,1,2]")
        unknown = [name for name in expected_order if name not in regimes]
        if unknown:
            raise ValueError(f"expected_order names {unknown}, which are not in regimes ({', '.join(regimes)}); "
                             f"set expected_order=[] to skip the ordering check")
        _check_quantile("manifold_quantile", manifold_quantile)
        self.data, self.model, self.regimes, self.attack = data, model, dict(regimes), attack
        self.seeds = [int(s) for s in seeds]
        self.epochs, self.accelerator = int(epochs), accelerator
        self.expected_order = list(expected_order)
        self.grid_size, self.manifold_quantile = int(grid_size), float(manifold_quantile)
        self.boundary = {"radius": float(boundary_radius), "directions": int(boundary_directions),
                         "samples": int(boundary_samples)}
        self.progress = progress

    # -- one network ----------------------------------------------------------------------------
    def train(self, regime: str, seed: int) -> nn.Module:
        """A fresh network trained under ``regime`` from ``seed`` (Lightning, the framework's methods)."""
        L.seed_everything(seed, workers=True, verbose=False)
        model = self.model()
        method = self.regimes[regime](model=model)
        with _quiet_lightning():  # one Trainer per network: no banner per network
            trainer = L.Trainer(max_epochs=self.epochs, accelerator=self.accelerator, devices=1, logger=False,
                                enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                                inference_mode=False, num_sanity_val_steps=0)
            trainer.fit(method, datamodule=self.data)
        return model.eval()

    def measure(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[dict[str, float], Tensor]:
        """The study's numbers for one trained network, and its adversarial examples of all points."""
        x_adv = self.attack(model, x, y)
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean()
            robust = (model(x_adv).argmax(1) == y).float().mean()
        first, second = y == 0, y == 1
        axis = long_axis(x, y)
        center = x[first].mean(0)
        point = nearest_boundary_point(model, center, **self.boundary)
        tilt = line_angle_deg(boundary_normal(model, point), axis) if point is not None else torch.tensor(math.nan)
        arrow = x_adv[first].mean(0) - center
        return {"acc": float(acc), "robust_acc": float(robust), "tilt_deg": float(tilt),
                "on_manifold": float(on_manifold_share(x_adv[first], x[second], self.manifold_quantile)),
                "arrow_deg": float(line_angle_deg(arrow, axis)), "displacement": float(arrow.norm())}, x_adv

    # -- the whole study --------------------------------------------------------------------------
    def run(self, output_dir: Path) -> dict[str, float]:
        """Train, attack and measure every (seed, regime); write figures and tables; return the numbers."""
        output_dir = Path(output_dir)
        self.data.setup()
        rows: list[dict[str, float | str | int]] = []
        jobs = [(seed, regime) for seed in self.seeds for regime in self.regimes]
        bar = tqdm(jobs, desc="toy_boundary", disable=not self.progress)
        panels: dict[int, list[tuple[str, nn.Module, Tensor, dict[str, float]]]] = {}
        for seed, regime in bar:
            bar.set_postfix_str(f"seed {seed} {regime}")
            model = self.train(regime, seed)
            x, y = (t.to(next(model.parameters()).device) for t in self.data.splits["test"])
            numbers, x_adv = self.measure(model, x, y)
            rows.append({"regime": regime, "seed": seed, **numbers})
            panels.setdefault(seed, []).append((regime, model, x_adv, numbers))
        x, y = self.data.splits["test"]
        for seed, seed_panels in panels.items():
            self.figure(output_dir / f"toy_boundary_seed{seed}.png", x, y, seed_panels)
        summary = summarise(rows, list(self.regimes))
        write_table(output_dir, rows, summary)
        return self.results(rows, summary)

    def results(self, rows: list[dict], summary: dict[str, dict[str, tuple[float, float]]]) -> dict[str, float]:
        """``test/<metric>/<regime>`` (mean over seeds), ``..._std``, ``.../seed_<s>`` and ``test/tilt_ordered``."""
        out: dict[str, float] = {}
        for regime, stats in summary.items():
            for metric, (mean, std) in stats.items():
                out[f"test/{metric}/{regime}"] = mean
                out[f"test/{metric}_std/{regime}"] = std
        for row in rows:
            for metric in METRICS:
                out[f"test/{metric}/{row['regime']}/seed_{row['seed']}"] = float(row[metric])
        if len(self.expected_order) > 1:
            tilts = [summary[name]["tilt_deg"][0] for name in self.expected_order]
            out["test/tilt_ordered"] = float(all(a > b for a, b in zip(tilts, tilts[1:])))
        return out

    @torch.no_grad()
    def figure(self, path: Path, x: Tensor, y: Tensor, panels: list[tuple[str, nn.Module, Tensor, dict]]) -> Path:
        """The data, then per regime: decision regions, class-1 adversarial examples, mean-displacement arrow."""
        x, y = x.cpu(), y.cpu()
        lim = (-0.05, 1.05)  # the seed's [-1.1, 1.1] in our units
        axis_values = torch.linspace(lim[0], lim[1], self.grid_size)
        gx, gy = torch.meshgrid(axis_values, axis_values, indexing="xy")
        grid = torch.stack([gx.flatten(), gy.flatten()], dim=1)
        n = len(panels) + 1
        cols = 2 if n <= 4 else math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
        first, second = (y == 0).numpy(), (y == 1).numpy()

        def scatter(ax: plt.Axes) -> None:
            ax.scatter(x[first, 0], x[first, 1], s=1, label="Class 1")
            ax.scatter(x[second, 0], x[second, 1], s=1, label="Class 2")
            ax.set_xlim(*lim)
            ax.set_ylim(*lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])

        scatter(axes[0, 0])
        axes[0, 0].scatter([10], [10], color="r", s=4, label="Adv. Example")
        axes[0, 0].legend(loc="upper left", fontsize=7, markerscale=3)
        axes[0, 0].set_title("Dataset", fontsize=10)
        for k, (regime, model, x_adv, numbers) in enumerate(panels, start=1):
            ax = axes.flat[k]
            device = next(model.parameters()).device
            regions = (margin(model, grid.to(device)) > 0).float().cpu().view(self.grid_size, self.grid_size)
            ax.contourf(gx.numpy(), gy.numpy(), regions.numpy(), alpha=0.5, cmap="coolwarm")
            scatter(ax)
            adv = x_adv.cpu()[first]
            ax.scatter(adv[:, 0], adv[:, 1], s=1, color="r")
            start, delta = x[first].mean(0), adv.mean(0) - x[first].mean(0)
            ax.arrow(float(start[0]), float(start[1]), float(delta[0]), float(delta[1]), length_includes_head=True,
                     width=0.005, head_width=0.035, color="k")
            ax.set_title(f"{TITLES.get(regime, regime)}\ntilt {numbers['tilt_deg']:.1f}°, on class 2 "
                         f"{100 * numbers['on_manifold']:.0f}%", fontsize=9)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
        plt.close(fig)
        return path


def summarise(rows: list[dict], regimes: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per regime and metric: (mean, sample std) over the seeds (std 0 for one seed)."""
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for regime in regimes:
        values = torch.tensor([[float(r[m]) for m in METRICS] for r in rows if r["regime"] == regime],
                              dtype=torch.float64)
        std = values.std(0, unbiased=True) if len(values) > 1 else torch.zeros(len(METRICS), dtype=torch.float64)
        summary[regime] = {m: (float(values[:, i].mean()), float(std[i])) for i, m in enumerate(METRICS)}
    return summary


def write_table(output_dir: Path, rows: list[dict], summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    """``toy_boundary.csv`` (one row per seed and regime) and ``toy_boundary.md`` (those plus mean ± std)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "toy_boundary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["regime", "seed", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    header = "| regime | seed | " + " | ".join(METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 2)]
    lines += ["| {} | {} | ".format(r["regime"], r["seed"]) + " | ".join(f"{float(r[m]):.4f}" for m in METRICS) + " |"
              for r in rows]
    lines += [f"| **{regime}** | mean ± std | " + " | ".join(f"{mean:.4f} ± {std:.4f}" for mean, std in stats.values())
              + " |" for regime, stats in summary.items()]
    markdown = "\n".join(lines) + "\n"
    (output_dir / "toy_boundary.md").write_text(markdown)
    return markdown


__all__ = ["ToyBoundaryStudy", "boundary_normal", "line_angle_deg", "long_axis", "margin", "nearest_boundary_point",
           "on_manifold_share", "summarise", "write_table"]
