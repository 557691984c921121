"""``study=manifold_distance``: distance of adversarial examples to the VAE-GAN manifold (Kim et al. 2019, section 2.1).

The seed's protocol (spec section 3.3), per classifier of a list: attack the test images with the
large L2 PGD (seed: eps 12, step 2, 40 steps, cross-entropy, no random start, in [-1, 1] units, so eps
6 and step 1 in our [0, 1] box), keep the successful attacks, project each kept adversarial example
onto the approximated manifold with the VAE-GAN's stochastic reconstruction P(x) = Dec(mu + sigma
noise) (BN in inference mode), and measure d = ||x - P(x)||_2. The clean test images ("Test Data")
are the reference set: every set's distances are normalised by the Test Data's min and max, and each
set's Gaussian KDE (bandwidth factor 0.25, 500 points over [0, 1]) is plotted. The paper's finding:
Test Data < strongest-eps net < ... < standard net.

Success is judged, as the seed does, by the *standard* network (its prediction on x_adv differs from
its prediction on x), and also by the attacked network itself (the same criterion with its own
predictions); both are reported (§8.5 of the spec). Raw distances are in [0, 1] pixel units (the
seed's are twice these; the normalised ones are the same), with medians next to the KDE peaks,
because the min-max normalisation is outlier-sensitive (§8.6).
"""

from __future__ import annotations

import csv
import inspect
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustxai.analysis.kde import kde_peak
from robustxai.utils.checkpoint import load_model_weights
from robustxai.utils.validation import check_range

log = logging.getLogger("robustxai")
FILTERS = ("standard", "own")  # whose predictions judge an attack successful
TEST_DATA = "Test Data"


