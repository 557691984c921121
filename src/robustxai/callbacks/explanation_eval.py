"""Runs an attack on explanations on every test batch and reports how far the maps moved (RAR's IN and CO)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from tqdm.auto import tqdm

from robustxai.analysis.explanation_figures import save_explanation_attack_examples
from robustxai.attacks.explanation import ExplanationAttack
from robustxai.metrics.attribution_similarity import (KendallTau, MapPairMean, MassCenterShift, SpearmanCorrelation,
                                                      TopKIntersection)
from robustxai.metrics.map_measures import map_measure
from robustxai.utils.wandb import log_image_files


def default_map_metrics() -> dict[str, MapPairMean]:
    """IN (top-k intersection, k = the attack's ``eval_k``), CO (Kendall tau-b), Spearman, mass-centre shift.

    tau and rho are undefined (NaN) for a constant clean map (e.g. an all-zero IG map): such images are
    left out of those two means, explicitly (``nan_policy="omit"``).
    """
    return {"topk_intersection": TopKIntersection(k=None), "kendall": KendallTau(nan_policy="omit"),
            "spearman": SpearmanCorrelation(nan_policy="omit"), "mass_center_shift": MassCenterShift()}


class ExplanationAttackEvaluation(L.Callback):
    """Attack the correctly classified images of each test batch; log, as means over those images:

    ``test/topk_intersection/<name>`` (IN, top-``eval_k``), ``test/kendall/<name>`` (CO, tau-b),
    ``test/spearman/<name>``, ``test/mass_center_shift/<name>`` (pixels) between the clean map and the
    map of the returned image, ``test/explanation_attack_unchanged/<name>`` (fraction of images where no
    label-preserving step beat the clean map, so the clean image was returned and scores 1, 1, 1, 0)
    and ``test/explanation_attack_images/<name>`` (how many images were attacked). Misclassified
    images are left out, as in the paper. ``metrics`` (name -> a :class:`MapPairMean`, from the
    ``metric`` config group; default :func:`default_map_metrics`) chooses the map comparisons, each
    logged as ``test/<key>/<name>``; a top-k intersection without ``k`` uses ``eval_k`` (default: the
    attack's). Saves a figure of the first ``grid_images`` attacked images to
    ``<output_dir>/images/<name>.png`` (and W&B).
    """

    def __init__(self, name: str, attack: ExplanationAttack, output_dir: str | Path | None = None,
                 eval_k: int | None = None, grid_images: int = 8,
                 metrics: Mapping[str, MapPairMean] | None = None) -> None:
        super().__init__()
        self.name, self.attack = name, attack
        self.eval_k = int(eval_k if eval_k is not None else attack.eval_k)
        metrics = dict(metrics) if metrics else default_map_metrics()
        for key, metric in metrics.items():
            if not isinstance(metric, MapPairMean):
                raise TypeError(f"metric.{key} must be a map metric (robustxai.metrics.MapPairMean), got {metric!r}")
            if isinstance(metric, TopKIntersection) and metric.k is None:
                metric.k = self.eval_k
        self.metrics = MetricCollection(metrics, compute_groups=False)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.grid_images = grid_images
        self.grid_path: Path | None = None
        self._grid_done = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.metrics = self.metrics.to(pl_module.device)
        self.unchanged = MeanMetric().to(pl_module.device)
        self.attacked = SumMetric().to(pl_module.device)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for metric in (self.metrics, self.unchanged, self.attacked):
            metric.reset()
        self._grid_done = False

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        model = pl_module.model
        with torch.no_grad():
            correct = model(x).argmax(dim=1) == y
        x, y = x[correct], y[correct]
        self.attacked.update(torch.tensor(float(len(x)), device=pl_module.device))
        if len(x) == 0:
            return
        with self._progress(trainer, batch_idx):
            result = self.attack.run(model, x, y)
        clean_map, adv_map = result.clean_map, result.adv_map
        kept = result.extras.get("label_kept")
        if kept is not None:  # select="last" (seed 000's AAI): the maps of the images that kept their label only
            clean_map, adv_map = clean_map[kept], adv_map[kept]
        if len(clean_map):
            scores = {key: metric.pairwise(clean_map, adv_map) for key, metric in self.metrics.items()}
            for key, metric in self.metrics.items():
                metric.update(clean_map, adv_map, values=scores[key])
        self.unchanged.update(result.unchanged.float())
        if not self._grid_done and trainer.is_global_zero and self.grid_images > 0:
            n = self.grid_images
            self._save_grid(trainer, x[:n], result.clean_map[:n], result.x_adv[:n], result.adv_map[:n],
                            result.unchanged[:n])
            self._grid_done = True

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # compute() syncs across DDP ranks already; sync_dist with "max" keeps the value exact (see AttackEvaluation)
        for key, metric in self.metrics.items():
            pl_module.log(f"test/{key}/{self.name}", metric.compute(), sync_dist=True, reduce_fx="max")
        pl_module.log(f"test/explanation_attack_unchanged/{self.name}", self.unchanged.compute(), sync_dist=True,
                      reduce_fx="max")
        pl_module.log(f"test/explanation_attack_images/{self.name}", self.attacked.compute(), sync_dist=True,
                      reduce_fx="max")

    @contextmanager
    def _progress(self, trainer: L.Trainer, batch_idx: int) -> Iterator[None]:
        """Show the attack's steps of this batch: a task on the Rich progress bar if there is one, else tqdm."""
        description = f"{self.name} (batch {batch_idx + 1}): attack steps"
        bar = trainer.progress_bar_callback
        live = isinstance(bar, RichProgressBar) and bar.progress is not None and trainer.is_global_zero
        if live:
            task = bar.progress.add_task(description, total=self.attack.steps * self.attack.restarts)
            self.attack.on_step = lambda step: (bar.progress.update(task, advance=1), bar.refresh())
        else:
            pbar = tqdm(total=self.attack.steps * self.attack.restarts, desc=description, leave=False,
                        disable=not trainer.is_global_zero or bar is None)
            self.attack.on_step = lambda step: pbar.update(1)
        try:
            yield
        finally:
            self.attack.on_step = None
            if live:
                bar.progress.remove_task(task)
            else:
                pbar.close()

    def _title(self) -> str:
        a = self.attack
        return (f"{self.name}: {type(a).__name__}, {type(a.attribution).__name__}, eps={a.eps:g}, "
                f"step={a.step_size:g}, steps={a.steps}, surrogate={getattr(a, 'surrogate', '-')}\n"
                f"selected by {a.measure}; IN = top-{self.eval_k} intersection, CO = Kendall tau")

    def _save_grid(self, trainer: L.Trainer, x: Tensor, clean_map: Tensor, x_adv: Tensor, adv_map: Tensor,
                   unchanged: Tensor) -> None:
        intersection = map_measure("topk_intersection", k=self.eval_k)(clean_map, adv_map)
        kendall = map_measure("kendall")(clean_map, adv_map)
        directory = self.output_dir or Path(trainer.default_root_dir)
        self.grid_path = save_explanation_attack_examples(
            directory / "images" / f"{self.name}.png", x, clean_map, x_adv, adv_map, intersection, kendall,
            unchanged, title=self._title())
        log_image_files(trainer.loggers, f"test/examples/{self.name}", [self.grid_path],
                        ["rows: clean image, clean map, attacked image, attacked map"])


__all__ = ["ExplanationAttackEvaluation"]
