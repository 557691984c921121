"""Safe importer for Boopathy et al.'s released networks (seed 000): restricted unpickling, no code runs.

A file is a Python pickle of a list with one ``(W, b)`` tuple of float32 NumPy arrays per layer
(W in TF's HWIO layout; a max-pool layer holds a (k, k) NaN placeholder and a NaN scalar) and a
final ``(V,)``, the (1, 1, K, C) bias-free head. It is read with a :class:`pickle.Unpickler` whose
``find_class`` resolves only the NumPy names such arrays need; any other global (and so any
``__reduce__`` payload) is refused with a :class:`CheckpointError` before anything is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustxai.errors import CheckpointError
from robustxai.models.boopathy_architectures import ARCHITECTURES

try:  # NumPy >= 2 moved numpy.core to numpy._core; the pickles name the old path
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

# The only globals the released files name (the README of shared/models/boopathy-networks lists the
# first three; the three mnist_pool files also name ``scalar``, for their NaN bias placeholders).
# Neither can run code: they build arrays, dtypes and scalars from raw bytes.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
}
ALLOWED_GLOBALS.update({("numpy._core.multiarray", name): obj for (module, name), obj in list(ALLOWED_GLOBALS.items())
                        if module == "numpy.core.multiarray"})  # the same names as NumPy 2 writes them


class RefusedGlobal(CheckpointError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`; nothing of it was called."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves exactly :data:`ALLOWED_GLOBALS` and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"refused global {module}.{name}: only "
                                f"{', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS))} are allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal(f"refused persistent id {pid!r}: a network file holds plain arrays only")


def read_boopathy_file(path: str | Path) -> list[tuple[np.ndarray, ...]]:
    """The layer list of a released network file, unpickled with the NumPy-only allow-list and checked."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist; check model.weights")
    data = path.read_bytes()
    try:
        params = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as err:
        raise RefusedGlobal(f"{path} is not a safe Boopathy et al. network file: {err}. It was not loaded "
                            f"and none of its code ran") from None
    except Exception as err:
        raise CheckpointError(f"could not unpickle {path} as a Boopathy et al. network file "
                              f"({type(err).__name__}: {err}); expected one of the seed's networks/*.pkl") from err
    return _checked_layers(params, path)


def _checked_layers(params: Any, path: Path) -> list[tuple[np.ndarray, ...]]:
    """``params`` as a list of tuples of float32 arrays, or a CheckpointError saying what is wrong."""
    what = f"{path} is not a Boopathy et al. network file"
    if not isinstance(params, list) or len(params) < 2:
        raise CheckpointError(f"{what}: expected a list of (W, b) layer tuples and a final (V,), "
                              f"found {type(params).__name__} (PyTorch files go to ckpt_path, or to "
                              f"model=woods_resnet44 model.weights=... for Woods et al.'s)")
    layers = []
    for i, entry in enumerate(params):
        if not isinstance(entry, tuple) or not 1 <= len(entry) <= 2:
            raise CheckpointError(f"{what}: entry {i} is a {type(entry).__name__}, not a (W, b) or (V,) tuple")
        arrays = tuple(np.asarray(a) if isinstance(a, np.generic) else a for a in entry)
        for a in arrays:
            if not isinstance(a, np.ndarray) or a.dtype != np.float32:
                kind = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                raise CheckpointError(f"{what}: entry {i} holds {kind}, not float32 arrays")
        layers.append(arrays)
    if len(layers[-1]) != 1 or layers[-1][0].ndim != 4 or layers[-1][0].shape[:2] != (1, 1):
        raise CheckpointError(f"{what}: the last entry must be (V,) with V of shape (1, 1, K, C), found "
                              f"{[a.shape for a in layers[-1]]}")
    return layers


def _is_pool(entry: tuple[np.ndarray, ...]) -> bool:
    return len(entry) == 2 and entry[0].ndim == 2 and bool(np.isnan(entry[0]).all())


def describe_layers(params: list[tuple[np.ndarray, ...]]) -> list[str]:
    """A short description of each layer of a file, e.g. ``conv 4x4 1->16`` or ``pool 2x2``."""
    out = []
    for entry in params[:-1]:
        w = entry[0]
        out.append(f"pool {w.shape[0]}x{w.shape[1]}" if _is_pool(entry) else
                   f"conv {w.shape[0]}x{w.shape[1]} {w.shape[2]}->{w.shape[3]}" if w.ndim == 4 else f"? {w.shape}")
    return out + [f"head {params[-1][0].shape[2]}->{params[-1][0].shape[3]}"]


