"""Where the config tree is: the directory Hydra composed from, so an installed package needs no source layout."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path | None:
    """The primary config directory of the running Hydra app (``hydra.runtime.config_sources``), else
    ``$PROJECT_ROOT/conf`` (set by the entry points); ``None`` when neither is known."""
    try:
        from hydra.core.hydra_config import HydraConfig

        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                return Path(source.path)
    except ValueError:  # no Hydra app is running (HydraConfig not set)
        pass
    root = os.environ.get("PROJECT_ROOT")
    return Path(root) / "conf" if root else None


__all__ = ["config_dir"]
