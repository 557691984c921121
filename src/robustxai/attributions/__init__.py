"""Attribution maps: ``attribution(model, x, target, create_graph=False) -> maps`` (plain torch, batched)."""

__all__: list[str] = []
