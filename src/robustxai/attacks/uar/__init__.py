"""UAR attacks (Kang et al. 2019, "Testing Robustness Against Unforeseen Adversaries") as seed 000 runs them.

One module per attack family (:mod:`.jpeg` with its codec :mod:`.jpeg_codec`, :mod:`.fog`,
:mod:`.gabor`, :mod:`.snow`, :mod:`.elastic`) on the shared targeted loop of :mod:`.base`.
"""

from robustxai.attacks.uar.base import UPSTREAM_CALIBRATED_STEP, UARAttack
from robustxai.attacks.uar.elastic import ElasticAttack
from robustxai.attacks.uar.fog import FogAttack
from robustxai.attacks.uar.gabor import GaborAttack
from robustxai.attacks.uar.jpeg import JPEGAttack
from robustxai.attacks.uar.jpeg_codec import JPEGCodec
from robustxai.attacks.uar.snow import SnowAttack

__all__ = [
           "UPSTREAM_CALIBRATED_STEP",
           "ElasticAttack",
           "FogAttack",
           "GaborAttack",
           "JPEGAttack",
           "JPEGCodec",
           "SnowAttack",
           "UARAttack",
]
