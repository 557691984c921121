"""Gradient-masking sanity checks beside a PGD evaluation: ``masking`` in ``results.json`` and ``masking_<name>.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from robustxai.analysis.masking import FLAG, MaskingSettings, run_checks
from robustxai.attacks.pgd import PGD
from robustxai.attacks.trades import TradesKL

log = logging.getLogger("robustxai")


class MaskingCheck(L.Callback):
    """Collects the first ``settings.n_images`` test images, then runs :func:`run_checks` for ``attack``.

    Runs after the test epoch on rank 0 only (on that rank's first images under DDP) and logs nothing
    to Lightning, so other ranks never wait for it. ``results`` holds the record; with an
    ``output_dir`` it is also written to ``<output_dir>/masking_<name>.json``.
    """

    def __init__(self, name: str, attack: PGD, settings: MaskingSettings | None = None,
                 surrogate: nn.Module | None = None, output_dir: str | Path | None = None) -> None:
        super().__init__()
        if not isinstance(attack, PGD):
            raise ValueError(f"MaskingCheck needs a PGD attack, got {attack!r} for {name!r}")
        self.name, self.attack = name, attack
        self.settings = settings or MaskingSettings()
        self.surrogate = surrogate
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.results: dict[str, Any] | None = None
        self._x: list[Tensor] = []
        self._y: list[Tensor] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._x, self._y, self.results = [], [], None

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        have = sum(len(y) for y in self._y)
        if have < self.settings.n_images:
            x, y = batch
            self._x.append(x[: self.settings.n_images - have].detach())
            self._y.append(y[: self.settings.n_images - have].detach())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self._y:
            return
        x, y = torch.cat(self._x), torch.cat(self._y)
        surrogate = self.surrogate.to(x.device) if self.surrogate is not None else None
        self.results = run_checks(pl_module.model, self.attack, x, y, self.settings, surrogate)
        for name, check in self.results["checks"].items():
            if check["status"] == FLAG:
                log.warning("Gradient masking? %s / %s: %s", self.name, name, check["explanation"])
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / f"masking_{self.name}.json").write_text(json.dumps(self.results, indent=1) + "\n")
        self._x, self._y = [], []


def build_masking_checks(cfg: DictConfig, attack_callbacks: list[L.Callback], output_dir: Path,
                         make_model: Callable[[], nn.Module]) -> list[MaskingCheck]:
    """One :class:`MaskingCheck` per untargeted PGD or FGSM evaluation when ``cfg.masking_checks`` is true.

    ``make_model`` builds a fresh copy of the architecture, into which ``masking.surrogate_ckpt`` is loaded.
    """
    if not cfg.get("masking_checks", False):
        return []
    from robustxai.utils.checkpoint import load_model_weights
    from robustxai.utils.config import instantiate

    settings = instantiate(cfg.masking, "masking") if cfg.get("masking") is not None else MaskingSettings()
    surrogate = None
    if settings.surrogate_ckpt:
        surrogate = make_model()
        load_model_weights(surrogate, settings.surrogate_ckpt)
        surrogate.eval()
    checks = []
    for cb in attack_callbacks:
        attack = getattr(cb, "attack", None)
        if isinstance(attack, PGD) and not isinstance(attack, TradesKL) and not attack.targeted \
                and attack.loss != "kl":
            checks.append(MaskingCheck(cb.name, attack, settings, surrogate, output_dir))
    if not checks:
        log.info("masking_checks: no PGD-type attack among the configured ones, nothing to check")
    return checks


def masking_results(callbacks: list[L.Callback]) -> dict[str, Any]:
    """The ``masking`` section of ``results.json``: each checked attack's record, by attack name."""
    return {cb.name: cb.results for cb in callbacks if isinstance(cb, MaskingCheck) and cb.results is not None}
