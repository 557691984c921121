"""Attacks: ``attack(model, x, y) -> x_adv`` and ``attack.run(...) -> AttackResult`` on batches in the pixel box.

On predictions: PGD (with FGSM, TRADES-KL and IG-NORM's inner attack as its objectives), Square (gradient-free),
UAR (``attacks.uar``), Woods et al.'s Algorithm 1; on explanations: ``attacks.explanation``.
"""

from robustxai.attacks.attribution_norm import AttributionNormPGD
from robustxai.attacks.base import Attack, AttackResult, attack_mode
from robustxai.attacks.explanation import (ExplanationAttack, MassCenterAttack, RandomDirectionAttack, TargetMapAttack,
                                           TopKAttack)
from robustxai.attacks.pgd import FGSM, PGD
from robustxai.attacks.square import Square
from robustxai.attacks.surrogate import softplus_surrogate
from robustxai.attacks.trades import TradesKL
from robustxai.attacks.uar import ElasticAttack, FogAttack, GaborAttack, JPEGAttack, SnowAttack
from robustxai.attacks.woods import WoodsAttack

__all__ = ["Attack", "AttackResult", "AttributionNormPGD", "ElasticAttack", "ExplanationAttack", "FGSM", "FogAttack",
           "GaborAttack", "JPEGAttack", "MassCenterAttack", "PGD", "RandomDirectionAttack", "SnowAttack", "Square",
           "TargetMapAttack", "TopKAttack", "TradesKL", "WoodsAttack", "attack_mode", "softplus_surrogate"]
