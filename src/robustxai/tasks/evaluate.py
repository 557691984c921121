"""The eval task: load a checkpoint, run the configured attacks as test callbacks, write results.json."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from robustxai.callbacks.masking_check import build_masking_checks, masking_results
from robustxai.errors import ConfigError
from robustxai.methods.base import EvaluationModule
from robustxai.tasks.common import (
    build_attack_callbacks,
    build_components,
    build_datamodule,
    build_model,
    build_trainer,
    figure_paths,
    log,
    prepare,
    record_config,
    scalar_metrics,
    task_context,
    write_results,
)
from robustxai.utils.checkpoint import load_model_weights
from robustxai.utils.paths import config_dir

FROM_TRAINING_RUN = ("data", "threat", "model")


def _fill_new_threat_keys(trained: DictConfig, run_dir: Path) -> DictConfig:
    """The training run's threat model, plus keys its file has gained since (e.g. ``explanation``).

    Attacks read the threat model by interpolation (``${threat.explanation.eps}``), so a checkpoint
    trained before a key existed could not be evaluated with the attacks that use it. Trained values win.
    """
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return trained
    choice = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices.threat")
    conf = config_dir()
    current = conf / "threat" / f"{choice}.yaml" if conf is not None and choice else None
    return OmegaConf.merge(OmegaConf.load(current), trained) if current is not None and current.is_file() else trained


def adopt_training_run(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """Take data, threat model and model from the run that wrote ``cfg.ckpt_path`` (its ``.hydra/config.yaml``).

    So a checkpoint is evaluated on the data and architecture it was trained with. A group chosen on
    the command line (``data=mnist``) wins; key overrides (``data.test_subset=500``) apply on top.
    Returns the names of the adopted components.
    """
    run_config = Path(cfg.ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    if not run_config.is_file():
        return []
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    chosen = {o.key_or_group for o in parsed}
    trained = OmegaConf.load(run_config)
    adopted = [name for name in FROM_TRAINING_RUN if name not in chosen and name in trained]
    with open_dict(cfg):
        for name in adopted:
            cfg[name] = _fill_new_threat_keys(trained[name], run_config.parent.parent) if name == "threat" \
                else trained[name]
        for o in parsed:
            if o.key_or_group.split(".")[0] in adopted and "." in o.key_or_group and not o.is_delete():
                OmegaConf.update(cfg, o.key_or_group, o.value(), force_add=True)
    if adopted:
        log.info("Evaluating with %s of the training run %s (choose others with e.g. data=...)",
                 ", ".join(adopted), run_config.parent.parent)
    return adopted


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on the test split (or ``data.test_subset``) under every attack.

    ``overrides`` are the command line's; they decide which components come from the training run.
    """
    imported = cfg.get("ckpt_path") is None
    if imported and not (cfg.get("model") or {}).get("weights"):
        raise ConfigError("ckpt_path is required: a checkpoint written by src/train.py "
                          "(or, for an imported foreign model, model.weights=<its file> and no ckpt_path)")
    if not imported and (cfg.get("model") or {}).get("weights"):
        raise ConfigError("give either ckpt_path or model.weights, not both")
    with task_context("eval") as info:
        info["from_training_run"] = [] if imported else adopt_training_run(cfg, overrides)
        output_dir = prepare(cfg)
        datamodule = build_datamodule(cfg)
        model = build_model(cfg, datamodule)  # an imported model loads model.weights here
        attack_callbacks = build_attack_callbacks(cfg, output_dir)
        # gradient-masking sanity checks beside each PGD evaluation (masking_checks=false: off)
        attack_callbacks += build_masking_checks(cfg, attack_callbacks, output_dir,
                                                 make_model=lambda: build_model(cfg, datamodule))
        if not imported:
            load_model_weights(model, cfg.ckpt_path)
        loggers = build_components(cfg, "logger")
        trainer = build_trainer(cfg, attack_callbacks, loggers)
        record_config(trainer, loggers, cfg, output_dir)
        trainer.test(EvaluationModule(model), datamodule=datamodule, verbose=trainer.is_global_zero)
        metrics = scalar_metrics(trainer)

    if trainer.is_global_zero:
        write_results(output_dir, metrics, task="eval",
                      checkpoint=str(cfg.ckpt_path if not imported else cfg.model.weights), **info,
                      images=figure_paths(attack_callbacks), masking=masking_results(attack_callbacks))
    return metrics
