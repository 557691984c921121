"""CIFAR-10 from the python batches (offline, md5-checked, safe unpickling), with the seed's augmentation."""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustxai.data.base import TensorDataModule
from robustxai.data.cache import default_cache_dir
from robustxai.errors import DatasetError

FOLDER = "cifar-10-batches-py"
# torchvision's published md5 of every batch (torchvision.datasets.CIFAR10.train_list / test_list)
TRAIN_BATCHES = (("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                 ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                 ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                 ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                 ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"))
TEST_BATCHES = (("test_batch", "40351d587109b95175f43aff81a1287e"),)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only the three numpy globals a CIFAR batch needs; anything else is refused."""

    ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)


def _reconstruct() -> Any:
    """numpy's array-unpickling helper (``numpy.core`` was renamed ``numpy._core`` in numpy 2)."""
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def read_batch(path: Path, md5: str) -> tuple[Tensor, Tensor]:
    """One python batch as uint8 images ``(N, 3, 32, 32)`` and int64 labels, after an md5 check."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"could not read {path}: {err}") from err
    if hashlib.md5(raw).hexdigest() != md5:
        raise DatasetError(f"{path} is corrupt (its md5 is not {md5}); replace it with the official file "
                           f"(torchvision.datasets.CIFAR10(root, download=True) fetches it).")
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
    except Exception as err:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch ({type(err).__name__}: {err})") from err
    images = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)).view(-1, 3, 32, 32)
    return images.clone(), torch.tensor(list(labels), dtype=torch.int64)


def _download(root: Path) -> Path:
    """Fetch the official archive with torchvision into ``root`` (the cache); return the batch folder."""
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(root=str(root), train=True, download=True)
    except Exception as err:  # network errors come in many types
        raise DatasetError(f"downloading CIFAR-10 into {root} failed ({type(err).__name__}: {err})") from err
    return root / FOLDER


def load_cifar10(data_dir: Path, train: bool, download: bool, cache_dir: Path | None) -> tuple[Tensor, Tensor]:
    """The train (50,000) or test (10,000) split as uint8 ``(N, 3, 32, 32)`` images and labels.

    Reads ``<data_dir>/cifar-10-batches-py`` (the torchvision root layout; the seed's CIFAR10_PATH),
    then the cache; downloads into the cache only for a missing training split with ``download``.
    """
    files = TRAIN_BATCHES if train else TEST_BATCHES
    split = "training" if train else "test"
    candidates = [data_dir / FOLDER, (cache_dir or default_cache_dir()) / "torchvision" / FOLDER]
    folder = next((c for c in candidates if all((c / name).is_file() for name, _ in files)), None)
    if folder is None and download:
        folder = _download(candidates[1].parent)
    if folder is None:
        missing = [name for name, _ in files if not (candidates[0] / name).is_file()]
        hint = ("The offline copy in shared/data holds only test_batch, so it serves evaluation only. "
                "To train, put data_batch_1..5 (the official CIFAR-10 python version, "
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) into "
                f"{candidates[0]}, or allow data.download=true with network access.") if train else \
               "Set DATA_DIR to the directory that holds cifar-10-batches-py/ (the torchvision root)."
        raise DatasetError(f"the CIFAR-10 {split} split is not available: {', '.join(missing)} missing in "
                           f"{candidates[0]}. {hint}")
    parts = [read_batch(folder / name, md5) for name, md5 in files]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def augment_like_seed(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Edge-replicate pad by ``pad``, random crop back to the input size, random horizontal flip.

    Batched on the batch's device; offsets and flips come from ``generator`` (a CPU generator).
    The distribution equals the seed's per-image torchvision pipeline (flip then crop).
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)                      # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)                      # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


class CIFAR10DataModule(TensorDataModule):
    """CIFAR-10: 32x32 RGB in [0, 1]; training batches get the seed's augmentation on the device.

    ``augment`` (default on) applies :func:`augment_like_seed` to training batches only, seeded by
    ``shuffle_seed`` and the global step, so a resumed run augments its batches as the original did.
    Evaluation needs only ``test_batch``; training needs ``data_batch_1..5`` too.
    """

    num_classes = 10
    input_shape = (3, 32, 32)
    class_names = CLASS_NAMES

    def __init__(self, data_dir: str | Path = "data", batch_size: int = 128,
                 eval_batch_size: int | None = None, val_size: int = 0, test_subset: int | None = None,
                 download: bool = True, shuffle_seed: int = 0, cache_dir: str | Path | None = None,
                 augment: bool = True) -> None:
        super().__init__(data_dir=data_dir, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         val_size=val_size, test_subset=test_subset, download=download,
                         shuffle_seed=shuffle_seed, cache_dir=cache_dir)
        self.augment = augment

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        return load_cifar10(self.data_dir, train, self.download, self.cache_dir)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if not (self.augment and trainer is not None and trainer.training):
            return batch
        x, y = batch
        step = trainer.global_step * max(1, trainer.world_size) + trainer.global_rank
        generator = torch.Generator().manual_seed(self.shuffle_seed * 1_000_003 + step)
        return augment_like_seed(x, generator), y


__all__ = ["CLASS_NAMES", "CIFAR10DataModule", "augment_like_seed", "load_cifar10", "read_batch"]
