"""Attacks: ``attack(model, x, y) -> x_adv`` on batches in the pixel box, on predictions and on explanations."""

from robustxai.attacks.attribution_norm import AttributionNormPGD
from robustxai.attacks.base import Attack, attack_mode
from robustxai.attacks.explanation import (ExplanationAttack, MassCenterAttack, RandomDirectionAttack,
                                           TargetMapAttack, TopKAttack)
from robustxai.attacks.pgd import FGSM, PGD
from robustxai.attacks.surrogate import softplus_surrogate
from robustxai.attacks.trades import TradesKL
from robustxai.attacks.uar import ElasticAttack, FogAttack, GaborAttack, JPEGAttack, SnowAttack  # noqa: F401
from robustxai.attacks.woods import WoodsAttack

__all__ = ["Attack", "AttributionNormPGD", "ExplanationAttack", "FGSM", "MassCenterAttack", "PGD",
           "RandomDirectionAttack", "TargetMapAttack", "TopKAttack", "TradesKL", "WoodsAttack", "attack_mode",
           "softplus_surrogate"]