# -- the measurements (plain functions) ------------------------------------------------------------
@torch.no_grad()
def projection_distance(vaegan: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """||x - P(x)||_2 per image, P the VAE-GAN's stochastic reconstruction (call with the VAE-GAN in eval mode)."""
    return (x - vaegan(x, generator=generator)).flatten(1).norm(dim=1)


def normalise_by_reference(distances: Tensor, reference: Tensor) -> Tensor:
    """(d - min(ref)) / (max(ref) - min(ref)): the seed's normalisation by the Test Data's range."""
    low, high = reference.min(), reference.max()
    if not bool(high > low):
        raise ValueError("the reference (Test Data) distances are all equal: cannot normalise by their range")
    return (distances - low) / (high - low)


def attack_succeeded(pred_clean: Tensor, pred_adv: Tensor) -> Tensor:
    """The seed's criterion: the prediction on the adversarial image differs from the one on the clean image."""
    return pred_adv != pred_clean


# -- loading trained networks ----------------------------------------------------------------------
def run_model_config(ckpt_path: Path) -> DictConfig | None:
    """The ``model`` node of the training run that wrote ``<run>/checkpoints/<file>.ckpt``, if it is there."""
    run_dir = ckpt_path.resolve().parent.parent
    for config in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if config.is_file():
            node = OmegaConf.load(config).get("model")
            if node is not None:
                return node
    return None


def build_network(node: Mapping[str, Any], in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """Instantiate a ``_target_`` model node, filling in the data's shape where the model takes it."""
    node = OmegaConf.create(dict(node)) if not isinstance(node, DictConfig) else node
    params = inspect.signature(hydra.utils.get_object(node._target_)).parameters
    implied = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size}
    return hydra.utils.instantiate(node, **{k: v for k, v in implied.items() if k in params and k not in node})


def load_network(ckpt_path: str | Path, model: nn.Module | Mapping[str, Any] | None, data_shape: tuple[int, int, int],
                 num_classes: int, key: str) -> nn.Module:
    """A trained network in eval mode with frozen parameters: ``model`` (or its training run's model) + weights."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ValueError(f"`{key}.ckpt_path`: {path} does not exist (a checkpoint written by src/train.py)")
    if model is None:
        model = run_model_config(path)
        if model is None:
            raise ValueError(f"`{key}`: no model config next to {path} (its run's config.yaml); "
                             f"give `{key}.model` (e.g. {{_target_: robustxai.models.SmallCNN}})")
    if not isinstance(model, nn.Module):
        model = build_network(model, data_shape[0], num_classes, data_shape[1])
    load_model_weights(model, path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class DistanceSet:
    """One set's raw distances and, per filter, which of its images are kept."""

    name: str
    distances: Tensor
    kept: dict[str, Tensor]
    eps: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_") or "set"


def _instantiate(obj: Any, key: str) -> Any:
    if isinstance(obj, (Mapping, DictConfig)) and "_target_" in obj:
        return hydra.utils.instantiate(obj)
    if obj is None:
        raise ValueError(f"`{key}` is required")
    return obj


class ManifoldDistanceStudy:
    """Distances of each classifier's adversarial examples to their VAE-GAN projection, KDE plots and tables.

    ``classifiers``: a list of ``{name, ckpt_path, eps (optional, the training eps, used to check the
    expected ordering), model (optional: the network when the checkpoint's run config is not next
    to it)}``; the one named ``standard`` judges success as in the seed. ``vaegan_ckpt``: a
    ``method=vaegan`` checkpoint (``vaegan_model`` as for classifiers). ``data``: a TensorDataModule
    whose first ``n_images`` test images are used; ``attack``: the evaluation attack.
    ``bn_recalibration_images`` > 0 recomputes the VAE-GAN's BatchNorm running statistics on that many
    training images before projecting (for briefly trained VAE-GANs; 0, the seed's way, keeps them).
    """

    def __init__(self, vaegan_ckpt: str, classifiers: Sequence[Mapping[str, Any]], data: Any, attack: Any,
                 standard: str = "standard", vaegan_model: Any = None, n_images: int | None = 500,
                 batch_size: int = 250, kde_factor: float = 0.25, kde_points: int = 500,
                 x_range: tuple[float, float] = (0.0, 1.0), seed: int = 0, device: str = "auto",
                 bn_recalibration_images: int = 0, progress: bool = True) -> None:
        if not classifiers:
            raise ValueError("`classifiers` is empty: give a list of {name, ckpt_path} entries, one named "
                             f"{standard!r} (the standard network)")
        self.classifiers = [dict(c) for c in classifiers]
        for i, entry in enumerate(self.classifiers):
            if "name" not in entry or "ckpt_path" not in entry:
                raise ValueError(f"`classifiers[{i}]` needs `name` and `ckpt_path`, got keys {sorted(entry)}")
            unknown = set(entry) - {"name", "ckpt_path", "eps", "model"}
            if unknown:
                raise ValueError(f"`classifiers[{i}]`: unknown keys {sorted(unknown)} (valid: name, ckpt_path, eps, model)")
        names = [str(c["name"]) for c in self.classifiers]
        if len(set(names)) != len(names) or TEST_DATA in names:
            raise ValueError(f"`classifiers`: names must be distinct and not {TEST_DATA!r}, got {names}")
        if standard not in names:
            raise ValueError(f"`standard`={standard!r} is not a classifier name ({names}); it names the "
                             f"network that judges success, as in the seed")
        if n_images is not None:
            check_range("n_images", n_images, low=1)
        check_range("batch_size", batch_size, low=1)
        check_range("kde_factor", kde_factor, low=0.0, low_open=True)
        check_range("kde_points", kde_points, low=2)
        check_range("bn_recalibration_images", bn_recalibration_images, low=0)
        self.bn_recalibration_images = bn_recalibration_images
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
        self.vaegan_ckpt, self.vaegan_model = vaegan_ckpt, vaegan_model
        self.data, self.attack, self.standard = data, attack, standard
        self.n_images, self.batch_size = n_images, batch_size
        self.kde_factor, self.kde_points = kde_factor, kde_points
        self.x_range = (float(x_range[0]), float(x_range[1]))
        self.seed, self.progress = seed, progress
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))

    # -- the work -----------------------------------------------------------------------------------
    def _test_images(self) -> tuple[Tensor, Tensor, Any]:
        data = _instantiate(self.data, "data")
        data.setup("test")
        images, labels = data.splits["test"]
        if self.n_images is not None:
            images, labels = images[: self.n_images], labels[: self.n_images]
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return images.to(self.device), labels.to(self.device), data

    def _recalibrate(self, vaegan: nn.Module, data: Any, generator: torch.Generator) -> None:
        """Recompute the VAE-GAN's BN running statistics on the first training images (an option for short runs)."""
        if not hasattr(vaegan, "recalibrate_batchnorm"):
            raise ValueError(f"`bn_recalibration_images`: {type(vaegan).__name__} has no recalibrate_batchnorm; "
                             f"set it to 0")
        data.setup("fit")
        images = data.splits["train"][0][: self.bn_recalibration_images].to(self.device)
        vaegan.recalibrate_batchnorm(images, batch_size=100, generator=generator)
        vaegan.eval()
        log.info("manifold_distance: VAE-GAN BN statistics recomputed on %d training images", len(images))

    def measure(self) -> list[DistanceSet]:
        """Attack, filter and project: the Test Data set first, then one set per classifier."""
        x, y, data = self._test_images()
        shape, classes = tuple(x.shape[1:]), int(data.num_classes)
        attack = _instantiate(self.attack, "attack")
        vaegan = load_network(self.vaegan_ckpt, self.vaegan_model, shape, classes, "vaegan_ckpt").to(self.device)
        nets = {str(c["name"]): load_network(c["ckpt_path"], c.get("model"), shape, classes,
                                             f"classifiers[{i}]").to(self.device)
                for i, c in enumerate(self.classifiers)}
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        if self.bn_recalibration_images:
            self._recalibrate(vaegan, data, generator)
        batches = list(zip(x.split(self.batch_size), y.split(self.batch_size)))
        std = nets[self.standard]
        with torch.no_grad():
            test_d = torch.cat([projection_distance(vaegan, xb, generator) for xb, _ in batches])
            std_clean = torch.cat([std(xb).argmax(1) for xb, _ in batches])
        sets = [DistanceSet(TEST_DATA, test_d.cpu(), {f: torch.ones(len(x), dtype=torch.bool) for f in FILTERS})]
        bar = tqdm(total=len(nets) * len(batches), desc="manifold_distance", leave=False, disable=not self.progress)
        for entry in self.classifiers:
            name = str(entry["name"])
            net = nets[name]
            dist, kept_std, kept_own, wrong = [], [], [], []
            for i, (xb, yb) in enumerate(batches):
                x_adv = attack(net, xb, yb)
                with torch.no_grad():
                    own_clean, own_adv = net(xb).argmax(1), net(x_adv).argmax(1)
                    std_adv = std(x_adv).argmax(1)
                    dist.append(projection_distance(vaegan, x_adv, generator))
                kept_std.append(attack_succeeded(std_clean[i * self.batch_size:i * self.batch_size + len(xb)], std_adv))
                kept_own.append(attack_succeeded(own_clean, own_adv))
                wrong.append(own_adv != yb)
                bar.update(1)
            extra = {"robust_acc": 1.0 - torch.cat(wrong).float().mean().item()}
            sets.append(DistanceSet(name, torch.cat(dist).cpu(),
                                    {"standard": torch.cat(kept_std).cpu(), "own": torch.cat(kept_own).cpu()},
                                    None if entry.get("eps") is None else float(entry["eps"]), extra))
        bar.close()
        return sets

    def summarise(self, sets: list[DistanceSet]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Tensor]], Tensor]:
        """Table rows, the KDE curves (per filter, per set) on the grid, and the grid."""
        reference = sets[0].distances
        grid = torch.linspace(*self.x_range, self.kde_points, dtype=torch.float64)
        rows: list[dict[str, Any]] = []
        curves: dict[str, dict[str, Tensor]] = {f: {} for f in FILTERS}
        for s in sets:
            normalised = normalise_by_reference(s.distances, reference)
            for f in FILTERS if s.name != TEST_DATA else ("standard",):
                kept = s.kept[f]
                d, nd = s.distances[kept], normalised[kept]
                peak = math.nan
                if int(kept.sum()) >= 2 and bool(nd.std() > 0):
                    density, at = kde_peak(nd, grid, self.kde_factor)
                    curves[f][s.name] = density
                    peak = float(at)
                    if s.name == TEST_DATA:
                        curves["own"][s.name] = density
                else:
                    log.warning("manifold_distance: %s (%s filter) keeps %d images: no KDE", s.name, f, int(kept.sum()))
                rows.append({
                    "set": s.name, "filter": "all" if s.name == TEST_DATA else f, "eps": s.eps,
                    "n": len(kept), "kept": int(kept.sum()), "kept_fraction": float(kept.float().mean()),
                    "median": float(d.median()) if len(d) else math.nan,
                    "mean": float(d.mean()) if len(d) else math.nan,
                    "median_normalised": float(nd.median()) if len(nd) else math.nan,
                    "kde_peak": peak, **s.extra,
                })
        return rows, curves, grid

    def run(self, output_dir: Path) -> dict[str, float]:
        """Measure, write ``distances.csv``, ``summary.{md,csv}``, ``kde.csv`` and ``kde.png``; return the scalars."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        sets = self.measure()
        rows, curves, grid = self.summarise(sets)
        write_distances(output_dir / "distances.csv", sets)
        write_summary(output_dir, rows, self.standard)
        write_curves(output_dir / "kde.csv", curves, grid)
        plot_kdes(output_dir / "kde.png", curves, grid, self.x_range)
        return scalars(rows, sets)


# -- outputs ------------------------------------------------------------------------------------------
def write_distances(path: Path, sets: list[DistanceSet]) -> None:
    """One row per (set, image): the raw distance, the normalised one, and whether each filter keeps it."""
    reference = sets[0].distances
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["set", "index", "distance", "normalised", "kept_standard", "kept_own"])
        for s in sets:
            normalised = normalise_by_reference(s.distances, reference)
            for i, (d, nd) in enumerate(zip(s.distances.tolist(), normalised.tolist())):
                writer.writerow([s.name, i, f"{d:.6f}", f"{nd:.6f}", int(s.kept["standard"][i]), int(s.kept["own"][i])])


COLUMNS = ("set", "filter", "eps", "kept", "n", "kept_fraction", "robust_acc", "median", "mean",
           "median_normalised", "kde_peak")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def write_summary(output_dir: Path, rows: list[dict[str, Any]], standard: str) -> None:
    """``summary.csv`` and ``summary.md``: kept counts, raw medians/means, normalised medians, KDE peaks."""
    with (output_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: _fmt(r.get(k)) for k in COLUMNS} for r in rows])
    lines = [(f"Distances ||x - P(x)||_2 in [0, 1] pixel units (the seed's [-1, 1] units: x2). filter `standard`: "
              f"kept where the standard network ({standard}) changes its prediction, as the seed; `own`: where "
              f"the attacked network does. kde_peak: on the Test-Data-normalised axis."), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in COLUMNS) + " |" for r in rows]
    (output_dir / "summary.md").write_text("\n".join(lines) + "\n")


def write_curves(path: Path, curves: dict[str, dict[str, Tensor]], grid: Tensor) -> None:
    """The plotted KDE curves: one column per (filter, set)."""
    columns = [(f, name) for f in FILTERS for name in curves[f]]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["x"] + [f"{name} [{f}]" for f, name in columns])
        for j, x in enumerate(grid.tolist()):
            writer.writerow([f"{x:.6f}"] + [f"{curves[f][name][j].item():.6f}" for f, name in columns])


def plot_kdes(path: Path, curves: dict[str, dict[str, Tensor]], grid: Tensor, x_range: tuple[float, float]) -> None:
    """Two panels (success judged by the standard network, by the attacked one), one KDE per set."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    titles = {"standard": "success judged by the standard net (seed)", "own": "success judged by the attacked net"}
    for ax, f in zip(axes, FILTERS):
        for name, density in curves[f].items():
            ax.plot(grid.numpy(), density.numpy(), label=name, lw=2 if name == TEST_DATA else 1.5,
                    ls="--" if name == TEST_DATA else "-")
        ax.set_xlim(*x_range)
        ax.set_xlabel("normalised distance to the VAE-GAN projection")
        ax.set_title(titles[f], fontsize=10)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def expected_order(rows: list[dict[str, Any]], f: str) -> float:
    """1.0 if the KDE peaks follow Test Data < largest eps < ... < smallest eps (standard: eps 0), else 0.0;
    NaN when a set has no eps or no peak."""
    test = [r for r in rows if r["set"] == TEST_DATA]
    nets = [r for r in rows if r["set"] != TEST_DATA and r["filter"] == f]
    if any(r["eps"] is None or math.isnan(r["kde_peak"]) for r in nets) or math.isnan(test[0]["kde_peak"]):
        return math.nan
    peaks = [test[0]["kde_peak"]] + [r["kde_peak"] for r in sorted(nets, key=lambda r: -r["eps"])]
    return float(all(a < b for a, b in pairwise(peaks)))


def scalars(rows: list[dict[str, Any]], sets: list[DistanceSet]) -> dict[str, float]:
    """``median/<set>/<filter>``, ``kde_peak/...``, ``kept_fraction/...``, ``robust_acc/<set>``, ``order_ok/<filter>``."""
    out: dict[str, float] = {}
    for r in rows:
        tail = _slug(r["set"]) + ("" if r["set"] == TEST_DATA else f"/{r['filter']}")
        out[f"median/{tail}"] = r["median"]
        out[f"median_normalised/{tail}"] = r["median_normalised"]
        out[f"kde_peak/{tail}"] = r["kde_peak"]
        if r["set"] != TEST_DATA:
            out[f"kept_fraction/{tail}"] = r["kept_fraction"]
    for s in sets[1:]:
        out[f"robust_acc/{_slug(s.name)}"] = s.extra["robust_acc"]
    for f in FILTERS:
        out[f"order_ok/{f}"] = expected_order(rows, f)
    return out


__all__ = ["ManifoldDistanceStudy", "attack_succeeded", "load_network", "normalise_by_reference",
           "projection_distance"]
