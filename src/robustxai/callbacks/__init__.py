"""Lightning callbacks that inject attacks, attacks on explanations and ARA into evaluation loops."""

from robustxai.callbacks.ara_eval import ARAEvaluation
from robustxai.callbacks.attack_eval import AttackEvaluation
from robustxai.callbacks.explanation_eval import ExplanationAttackEvaluation

__all__ = ["ARAEvaluation", "AttackEvaluation", "ExplanationAttackEvaluation"]
