"""Datasets too large for memory: a torchvision-style Dataset read from disk by DataLoader workers.

:class:`StreamingLoader` serves the same batches of positions as :class:`~robustxai.data.base.TensorLoader`
(one seeded order per epoch, DDP shards by rank, mid-epoch resume; both use :mod:`robustxai.data.order`),
but each batch is decoded from files by ``num_workers`` worker processes. Random per-example
transforms (crops, flips) draw from a generator seeded by (seed, epoch, example), never from a
global RNG, so a resumed run and a run with another number of workers see the same pixels.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from robustxai.data.base import DataModule
from robustxai.data.order import EpochCursor, epoch_order, shard_length
from robustxai.utils.validation import check_range

log = logging.getLogger(__name__)
Key = int | tuple[int, int]  # a dataset index, or (index, seed of its random transforms)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of example ``index``'s random transforms in ``epoch`` (independent of order, rank and workers)."""
    return ((seed * 1_000_003 + epoch) * 2_147_483_629 + index) % (2 ** 63)


class StreamingDataset(Dataset):
    """A torchvision-style dataset of ``(image, label)``: ``image`` uint8 ``(C, H, W)`` (or float in [0, 1]).

    ``dataset[i]`` is example ``i`` with its deterministic (evaluation) transform; ``dataset[(i, s)]``
    applies the random training transforms drawn from a generator seeded with ``s``. Subclasses
    implement :meth:`get`; every image of a dataset must have the same shape (batches are stacked).
    """

    @abstractmethod
    def __len__(self) -> int:
        """The number of examples."""

    @abstractmethod
    def get(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, int]:
        """Example ``index``; random transforms draw from ``generator``, none when it is None."""

    def __getitem__(self, key: Key) -> tuple[Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if not 0 <= index < len(self):
            raise IndexError(f"{type(self).__name__} index {index} is out of range (it has {len(self)} examples)")
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return self.get(index, generator)


def collate_unit_box(samples: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """Stack ``(image, label)`` samples into a float batch in [0, 1] and int64 labels (runs in the worker)."""
    images = torch.stack([image for image, _ in samples])
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    return images, torch.tensor([int(label) for _, label in samples], dtype=torch.int64)


def _init_worker(worker_id: int) -> None:
    """One thread per worker: the workers are the parallelism."""
    torch.set_num_threads(1)


class _PlannedBatches:
    """The batch sampler of the persistent DataLoader: the keys of the pass in progress, set before each pass."""

    def __init__(self) -> None:
        self.batches: list[list[Key]] = []

    def __iter__(self) -> Iterator[list[Key]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_dataloader(dataset: Dataset, batch_sampler: Any, num_workers: int, pin_memory: bool = False,
                    seed: int = 0, prefetch_factor: int = 2, persistent: bool = True) -> DataLoader:
    """A DataLoader over ``batch_sampler``'s keys with ``num_workers`` workers that never touches the global RNG."""
    multi = num_workers > 0
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate_unit_box,
                      pin_memory=pin_memory, worker_init_fn=_init_worker if multi else None,
                      prefetch_factor=prefetch_factor if multi else None,
                      persistent_workers=persistent and multi,
                      generator=torch.Generator().manual_seed(seed))  # worker base seeds come from here


class StreamingLoader(EpochCursor):
    """Iterates ``(x, y)`` batches of ``dataset[indices[p]]`` for the positions ``p`` of each epoch's order.

    The order is :func:`~robustxai.data.order.epoch_order` (as :class:`~robustxai.data.base.TensorLoader`):
    one permutation per epoch from ``seed + epoch`` when shuffling, the strided DDP shard of this rank,
    equal shards for training. Batches come back in order from ``num_workers`` persistent worker
    processes (0: decoded in this process), as float in [0, 1] on the CPU (pinned with ``pin_memory``).
    ``random_transforms`` gives each example the seed :func:`sample_seed` ``(seed, epoch, index)``.
    ``state_dict``/``load_state_dict`` resume a pass at its next unseen batch.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], batch_size: int, shuffle: bool = False,
                 seed: int = 0, epoch_fn: Callable[[], int] = lambda: 0, rank: int = 0, world_size: int = 1,
                 equal_shards: bool = False, num_workers: int = 0, pin_memory: bool = False,
                 random_transforms: bool = False, prefetch_factor: int = 2) -> None:
        super().__init__()
        check_range("batch_size", batch_size, low=1)
        check_range("num_workers", num_workers, low=0)
        check_range("prefetch_factor", prefetch_factor, low=1)
        self.dataset, self.indices = dataset, indices
        self.batch_size, self.shuffle = batch_size, shuffle
        self.seed, self.epoch_fn = seed, epoch_fn
        self.rank, self.world_size, self.equal_shards = rank, world_size, equal_shards
        self.num_workers, self.pin_memory, self.prefetch_factor = num_workers, pin_memory, prefetch_factor
        self.random_transforms = random_transforms
        self._plan = _PlannedBatches()
        self._dataloader: DataLoader | None = None  # created on the first pass; its workers persist

    def __len__(self) -> int:
        return -(-shard_length(len(self.indices), self.rank, self.world_size, self.equal_shards) // self.batch_size)

    def keys(self, epoch: int) -> list[Key]:
        """The dataset keys rank ``rank`` serves in ``epoch``, in order (before cutting into batches)."""
        order = epoch_order(len(self.indices), self.shuffle, self.seed, epoch, self.rank, self.world_size,
                            self.equal_shards).tolist()
        chosen = [int(self.indices[p]) for p in order]
        if self.random_transforms:
            return [(i, sample_seed(self.seed, epoch, i)) for i in chosen]
        return chosen

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch_fn()
        start = self.begin(epoch)
        keys, size = self.keys(epoch), self.batch_size
        self._plan.batches = [keys[b * size:(b + 1) * size] for b in range(start, len(self))]
        if not self._plan.batches:
            return
        if self._dataloader is None:
            self._dataloader = make_dataloader(self.dataset, self._plan, self.num_workers, self.pin_memory,
                                               self.seed, self.prefetch_factor)
        for batch, (x, y) in enumerate(self._dataloader, start=start):
            self.served(batch)
            yield x, y


class StreamingDataModule(DataModule):
    """Base for datasets read from disk while training: the same splits, seams and loaders' guarantees as
    :class:`~robustxai.data.base.TensorDataModule`, with examples decoded by DataLoader workers.

    Subclasses implement :meth:`dataset` (the whole train or test split as a :class:`StreamingDataset`);
    ``val`` is the first ``val_size`` examples of the training dataset and ``test`` the first
    ``test_subset`` of the test dataset, so give the datasets a fixed, class-mixed order. Training
    batches ask for random transforms when :attr:`random_train_transforms` is true; validation,
    test and :meth:`take` get the deterministic ones. Batches stay on the CPU (Lightning moves them).
    """

    random_train_transforms: bool = False

    def __init__(self, data_dir: str | Path = "data", batch_size: int = 128,
                 eval_batch_size: int | None = None, val_size: int = 0, test_subset: int | None = None,
                 download: bool = False, shuffle_seed: int = 0, cache_dir: str | Path | None = None,
                 num_workers: int = 4, prefetch_factor: int = 2) -> None:
        super().__init__(data_dir=data_dir, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         val_size=val_size, test_subset=test_subset, download=download,
                         shuffle_seed=shuffle_seed, cache_dir=cache_dir)
        check_range("num_workers", num_workers, low=0)
        check_range("prefetch_factor", prefetch_factor, low=1)
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.views: dict[str, tuple[StreamingDataset, range]] = {}

    @abstractmethod
    def dataset(self, train: bool) -> StreamingDataset:
        """The whole training split (``train``) or test split, in a fixed order."""

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and "train" not in self.views:
            dataset = self.dataset(train=True)
            v = self._train_val_bounds(len(dataset))
            self.views["val"] = (dataset, range(v))
            self.views["train"] = (dataset, range(v, len(dataset)))
        if stage in (None, "test") and "test" not in self.views:
            dataset = self.dataset(train=False)
            self.views["test"] = (dataset, range(self._test_length(len(dataset))))

    def _split_length(self, split: str) -> int:
        if split not in self.views:
            self.setup("test" if split == "test" else "fit")
        return len(self.views[split][1])

    def _fetch(self, split: str, index: Tensor) -> tuple[Tensor, Tensor]:
        dataset, positions = self.views[split]
        keys = [positions[p] for p in index.tolist()]
        if not keys:
            return torch.zeros((0, *self.input_shape)), torch.zeros(0, dtype=torch.int64)
        size = self.eval_batch_size
        batches = [keys[i:i + size] for i in range(0, len(keys), size)]
        workers = self.num_workers if len(keys) > size else 0  # a few images: no worker start-up
        parts = list(make_dataloader(dataset, batches, workers, seed=self.shuffle_seed, persistent=False))
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

    def _loader(self, split: str, train: bool) -> StreamingLoader:
        if split not in self.views:
            raise RuntimeError(f"the {split} split is not loaded: call setup() first")
        dataset, positions = self.views[split]
        return StreamingLoader(dataset, positions, **self._order_args(train), num_workers=self.num_workers,
                               pin_memory=self._device().type == "cuda", prefetch_factor=self.prefetch_factor,
                               random_transforms=train and self.random_train_transforms)


__all__ = ["StreamingDataModule", "StreamingDataset", "StreamingLoader", "collate_unit_box", "make_dataloader",
           "sample_seed"]
