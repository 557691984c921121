"""Run a multi-run study: python src/analyze.py study=toy_boundary  (studies in conf/study/, see docs/kim.md)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> float | None:
    from robustxai.tasks.analyze import analyze
    from robustxai.tasks.entry import run_task

    return run_task(analyze, cfg)


if __name__ == "__main__":
    main()
