"""Metrics: torchmetrics ``Metric`` classes (synced under DDP); functional twins in ``metrics.functional``."""

__all__: list[str] = []
