"""Where derived dataset files go."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """Where derived files (decompressed archives) go: ``$ROBUSTXAI_CACHE`` or ``~/.cache/robustxai``.

    Data directories are treated as read-only, so nothing derived is ever written into them.
    """
    return Path(os.environ.get("ROBUSTXAI_CACHE", Path.home() / ".cache" / "robustxai")).expanduser()
