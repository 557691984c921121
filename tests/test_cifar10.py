"""CIFAR-10 data: offline md5-checked test split, safe unpickling, clear errors, the seed's augmentation."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustxai.data.cifar10 import (
    CLASS_NAMES,
    CIFAR10DataModule,
    _BatchUnpickler,
    augment_like_seed,
    load_cifar10,
    read_batch,
)
from robustxai.errors import DatasetError
from tests.conftest import shared_dataset


def test_offline_test_split_loads_with_the_known_statistics() -> None:
    root = shared_dataset("cifar-10-batches-py")
    x, y = load_cifar10(root, train=False, download=False, cache_dir=None)
    assert x.shape == (10_000, 3, 32, 32) and x.dtype == torch.uint8
    assert y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the seed's explain images: cat, ship, ...
    assert torch.allclose((x.float() / 255).mean((0, 2, 3)), torch.tensor([0.4942, 0.4851, 0.4504]), atol=1e-4)
    assert torch.bincount(y).tolist() == [1000] * 10
    assert CLASS_NAMES[3] == "cat" and len(CLASS_NAMES) == 10


def test_training_split_without_batches_is_a_clear_error(tmp_path: Path) -> None:
    root = shared_dataset("cifar-10-batches-py")
    with pytest.raises(DatasetError, match="data_batch_1.*download"):
        load_cifar10(root, train=True, download=False, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar10(tmp_path, train=False, download=False, cache_dir=tmp_path)


def test_corrupt_batch_is_refused_by_md5(tmp_path: Path) -> None:
    (tmp_path / "test_batch").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(DatasetError, match="md5"):
        read_batch(tmp_path / "test_batch", "40351d587109b95175f43aff81a1287e")


def test_unpickler_allows_only_numpy_array_globals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _BatchUnpickler(io.BytesIO(pickle.dumps({b"data": Payload()}, protocol=2)), encoding="bytes").load()
    assert not marker.exists()
    ok = {b"data": np.arange(6, dtype=np.uint8), b"labels": [1, 2]}
    loaded = _BatchUnpickler(io.BytesIO(pickle.dumps(ok, protocol=4)), encoding="bytes").load()
    assert np.array_equal(loaded[b"data"], ok[b"data"])


def _is_crop_of_padded(out: torch.Tensor, x: torch.Tensor, pad: int = 4) -> bool:
    padded = F.pad(x[None], (pad,) * 4, mode="replicate")[0]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + x.shape[1], dx:dx + x.shape[2]]
            if torch.equal(out, crop) or torch.equal(out, crop.flip(-1)):
                return True
    return False


def test_augmentation_is_a_flipped_crop_of_the_edge_padded_image_and_seeded() -> None:
    x = torch.rand(64, 3, 32, 32)
    out = augment_like_seed(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert all(_is_crop_of_padded(out[i], x[i]) for i in range(8))
    assert torch.equal(out, augment_like_seed(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment_like_seed(x, torch.Generator().manual_seed(1)))
    # constant image: edge padding keeps it constant (zero padding would not)
    flat = torch.full((16, 3, 32, 32), 0.7)
    assert torch.equal(augment_like_seed(flat, torch.Generator().manual_seed(0)), flat)
    # both flips and all 9 offsets occur
    ramp = torch.arange(32.0).expand(256, 3, 32, 32).contiguous()
    first = augment_like_seed(ramp, torch.Generator().manual_seed(0))[:, 0, 0, :]
    flipped = first[:, 0] > first[:, -1]
    assert 80 < int(flipped.sum()) < 176
    starts = torch.where(flipped, first[:, -1], first[:, 0])
    assert set(starts.long().tolist()) <= set(range(5)) and len(set(starts.long().tolist())) == 5


def test_datamodule_augments_training_batches_only() -> None:
    dm = CIFAR10DataModule(data_dir="unused", shuffle_seed=3)
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4)
    dm.trainer = SimpleNamespace(training=False, global_step=0, world_size=1, global_rank=0)  # type: ignore[assignment]
    assert dm.on_after_batch_transfer((x, y), 0)[0] is x
    dm.trainer = SimpleNamespace(training=True, global_step=5, world_size=1, global_rank=0)  # type: ignore[assignment]
    a = dm.on_after_batch_transfer((x, y), 0)[0]
    b = dm.on_after_batch_transfer((x, y), 0)[0]
    assert torch.equal(a, b) and not torch.equal(a, x)  # seeded by (shuffle_seed, step): resumable
    assert dm.num_classes == 10 and dm.input_shape == (3, 32, 32)
