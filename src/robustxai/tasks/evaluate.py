"""The eval task: load a checkpoint, run the configured attacks as test callbacks, write results.json."""

from __future__ import annotations

from omegaconf import DictConfig

from robustxai.methods.base import EvaluationModule
from robustxai.tasks.common import (build_attack_callbacks, build_components, build_datamodule, build_model,
                                    build_trainer, log_config, prepare, scalar_metrics, task_context,
                                    write_results)
from robustxai.utils.checkpoint import load_model_weights


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on the test split (or ``data.test_subset``) under every attack."""
    with task_context("eval") as info:
        output_dir = prepare(cfg)
        datamodule = build_datamodule(cfg)
        model = build_model(cfg, datamodule)
        attack_callbacks = build_attack_callbacks(cfg, output_dir)
        load_model_weights(model, cfg.ckpt_path)
        loggers = build_components(cfg, "logger")
        trainer = build_trainer(cfg, build_components(cfg, "callbacks") + attack_callbacks, loggers)
        log_config(loggers, cfg)
        trainer.test(EvaluationModule(model), datamodule=datamodule, verbose=trainer.is_global_zero)
        metrics = scalar_metrics(trainer)

    if trainer.is_global_zero:
        write_results(output_dir, metrics, task="eval", checkpoint=str(cfg.ckpt_path), **info,
                      images={cb.name: str(cb.grid_path) for cb in attack_callbacks if cb.grid_path})
    return metrics
