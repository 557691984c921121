"""The train task: fit a method on a dataset, then (optionally) test it under the configured attacks."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from robustxai.callbacks.masking_check import build_masking_checks, masking_results
from robustxai.errors import ConfigError
from robustxai.tasks.common import (build_attack_callbacks, build_components, build_datamodule, build_model,
                                    build_trainer, figure_paths, log, prepare, record_config, scalar_metrics,
                                    task_context, write_results)
from robustxai.utils.config import instantiate


def resolve_resume(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``null``: resume from ``<run dir>/checkpoints/last.ckpt`` if it exists; ``last``: it must exist."""
    last = output_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None:
        if last.exists():
            log.info("Resuming from %s", last)
            return str(last)
        return None
    if ckpt_path == "last":
        if not last.exists():
            raise ConfigError(f"`ckpt_path=last` but {last} does not exist. Point hydra.run.dir at the run "
                              f"directory to resume (outputs/<task>/runs/<time>), or pass a checkpoint path.")
        return str(last)
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"`ckpt_path`: {ckpt_path} does not exist")
    return ckpt_path


def train(cfg: DictConfig) -> dict[str, float]:
    """Run training (and testing) for a composed config; returns the final metrics."""
    with task_context("train") as info:
        output_dir = prepare(cfg)
        datamodule = build_datamodule(cfg)
        model = build_model(cfg, datamodule)
        method = instantiate(cfg.method, "method", model=model)
        attack_callbacks = build_attack_callbacks(cfg, output_dir) if cfg.test else []
        # gradient-masking sanity checks beside each PGD evaluation of the test phase (masking_checks=false: off)
        attack_callbacks += build_masking_checks(cfg, attack_callbacks, output_dir,
                                                 make_model=lambda: build_model(cfg, datamodule))
        loggers = build_components(cfg, "logger")
        trainer = build_trainer(cfg, attack_callbacks, loggers)
        record_config(trainer, loggers, cfg, output_dir)

        if cfg.train:
            trainer.fit(method, datamodule=datamodule, ckpt_path=resolve_resume(cfg.ckpt_path, output_dir))
        metrics = scalar_metrics(trainer)
        if cfg.test:
            trainer.test(method, datamodule=datamodule, verbose=trainer.is_global_zero)
            metrics.update(scalar_metrics(trainer))

    if trainer.is_global_zero:
        last = output_dir / "checkpoints" / "last.ckpt"
        write_results(output_dir, metrics, task="train", **info,
                      best_checkpoint=getattr(trainer.checkpoint_callback, "best_model_path", None) or None,
                      last_checkpoint=str(last) if last.exists() else None,
                      images=figure_paths(attack_callbacks), masking=masking_results(attack_callbacks))
    return metrics
