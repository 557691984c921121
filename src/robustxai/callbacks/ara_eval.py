"""ARA as an evaluation: ``python src/eval.py attack=ara`` logs ``test/ara/<name>`` and ``test/ara/<name>_btr``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch

from robustxai.attacks.minimal_radius import make_ara_attack, minimal_radii, seed_subset
from robustxai.errors import ConfigError
from robustxai.metrics.ara import AccuracyRobustnessArea
from robustxai.utils.validation import check_range
from robustxai.utils.wandb import log_image_files

log = logging.getLogger("robustxai")


class ARA:
    """The ``attack=ara`` config object: the seed's ``calculate-ara`` settings and its evaluation callback.

    ``kinds``: ``attack`` (criterion: still classified correctly) and/or ``btr`` (p_y > 1/C).
    ``n_images`` of the test split in the seed's seed-1776 permutation order (``null``: all).
    """

    def __init__(self, eps: float = 20.0, steps: int = 450, momentum: float = 0.9, n_images: int | None = 1000,
                 subset_seed: int = 1776, batch_size: int = 128, kinds: tuple[str, ...] = ("attack", "btr"),
                 sanity_check: str = "error") -> None:
        for kind in kinds:
            make_ara_attack(kind, eps, steps, momentum, sanity_check)  # validates every value early
        if n_images is not None:
            check_range("n_images", n_images, low=1)
        check_range("batch_size", batch_size, low=1)
        self.eps, self.steps, self.momentum = eps, steps, momentum
        self.n_images, self.subset_seed, self.batch_size = n_images, subset_seed, batch_size
        self.kinds, self.sanity_check = tuple(kinds), sanity_check

    def __repr__(self) -> str:
        return (f"ARA(eps={self.eps}, steps={self.steps}, momentum={self.momentum}, n_images={self.n_images}, "
                f"kinds={self.kinds})")


class ARAEvaluation(L.Callback):
    """After the test epoch, runs the minimal-perturbation search on the ARA image set and logs the areas.

    Images come from the datamodule's test split (``trainer.datamodule.take('test', ...)``), are
    sharded over DDP ranks, and the radii are gathered by :class:`AccuracyRobustnessArea`. Writes
    ``<output_dir>/ara_<name>.json`` (per-image radii by test index) and a curve figure.
    """

    def __init__(self, name: str, config: ARA, output_dir: str | Path | None = None) -> None:
        super().__init__()
        self.name, self.config = name, config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.grid_path: Path | None = None

    def _images(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "take"):
            raise ConfigError("attack=ara needs a robustxai data module with a test split (data=cifar10, ...)")
        total = datamodule.split_size("test")
        n = self.config.n_images or total
        if n > total:
            raise ConfigError(f"attack.{self.name}.n_images={n} exceeds the {total} test images; "
                              f"lower it or drop data.test_subset")
        if total != 10_000:
            log.warning("ARA image set: permutation of %d test images; it is the seed's set only on the full "
                        "10,000-image CIFAR-10 test split (drop data.test_subset)", total)
        index = seed_subset(total, n, self.config.subset_seed)
        index = index[trainer.global_rank::trainer.world_size]
        x, y = datamodule.take("test", index)
        device = trainer.strategy.root_device
        return index, x.to(device), y.to(device)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        index, x, y = self._images(trainer)
        num_classes = getattr(trainer.datamodule, "num_classes", None) or int(pl_module.model(x[:1]).shape[1])
        record: dict[str, object] = {"test_index_rank0": index.tolist(), "settings": repr(self.config)}
        curves = {}
        for kind in self.config.kinds:
            attack = make_ara_attack(kind, self.config.eps, self.config.steps, self.config.momentum,
                                     self.config.sanity_check)
            radii = minimal_radii(pl_module.model, x, y, attack, self.config.batch_size)
            metric = AccuracyRobustnessArea(num_classes).to(pl_module.device)
            metric.update(radii)
            value = metric.compute()
            key = f"test/ara/{self.name}" if kind == "attack" else f"test/ara/{self.name}_{kind}"
            pl_module.log(key, value, sync_dist=True, reduce_fx="max")
            all_radii = metric.all_radii().cpu()
            curves[kind] = all_radii
            record[kind] = {"ara": float(value), "radii_rank0": radii.cpu().tolist(),
                            "never_fooled": int(all_radii.isinf().sum())}
        if trainer.is_global_zero and self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / f"ara_{self.name}.json").write_text(json.dumps(record, indent=1) + "\n")
            self.grid_path = self._save_curve(curves, num_classes)
            log_image_files(trainer.loggers, f"test/ara_curve/{self.name}", [self.grid_path])

    def _save_curve(self, curves: dict[str, torch.Tensor], num_classes: int) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from robustxai.metrics.ara import accuracy_at

        fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
        finite = torch.cat([r[r.isfinite()] for r in curves.values()])
        top = float(finite.max()) * 1.05 if finite.numel() else 1.0
        budgets = torch.linspace(0, top, 400)
        for kind, radii in curves.items():
            ax.plot(budgets, accuracy_at(radii, budgets), label=kind)
        ax.axhline(1.0 / num_classes, color="grey", ls="--", lw=0.8, label="chance")
        ax.set_xlabel("RMS budget ([0,1] pixel units)")
        ax.set_ylabel("accuracy (attack) / p_y > 1/C (btr)")
        ax.set_title(f"ARA curves: {self.name}")
        ax.legend()
        fig.tight_layout()
        path = self.output_dir / "images" / f"ara_{self.name}.png"  # type: ignore[operator]
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path


__all__ = ["ARA", "ARAEvaluation"]
