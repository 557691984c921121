"""Building blocks shared by the train and eval tasks: config -> components, results on disk."""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import hydra
import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf
from torch import nn

from robustxai.attacks.explanation import ExplanationAttack
from robustxai.callbacks.registry import evaluation_callback
from robustxai.data.base import TensorDataModule
from robustxai.errors import UserError
from robustxai.utils import ddp
from robustxai.utils.checkpoint import AtomicCheckpointIO
from robustxai.utils.config import instantiate, validate_config

log = logging.getLogger("robustxai")
ddp.install()  # DDP ranks of a multirun job run that job alone, in its directory


def _quiet_library_logging() -> None:
    """Lightning prints through its own handler and again through Hydra's root one: keep Hydra's."""
    for handler in list(logging.getLogger("lightning.pytorch").handlers):
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")


def prepare(cfg: DictConfig) -> Path:
    """Validate the whole config, seed everything, and return the run directory."""
    _quiet_library_logging()
    validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def build_datamodule(cfg: DictConfig) -> TensorDataModule:
    return instantiate(cfg.data, "data")


def build_model(cfg: DictConfig, datamodule: TensorDataModule) -> nn.Module:
    """Instantiate ``cfg.model``, filling in the arguments the data implies (``datamodule.model_kwargs()``) where the model takes them."""
    implied = datamodule.model_kwargs()
    params = inspect.signature(hydra.utils.get_object(cfg.model._target_)).parameters
    extra = {k: v for k, v in implied.items() if k in params and k not in cfg.model}
    model = instantiate(cfg.model, "model", **extra)
    if cfg.get("compile", False):
        model.compile()  # in place: the state-dict keys (and so the checkpoints) stay those of the model
    return model


def build_attack_callbacks(cfg: DictConfig, output_dir: Path) -> list[L.Callback]:
    """One evaluation callback per entry of ``cfg.attack`` (built now, so bad values fail early).

    The callback of each attack comes from :mod:`robustxai.callbacks.registry` (attacks on predictions:
    robust accuracy; on explanations: IN, CO and the ``cfg.metric`` map metrics; ARA: the areas).
    """
    metrics = cfg.get("metric") or {}
    callbacks: list[L.Callback] = []
    for name, node in (cfg.get("attack") or {}).items():
        attack = instantiate(node, f"attack.{name}")
        settings = {"metrics": {key: instantiate(m, f"metric.{key}") for key, m in metrics.items()}} \
            if isinstance(attack, ExplanationAttack) and metrics else {}
        callbacks.append(evaluation_callback(name, attack, output_dir=output_dir, **settings))
    return callbacks


def build_components(cfg: DictConfig, group: str) -> list[Any]:
    return [instantiate(node, f"{group}.{name}") for name, node in (cfg.get(group) or {}).items()]


def _without_validation_monitors(cfg: DictConfig, callbacks: list[Any]) -> list[Any]:
    """Drop callbacks that monitor a ``val/`` metric when the data has no validation split (``val_size: 0``).

    Otherwise Lightning warns on every epoch that ``val/acc`` is missing, and the callback does nothing.
    """
    if cfg.get("data") is None or cfg.data.get("val_size", None) != 0:
        return callbacks
    kept = [cb for cb in callbacks if not str(getattr(cb, "monitor", None) or "").startswith("val/")]
    if len(kept) < len(callbacks):
        log.info("data.val_size=0: no validation split, so the callbacks that monitor val/ metrics are off")
    return kept


def build_trainer(cfg: DictConfig, attack_callbacks: list[L.Callback], loggers: list[Logger]) -> L.Trainer:
    """The configured Trainer with ``cfg.callbacks`` plus the attack callbacks, writing atomic checkpoints."""
    callbacks = _without_validation_monitors(cfg, build_components(cfg, "callbacks")) + attack_callbacks
    return instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False,
                       plugins=[AtomicCheckpointIO()])


def figure_paths(attack_callbacks: list[L.Callback]) -> dict[str, str]:
    """The example figure each attack saved (a callback's ``grid_path``), for ``results.json``."""
    return {cb.name: str(cb.grid_path) for cb in attack_callbacks if getattr(cb, "grid_path", None)}


def record_config(trainer: L.Trainer, loggers: list[Logger], cfg: DictConfig, output_dir: Path) -> None:
    """Write the resolved config to ``<run dir>/config.yaml`` and send it to every logger."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(resolved)
    if trainer.is_global_zero:
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(trainer.callback_metrics.items())
            if isinstance(v, (torch.Tensor, float, int)) and torch.as_tensor(v).numel() == 1}


def write_results(output_dir: Path, metrics: dict[str, float], **extra: Any) -> Path:
    """Write ``results.json`` (every metric plus run facts) atomically into the run directory."""
    path = output_dir / "results.json"
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"metrics": clean, **extra}, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


@contextmanager
def task_context(task: str) -> Iterator[dict[str, Any]]:
    """Times the task, logs failures, and always closes the W&B run so multirun jobs stay separate."""
    info: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    start = time.perf_counter()
    try:
        with ddp.job_scope():
            yield info
    except UserError:
        raise  # its message says it all: the entry point prints it without a traceback
    except Exception:
        log.exception("%s failed", task)
        raise
    finally:
        info["wall_time_s"] = round(time.perf_counter() - start, 2)
        try:
            import wandb

            if wandb.run is not None:
                wandb.finish()
        except ImportError:
            pass
