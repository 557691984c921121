"""Attacks on explanations (Ghorbani et al. 2019, as RAR uses them): move the attribution map, keep the label.

``base`` holds the shared loop (:class:`ExplanationAttack`); each attack is one small module saying which map
objective it ascends; ``target_maps`` reads and builds the target regions of the target-map attack.
"""

from robustxai.attacks.explanation.base import MEASURES, ExplanationAttack, explanation_result, top_k_mask
from robustxai.attacks.explanation.mass_center import MassCenterAttack
from robustxai.attacks.explanation.random_direction import RandomDirectionAttack
from robustxai.attacks.explanation.target_map import TargetMapAttack
from robustxai.attacks.explanation.target_maps import TARGET_PATTERNS, load_target_map, target_pattern
from robustxai.attacks.explanation.topk import TopKAttack

__all__ = ["MEASURES", "TARGET_PATTERNS", "ExplanationAttack", "MassCenterAttack", "RandomDirectionAttack",
           "TargetMapAttack", "TopKAttack", "explanation_result", "load_target_map", "target_pattern", "top_k_mask"]