def _fits(params: list[tuple[np.ndarray, ...]], arch: str) -> bool:
    """True if the file's layer shapes are those of ``arch`` (any input channels and classes)."""
    specs = ARCHITECTURES[arch]
    if len(params) != len(specs) + 1:
        return False
    channels = None
    for spec, entry in zip(specs, params):
        w = entry[0]
        if spec.kind == "pool":
            if not _is_pool(entry) or w.shape != (spec.kernel, spec.kernel):
                return False
            continue
        if len(entry) != 2 or w.ndim != 4 or w.shape[:2] != (spec.kernel, spec.kernel) or w.shape[3] != spec.filters:
            return False
        if (channels is not None and w.shape[2] != channels) or entry[1].shape != (spec.filters,):
            return False
        channels = spec.filters
    return params[-1][0].shape[2] == channels


def infer_architecture(params: list[tuple[np.ndarray, ...]], path: str | Path = "<file>") -> tuple[str, int, int]:
    """``(arch, in_channels, num_classes)`` of a file's layer list, or a CheckpointError listing its layers."""
    for arch in ARCHITECTURES:
        if _fits(params, arch):
            return arch, int(params[0][0].shape[2]), int(params[-1][0].shape[3])
    raise CheckpointError(f"{path} holds none of the seed's architectures ({', '.join(ARCHITECTURES)}); its "
                          f"layers are {describe_layers(params)}")


def check_file_fits(params: list[tuple[np.ndarray, ...]], path: str | Path, arch: str | None,
                    in_channels: int | None, num_classes: int | None) -> tuple[str, int, int]:
    """The file's ``(arch, in_channels, num_classes)``; a CheckpointError naming the fix if a given one differs."""
    found, channels, classes = infer_architecture(params, path)
    if arch is not None and arch != found:
        raise CheckpointError(f"{path} holds a '{found}' network, not '{arch}': use model=boopathy_{found} "
                              f"(or model.arch={found}, or model.arch=null to infer it from the file)")
    for key, want, have in (("in_channels", in_channels, channels), ("num_classes", num_classes, classes)):
        if want is not None and want != have:
            raise CheckpointError(f"{path} has {key}={have} but the model was asked for {key}={want} (from the "
                                  f"data or model.{key}): pick the data set the network was trained on")
    return found, channels, classes


def boopathy_state_dict(params: list[tuple[np.ndarray, ...]], arch: str) -> dict[str, torch.Tensor]:
    """The file's arrays as a ``BoopathyNet`` state dict (HWIO -> OIHW; pool placeholders dropped)."""
    state = {}
    for i, (spec, entry) in enumerate(zip(ARCHITECTURES[arch], params)):
        if spec.kind != "pool":
            state[f"features.{i}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(entry[0].transpose(3, 2, 0, 1)))
            state[f"features.{i}.conv.bias"] = torch.from_numpy(np.ascontiguousarray(entry[1]))
    state["head.weight"] = torch.from_numpy(np.ascontiguousarray(params[-1][0].transpose(3, 2, 0, 1)))
    return state


def load_boopathy_params(model: nn.Module, params: list[tuple[np.ndarray, ...]], path: str | Path) -> None:
    """Copy a file's layer list into ``model`` with strict key and shape checks."""
    found, _, _ = check_file_fits(params, path, model.arch, model.in_channels, model.num_classes)
    state = boopathy_state_dict(params, found)
    own = model.state_dict()
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if set(own) != set(state) or mismatched:
        raise CheckpointError(f"{path} does not fit {model!r}: missing {sorted(set(own) - set(state))[:5]}, "
                              f"unexpected {sorted(set(state) - set(own))[:5]}, mis-shaped {mismatched[:5]}")
    model.load_state_dict(state, strict=True)


def load_boopathy_weights(model: nn.Module, path: str | Path) -> None:
    """Read ``path`` safely and copy its weights into ``model`` (which must have the file's architecture)."""
    load_boopathy_params(model, read_boopathy_file(path), path)


__all__ = ["ALLOWED_GLOBALS", "RefusedGlobal", "boopathy_state_dict", "check_file_fits", "describe_layers",
           "infer_architecture", "load_boopathy_params", "load_boopathy_weights",
           "read_boopathy_file"]
