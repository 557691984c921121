"""Training methods: one LightningModule each, on the shared :class:`ClassifierModule`."""

from robustxai.methods.base import ClassifierModule
from robustxai.methods.natural import NaturalTraining
from robustxai.methods.pgd_at import PGDAdversarialTraining
from robustxai.methods.trades import TRADES

__all__ = ["ClassifierModule", "NaturalTraining", "PGDAdversarialTraining", "TRADES"]
