"""Run a multi-run study: python src/analyze.py study=toy_boundary  (studies in conf/study/, see docs/kim.md)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> float | None:
    from robustxai.errors import UserError
    from robustxai.tasks.analyze import analyze

    try:
        metrics = analyze(cfg)
    except UserError as err:
        sys.exit(f"Error: {err}")
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
