"""Train a model: python src/train.py method=pgd_at data=mnist  (config tree in conf/, see README)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from robustxai.tasks.entry import run_task
    from robustxai.tasks.train import train

    return run_task(train, cfg)


if __name__ == "__main__":
    main()
