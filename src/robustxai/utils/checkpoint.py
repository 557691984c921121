"""Atomic checkpoint writes and safe (``weights_only``) checkpoint loading."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from robustxai.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary file in the same directory, fsyncs, then renames over the target.

    A process killed mid-write leaves the previous checkpoint intact (plus, at worst, a stray
    ``.tmp`` file), never a truncated one. Loading always uses ``weights_only=True``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and an error message that says what went wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check ckpt_path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"could not load {path} with weights_only=True ({type(err).__name__}: {err}). It is corrupt, "
            f"or not a robustxai/Lightning checkpoint; foreign formats need an explicit importer."
        ) from err


def load_model_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the ``model.*`` weights of a Lightning checkpoint (or a plain state dict) into ``model``.

    Raises :class:`CheckpointError` naming the missing, unexpected and mis-shaped keys when the
    checkpoint was written for another architecture. Returns the whole checkpoint.
    """
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    if any(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        saved = ckpt.get("robustxai", {}).get("model_class", "unknown")
        details = "; ".join(part for part in (
            f"missing keys {missing[:5]}" if missing else "",
            f"unexpected keys {unexpected[:5]}" if unexpected else "",
            f"shape mismatches {mismatched[:5]}" if mismatched else "") if part)
        raise CheckpointError(
            f"checkpoint {path} does not fit model {type(model).__name__} ({details}). It was saved "
            f"from {saved}; select the matching model=... config (and its arguments).")
    model.load_state_dict(state)
    return ckpt
