"""robustxai: train, attack, explain and measure image classifiers, from one Hydra config tree."""

__version__ = "0.1.0"
