"""Training methods: one LightningModule each, on the shared :class:`ClassifierModule`."""

from robustxai.methods.base import ClassifierModule
from robustxai.methods.ig_norm import IGNorm, IGSumNorm
from robustxai.methods.interpretability import InterpretabilityTraining as InterpretabilityTraining  # noqa: F401
from robustxai.methods.natural import NaturalTraining
from robustxai.methods.pgd_at import PGDAdversarialTraining
from robustxai.methods.schedules import PiecewiseConstantLR, sgd_decay_weights_only
from robustxai.methods.trades import TRADES
from robustxai.methods.vaegan import VAEGANTraining as VAEGANTraining  # noqa: F401
from robustxai.methods.woods import WoodsTraining

__all__ = ["ClassifierModule", "IGNorm", "IGSumNorm", "NaturalTraining", "PGDAdversarialTraining",
           "PiecewiseConstantLR", "TRADES", "WoodsTraining", "sgd_decay_weights_only"]
