"""Runs an attack on every test batch and reports robust accuracy, with an image grid of examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric

from robustxai.analysis.figures import save_adversarial_examples
from robustxai.attacks.base import Attack
from robustxai.utils.wandb import log_image_files


class AttackEvaluation(L.Callback):
    """Attack each test batch with ``attack``; log ``test/robust_acc/<name>``.

    Also logs the largest L-inf and L2 distance of any adversarial example from its clean image
    (``test/max_linf/<name>``, ``test/max_l2/<name>``), so the budget can be checked from the
    results, and saves a figure of the first ``grid_images`` test images (clean row with label and
    prediction, adversarial row with prediction, rescaled perturbation row) to
    ``<output_dir>/images/<name>.png`` (and to W&B if used).
    """

    def __init__(self, name: str, attack: Attack, output_dir: str | Path | None = None,
                 grid_images: int = 16) -> None:
        super().__init__()
        self.name, self.attack = name, attack
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.grid_images = grid_images
        self.grid_path: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.robust_acc = MeanMetric().to(pl_module.device)
        self.max_linf = MaxMetric().to(pl_module.device)
        self.max_l2 = MaxMetric().to(pl_module.device)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for metric in (self.robust_acc, self.max_linf, self.max_l2):
            metric.reset()

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        x_adv = self.attack(pl_module.model, x, y)
        with torch.no_grad():
            correct = pl_module.model(x_adv).argmax(dim=1) == y
        delta = (x_adv - x).flatten(1)
        self.robust_acc.update(correct.float())
        self.max_linf.update(delta.abs().amax(dim=1))
        self.max_l2.update(delta.norm(dim=1))
        if batch_idx == 0 and trainer.is_global_zero and self.grid_images > 0:
            n = self.grid_images
            self._save_grid(trainer, pl_module, x[:n], x_adv[:n], y[:n])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # compute() already syncs across DDP ranks (every rank gets the same value): sync_dist with "max"
        # keeps it exact and tells Lightning the value is synced (no per-rank value, no warning)
        for key, metric in (("robust_acc", self.robust_acc), ("max_linf", self.max_linf), ("max_l2", self.max_l2)):
            pl_module.log(f"test/{key}/{self.name}", metric.compute(), sync_dist=True, reduce_fx="max")

    def _save_grid(self, trainer: L.Trainer, pl_module: L.LightningModule, x: Tensor, x_adv: Tensor,
                   y: Tensor) -> None:
        with torch.no_grad():
            pred_clean, pred_adv = pl_module.model(x).argmax(1), pl_module.model(x_adv).argmax(1)
        directory = self.output_dir or Path(trainer.default_root_dir)
        class_names = getattr(trainer.datamodule, "class_names", ()) if trainer.datamodule is not None else ()
        self.grid_path = save_adversarial_examples(
            directory / "images" / f"{self.name}.png", x, x_adv, y, pred_clean, pred_adv,
            title=f"{self.name}: {self.attack!r}", class_names=class_names)
        log_image_files(trainer.loggers, f"test/examples/{self.name}", [self.grid_path],
                        ["rows: clean, adversarial (red: fooled), perturbation (rescaled)"])
