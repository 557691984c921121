"""The layer lists of Boopathy et al.'s generic GAP network (seed 000 spec 1.1): ``small``, ``pool``, ``wresnet``.

Plain data, shared by the network (:mod:`robustxai.models.boopathy`) and the importer of the released
files (:mod:`robustxai.models.importers.boopathy`), which must recognise an architecture from a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Arch = Literal["small", "pool", "wresnet"]


@dataclass(frozen=True)
class LayerSpec:
    """One entry of the seed's lists: ``kind`` is 'conv', 'pool' or 'residual'."""

    kind: Literal["conv", "pool", "residual"]
    filters: int  # output channels (0 for a pool)
    kernel: int
    stride: int


def _layers(filters: list, kernels: list[int], strides: list) -> tuple[LayerSpec, ...]:
    """Translate the seed's ``network_utils`` lists into :class:`LayerSpec` entries."""
    specs = []
    for f, k, s in zip(filters, kernels, strides, strict=True):
        if f == "pool":
            specs.append(LayerSpec("pool", 0, k, s))
        elif isinstance(s, str):
            specs.append(LayerSpec("residual", f, k, int(s[1:])))
        else:
            specs.append(LayerSpec("conv", f, k, s))
    return tuple(specs)


ARCHITECTURES: dict[str, tuple[LayerSpec, ...]] = {
    "small": _layers([16, 32, 100], [4, 4, 7], [2, 2, 1]),
    "pool": _layers([32, "pool", 64, "pool"], [5, 2, 5, 2], [1, 2, 1, 2]),
    "wresnet": _layers([16] + 10 * [16] + 10 * [32] + 10 * [64], 31 * [3],
                       [1] + 5 * [1, "r1"] + [2, "r1"] + 4 * [1, "r1"] + [2, "r1"] + 4 * [1, "r1"]),
}


__all__ = ["ARCHITECTURES", "Arch", "LayerSpec"]
