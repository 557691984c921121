"""Evaluate a checkpoint under attacks: python src/eval.py ckpt_path=.../checkpoints/last.ckpt attack=[pgd,fgsm]

``task=explain`` writes adversarial explanations instead (robustxai.tasks.explain); ``conf/task/`` lists the tasks.

Data, threat model and model default to those of the training run that wrote the checkpoint.
"""

import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    from hydra.utils import get_method

    from robustxai.tasks.entry import run_task

    task = get_method(cfg.task._target_)  # conf/task/: eval (attacks and metrics) or explain
    return run_task(task, cfg, overrides=HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
