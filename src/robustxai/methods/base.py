"""Shared LightningModule for every training method: model, optimiser, accuracy metrics, RNG state."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric

from robustxai.utils.rng import capture_rng_state, restore_rng_state

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class CheckpointMetadata:
    """Lightning hooks for every method: checkpoints carry the RNG state (exact resume) and ``self.model``'s
    class (so loading into another architecture can name the one it was saved from)."""

    model: nn.Module

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["robustxai"] = {
            "rng": capture_rng_state(),
            "model_class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("robustxai", {})
        if "rng" in meta:
            restore_rng_state(meta["rng"])


class ClassifierModule(CheckpointMetadata, L.LightningModule):
    """A classifier trained by some method; subclasses only say how the training loss is computed.

    ``optimizer`` (and the optional ``scheduler``) are factories such as Hydra partials, called with
    the parameters (the optimiser). Metrics: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``,
    ``val/acc_best``, ``test/loss``, ``test/acc``. The RNG state goes into every checkpoint, so a
    resumed run draws the same random starts as an uninterrupted one.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory,
                 scheduler: SchedulerFactory | None = None, scheduler_interval: str = "epoch") -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.train_acc, self.val_acc, self.test_acc = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()  # per-example means: exact under DDP
        self.val_acc_best.persistent(True)  # the best-so-far survives a resume

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    @abstractmethod
    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return the loss to minimise and the logits whose accuracy is reported as ``train/acc``."""

    # -- steps --------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss, logits = self.training_loss(x, y)
        self.train_acc.update((logits.argmax(dim=1) == y).float())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        # logged once per epoch rather than per step: each self.log call costs ~0.35 ms of Lightning overhead
        self.log("train/acc", self.train_acc, prog_bar=True)

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str, metric: MeanMetric, loss: MeanMetric) -> None:
        x, y = batch
        logits = self.model(x)
        metric.update((logits.argmax(dim=1) == y).float())
        loss.update(F.cross_entropy(logits, y, reduction="none"))
        self.log(f"{stage}/loss", loss)
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=False)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc, self.test_loss)

    # -- optimisation and checkpoints -------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}



class EvaluationModule(ClassifierModule):
    """Wraps a trained model for ``Trainer.test``; it has no training objective."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, optimizer=lambda params: None)

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        raise RuntimeError("EvaluationModule only evaluates; train with a method (method=natural, ...)")
