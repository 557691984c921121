"""The cache directory for derived dataset files, and tensors cached there keyed by source and recipe."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where derived files (decompressed archives) go: ``$ROBUSTXAI_CACHE`` or ``~/.cache/robustxai``.

    Data directories are treated as read-only, so nothing derived is ever written into them.
    """
    return Path(os.environ.get("ROBUSTXAI_CACHE", Path.home() / ".cache" / "robustxai")).expanduser()


def files_fingerprint(paths: Iterable[Path]) -> str:
    """A digest of the names, sizes and modification times of ``paths`` (changes when a file is replaced)."""
    digest = hashlib.sha1()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def cached_tensors(cache_dir: Path, name: str, key: dict[str, Any],
                   build: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """Load the tensors stored for ``key`` under ``cache_dir/name``, or ``build`` and store them.

    ``key`` describes everything the tensors depend on (source fingerprint, sizes, seeds, recipe
    version); it is hashed into the file name and written beside the file as JSON. Writes are
    atomic, so an interrupted run never leaves a half-written file behind.
    """
    text = json.dumps(key, sort_keys=True, default=str)
    stem = hashlib.sha1(text.encode()).hexdigest()[:20]
    folder = Path(cache_dir) / name
    path = folder / f"{stem}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception as err:  # a damaged cache file is rebuilt from the source data
            log.warning("cache file %s is unreadable (%s); rebuilding it", path, err)
    tensors = build()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(tensors, tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(text + "\n")
    return tensors


def is_writable_dir(path: Path) -> bool:
    """Whether downloads may go into ``path`` (or, if absent, its parent): its mode has a write bit AND
    this process may write there. The mode check keeps root from writing into read-only data trees."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return bool(path.stat().st_mode & 0o222) and os.access(path, os.W_OK)
