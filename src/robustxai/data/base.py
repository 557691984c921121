"""Small datasets held as one tensor on the device, served as index-slice batches."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Callable, Iterator

import lightning as L
import torch
from torch import Tensor

from robustxai.attacks.base import check_range
from robustxai.data.cache import default_cache_dir


class TensorLoader:
    """Iterates ``(x, y)`` batches as index slices of tensors that already live on the device.

    Shuffling draws one permutation per epoch from ``seed + epoch``, so an epoch's batches do not
    depend on what ran before it (a resumed run sees the same batches). Under DDP each rank takes
    the strided shard ``rank::world_size``; training shards are cut to equal length so every rank
    runs the same number of steps, evaluation shards keep every example exactly once. The loader is
    stateful (``state_dict``/``load_state_dict``), so Lightning resumes a mid-epoch checkpoint at the
    next unseen batch of the same permutation.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, epoch_fn: Callable[[], int] = lambda: 0,
                 rank: int = 0, world_size: int = 1, equal_shards: bool = False) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.seed, self.epoch_fn = seed, epoch_fn
        self.rank, self.world_size, self.equal_shards = rank, world_size, equal_shards
        self._epoch, self._served, self._resume_at = 0, 0, None

    def state_dict(self) -> dict[str, int]:
        """The epoch of the current pass and how many of its batches were handed out."""
        return {"epoch": self._epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass over ``state["epoch"]`` skip the batches already handed out."""
        self._resume_at = (int(state["epoch"]), int(state["batches"]))

    def _indices(self, epoch: int) -> Tensor:
        n = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            shard = order[self.rank::self.world_size]
            order = shard[: n // self.world_size] if self.equal_shards else shard
        return order.to(self.labels.device)

    def _shard_size(self) -> int:
        n = len(self.labels)
        if self.world_size == 1:
            return n
        if self.equal_shards:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        return -(-self._shard_size() // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self._epoch = self.epoch_fn()
        start = 0
        if self._resume_at is not None and self._resume_at[0] == self._epoch:
            start = self._resume_at[1]
        self._resume_at = None
        order = self._indices(self._epoch)
        for batch in range(start, len(self)):
            self._served = batch + 1
            idx = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            x = self.images[idx]
            if x.dtype == torch.uint8:
                x = x.float().div_(255.0)
            yield x, self.labels[idx]


class TensorDataModule(L.LightningDataModule):
    """Base for datasets small enough to keep whole on the device.

    Subclasses implement :meth:`load` and return the train or test split as CPU tensors
    (images ``(N, C, H, W)``, float in [0, 1] or uint8; labels ``(N,)`` int64). The validation
    set is carved from the training split: the first ``val_size`` images, as the RAR code does.
    ``test_subset`` keeps only the first N test images (fast evaluation).
    """

    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...] = ()

    def __init__(self, data_dir: str | Path = "data", batch_size: int = 128,
                 eval_batch_size: int | None = None, val_size: int = 0, test_subset: int | None = None,
                 download: bool = True, shuffle_seed: int = 0, cache_dir: str | Path | None = None) -> None:
        super().__init__()
        check_range("batch_size", batch_size, low=1)
        check_range("val_size", val_size, low=0)
        if eval_batch_size is not None:
            check_range("eval_batch_size", eval_batch_size, low=1)
        if test_subset is not None:
            check_range("test_subset", test_subset, low=1)
        self.data_dir = Path(data_dir).expanduser().resolve()
        # where derived files go (never into data_dir): the given folder, else $ROBUSTXAI_CACHE or ~/.cache/robustxai
        self.cache_dir = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_size = val_size
        self.test_subset = test_subset
        self.download = download
        self.shuffle_seed = shuffle_seed
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    @abstractmethod
    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        """Return the (images, labels) of the train or test split as CPU tensors."""

    # -- Lightning hooks --------------------------------------------------------------------------
    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        device = self._device()
        if stage in (None, "fit", "validate") and "train" not in self.splits:
            images, labels = self.load(train=True)
            if self.val_size >= len(labels):
                raise ValueError(f"val_size={self.val_size} leaves no training images "
                                 f"(the training split has {len(labels)}); lower data.val_size")
            v = self.val_size
            self.splits["val"] = (images[:v].to(device), labels[:v].to(device))
            self.splits["train"] = (images[v:].to(device), labels[v:].to(device))
        if stage in (None, "test") and "test" not in self.splits:
            images, labels = self.load(train=False)
            if self.test_subset is not None:
                images, labels = images[: self.test_subset], labels[: self.test_subset]
            self.splits["test"] = (images.to(device), labels.to(device))

    def _loader(self, split: str, train: bool) -> TensorLoader:
        if split not in self.splits:
            raise RuntimeError(f"the {split} split is not loaded: call setup() first")
        trainer = getattr(self, "trainer", None)
        images, labels = self.splits[split]
        return TensorLoader(
            images, labels,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train, seed=self.shuffle_seed,
            epoch_fn=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            equal_shards=train,
        )

    def train_dataloader(self) -> TensorLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorLoader | list:
        if self.val_size == 0:
            return []
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorLoader:
        return self._loader("test", train=False)
