"""Metrics: torchmetrics ``Metric`` classes (synced under DDP); functional twins in ``metrics.functional``.

The classes are imported lazily, so the functional forms (used inside attacks) do not pull in torchmetrics.
"""

from __future__ import annotations

import importlib
from typing import Any

_CLASSES = {
    "AccuracyRobustnessArea": "robustxai.metrics.ara",
    "MapPairMean": "robustxai.metrics.attribution_similarity",
    "KendallTau": "robustxai.metrics.attribution_similarity",
    "SpearmanCorrelation": "robustxai.metrics.attribution_similarity",
    "TopKIntersection": "robustxai.metrics.attribution_similarity",
    "MassCenterShift": "robustxai.metrics.attribution_similarity",
}
__all__ = list(_CLASSES)


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'robustxai.metrics' has no attribute {name!r}")
