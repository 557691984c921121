"""The analyze task: run one multi-run study (``study=<name>``, conf/study/) and write its results.

A study is any class named by ``conf/study/<name>.yaml``'s ``_target_`` whose constructor takes its
settings and whose ``run(output_dir) -> dict[str, float]`` does the work, writes its figures and
tables under ``output_dir`` and returns scalar results; this task validates and builds it, runs it,
and writes ``results.json`` (the scalars, the files the study wrote, the wall time).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from robustxai.errors import ConfigError
from robustxai.tasks.common import log, prepare, task_context, write_results
from robustxai.utils.config import instantiate

class Study(Protocol):
    """What ``analyze`` needs of a study."""

    def run(self, output_dir: Path) -> dict[str, float]:
        """Do the work, write figures and tables under ``output_dir``, return scalar results."""
        ...


def build_study(cfg: DictConfig) -> Study:
    """Instantiate ``cfg.study`` and check it has ``run(output_dir)``."""
    if cfg.get("study") is None:
        raise ConfigError("no study chosen: pass study=<name> (one of the files in conf/study/, e.g. toy_boundary)")
    study = instantiate(cfg.study, "study")
    if not callable(getattr(study, "run", None)):
        raise ConfigError(f"`study._target_`: {type(study).__name__} has no run(output_dir) method")
    return study


def _scalars(results: Any, study: Study) -> dict[str, float]:
    if not isinstance(results, dict):
        raise TypeError(f"{type(study).__name__}.run must return dict[str, float], got {type(results).__name__}")
    out = {}
    for key, value in results.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{type(study).__name__}.run returned a non-scalar {key!r}: {value!r}") from err
    return out


def _files(output_dir: Path) -> set[str]:
    return {str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file()}


def _study_name(cfg: DictConfig) -> str:
    """The chosen ``conf/study`` file's name under Hydra, else the study's class path."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get("study") or cfg.study._target_)
    except ValueError:  # not under Hydra (a config composed in a test)
        return str(cfg.study._target_)


def analyze(cfg: DictConfig) -> dict[str, float]:
    """Build and run ``cfg.study``; write ``config.yaml`` and ``results.json`` into the run directory."""
    with task_context("analyze") as info:
        output_dir = prepare(cfg)
        study = build_study(cfg)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        before = _files(output_dir)
        metrics = _scalars(study.run(output_dir), study)
        written = sorted(_files(output_dir) - before)  # what the study wrote (not Hydra's files or ours)
    write_results(output_dir, metrics, task="analyze", study=_study_name(cfg),
                  files=written, **info)
    log.info("%s: %d results in %s", cfg.study._target_.rsplit(".", 1)[-1],
             sum(not math.isnan(v) for v in metrics.values()), output_dir / "results.json")
    return metrics


__all__ = ["Study", "analyze", "build_study"]
