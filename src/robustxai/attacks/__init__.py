"""Perturbation attacks: ``attack(model, x, y) -> x_adv`` on batches in the pixel box."""

from robustxai.attacks.base import Attack, attack_mode
from robustxai.attacks.pgd import FGSM, PGD
from robustxai.attacks.trades import TradesKL

__all__ = ["Attack", "FGSM", "PGD", "TradesKL", "attack_mode"]
