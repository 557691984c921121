"""Metrics: torchmetrics ``Metric`` classes (synced under DDP); functional twins in ``metrics.functional``."""

from robustxai.metrics.ara import AccuracyRobustnessArea
from robustxai.metrics.attribution_similarity import (KendallTau, MapPairMean, MassCenterShift,
                                                      SpearmanCorrelation, TopKIntersection)

__all__ = ["AccuracyRobustnessArea", "MapPairMean", "KendallTau", "SpearmanCorrelation", "TopKIntersection", "MassCenterShift"]
