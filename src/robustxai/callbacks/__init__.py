"""Lightning callbacks that inject attacks (and later attributions) into evaluation loops."""

from robustxai.callbacks.attack_eval import AttackEvaluation

__all__ = ["AttackEvaluation"]
