"""Evaluate a checkpoint under attacks: python src/eval.py ckpt_path=... data=mnist model=madry_cnn attack=[pgd,fgsm]"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from robustxai.tasks import evaluate
    from robustxai.errors import UserError

    try:
        evaluate(cfg)
    except UserError as err:
        sys.exit(f"Error: {err}")


if __name__ == "__main__":
    main()
