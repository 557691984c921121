"""Safe importer for the seed's legacy ResNet-44 files (Woods et al., spec 1.6): no code runs while loading.

The files are PyTorch pre-1.6 pickles with CUDA storages that also name the global
``__main__.cifar10_preprocess``. They are read with ``torch.load(weights_only=True)``, the
restricted unpickler, where that one global is mapped to an inert stub; any other global (and
so any ``__reduce__`` payload) is refused by torch before it can run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustxai.errors import CheckpointError


def _cifar10_preprocess_stub(*args: Any, **kwargs: Any) -> None:
    """Stands in for the seed's stem factory named in the pickle; never needed, never builds anything."""
    raise RuntimeError("the seed's cifar10_preprocess is not used: WoodsResNet builds its own stem")


SEED_GLOBALS = [(_cifar10_preprocess_stub, "__main__.cifar10_preprocess")]


def load_woods_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(state_dict, training_options)`` of a seed file, loaded on the CPU with weights_only=True."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist; check model.weights")
    try:
        with torch.serialization.safe_globals(SEED_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"could not load {path} as a Woods et al. ResNet-44 file with weights_only=True "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). It is corrupt, unsafe "
            f"(it names globals other than the seed's), or not one of the seed's prebuilt files "
            f"(resnet44-*.pt); our own checkpoints go to ckpt_path instead.") from err
    if not isinstance(data, dict) or "model_params" not in data or "training_options" not in data:
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not a Woods et al. file: expected a dict with 'model_params' and "
                              f"'training_options', found {keys}. Our own checkpoints go to ckpt_path instead.")
    options = data["training_options"]
    if not isinstance(options, dict) or "robust_additions" not in options:
        raise CheckpointError(f"{path}: training_options has no 'robust_additions' flag; not a seed file")
    return dict(data["model_params"]), options


def activation_of(options: dict[str, Any]) -> str:
    """The seed's rule: half-Huber ReLU exactly when the net was trained with robust additions."""
    return "half_huber" if options["robust_additions"] else "relu"


def load_woods_weights(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Copy a seed file's weights into ``model`` (a ``WoodsResNet``) with strict key checking.

    Raises :class:`CheckpointError` when the file's activation (``robust_additions``) differs from the
    model's or the keys/shapes do not match. Returns the file's ``training_options``.
    """
    state, options = load_woods_file(path)
    wanted = activation_of(options)
    have = getattr(model, "activation", None)
    if have is not None and have != wanted:
        raise CheckpointError(f"{path} was trained with robust_additions={options['robust_additions']} and "
                              f"needs model.activation={wanted}, but the model has activation={have}; "
                              f"set model.activation={wanted} or leave it null to infer it from the file")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, mis-shaped {mismatched[:5]}")
    model.load_state_dict(state, strict=True)
    return options


__all__ = ["activation_of", "load_woods_file", "load_woods_weights"]
