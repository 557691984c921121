"""Tasks behind the entry points: compose nothing, take a resolved config, run, return metrics."""

from robustxai.tasks.evaluate import evaluate
from robustxai.tasks.train import train

__all__ = ["evaluate", "train"]
