"""Train a model: python src/train.py method=pgd_at data=mnist  (config tree in conf/, see README)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from robustxai.errors import UserError
    from robustxai.tasks.train import train

    try:
        metrics = train(cfg)
    except UserError as err:
        sys.exit(f"Error: {err}")
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
