"""Which evaluation callback runs an attack in ``src/eval.py attack=<name>``: a registry by attack type.

Attacks stay plain torch and know nothing of Lightning; this registry, one layer up, maps each kind of
attack to the callback that evaluates it. The most specific registered type wins (method resolution
order), so a new attack family registers its callback once and every subclass inherits it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L

from robustxai.analysis.boopathy_protocol import BoopathyPGDProtocol
from robustxai.attacks.base import Attack
from robustxai.attacks.explanation import ExplanationAttack
from robustxai.attacks.isa import ISA
from robustxai.callbacks.ara_eval import ARA, ARAEvaluation
from robustxai.callbacks.attack_eval import AttackEvaluation
from robustxai.callbacks.boopathy_eval import BoopathyPGDEvaluation
from robustxai.callbacks.explanation_eval import ExplanationAttackEvaluation
from robustxai.callbacks.isa_eval import ISAEvaluation

CallbackFactory = Callable[..., L.Callback]  # (name, attack, output_dir=..., **settings) -> callback
_REGISTRY: dict[type, CallbackFactory] = {}


def register_evaluation(kind: type, factory: CallbackFactory) -> None:
    """Evaluate attacks of type ``kind`` (and its subclasses, unless they register their own) with ``factory``."""
    _REGISTRY[kind] = factory


def evaluation_callback(name: str, attack: Any, output_dir: Path | None = None, **settings: Any) -> L.Callback:
    """The evaluation callback of ``attack`` (logged under ``name``), from the most specific registered type."""
    for kind in type(attack).__mro__:
        if kind in _REGISTRY:
            return _REGISTRY[kind](name, attack, output_dir=output_dir, **settings)
    raise TypeError(f"attack.{name}: {type(attack).__name__} is not an attack with an evaluation callback "
                    f"(registered: {', '.join(sorted(k.__name__ for k in _REGISTRY))}); register one with "
                    "robustxai.callbacks.registry.register_evaluation")


register_evaluation(Attack, AttackEvaluation)
register_evaluation(ExplanationAttack, ExplanationAttackEvaluation)
register_evaluation(ARA, ARAEvaluation)
register_evaluation(ISA, ISAEvaluation)
register_evaluation(BoopathyPGDProtocol, BoopathyPGDEvaluation)

__all__ = ["evaluation_callback", "register_evaluation"]
