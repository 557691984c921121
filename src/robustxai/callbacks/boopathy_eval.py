"""Runs seed 000's PGD protocol (``eval=boopathy``) once per test epoch on its seeded images; logs the table."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from robustxai.analysis.boopathy_protocol import (
    BoopathyPGDProtocol,
    metric_name,
    table_markdown,
)
from robustxai.attacks.base import attack_mode

log = logging.getLogger("robustxai")


class BoopathyPGDEvaluation(L.Callback):
    """At the end of the test epoch, take the protocol's images from the test split and log every cell.

    ``test/boopathy_pgd/steps<s>/eps<e>`` per (steps, eps); the table (a row per steps count) is printed
    and written to ``<output_dir>/boopathy_pgd.md``. The images come from ``trainer.datamodule.take``,
    independent of the test loader's batches (``data.test_subset`` shrinks the split it permutes).
    """

    def __init__(self, name: str, attack: BoopathyPGDProtocol, output_dir: str | Path | None = None) -> None:
        super().__init__()
        self.name, self.protocol = name, attack
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.table_path: Path | None = None

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "take"):
            raise RuntimeError(f"attack.{self.name}: the seed's protocol picks its images with datamodule.take(); "
                               f"run it through src/eval.py with a robustxai data module")
        n_test = datamodule.split_size("test")
        if n_test < self.protocol.num_images:
            log.warning("%s: the test split has %d images, fewer than the protocol's %d (data.test_subset?)",
                        self.name, n_test, self.protocol.num_images)
        x, y = datamodule.take("test", self.protocol.indices(n_test))
        x, y = x.to(pl_module.device), y.to(pl_module.device)
        model = pl_module.model
        with attack_mode(model, "eval"):
            acc = self.protocol.accuracy(model, x, y, progress=trainer.is_global_zero)
        for r, steps in enumerate(self.protocol.steps):
            for j, eps in enumerate(self.protocol.eps):
                pl_module.log(metric_name(steps, eps), torch.tensor(float(acc[r, j])), sync_dist=False)
        pl_module.log("test/boopathy_pgd/images", torch.tensor(float(len(y))), sync_dist=False)
        if trainer.is_global_zero:
            title = f"PGD accuracy, {len(y)} seed-99 images, step {self.protocol.step_size:g}, no random start"
            table = table_markdown(acc, self.protocol.eps, self.protocol.steps, title=title)
            print(f"\n{table}\n")
            directory = self.output_dir or Path(trainer.default_root_dir)
            directory.mkdir(parents=True, exist_ok=True)
            self.table_path = directory / "boopathy_pgd.md"
            self.table_path.write_text(table + "\n")


__all__ = ["BoopathyPGDEvaluation"]
