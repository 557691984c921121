"""The shared DataModule base (seams: ``take``, ``model_kwargs``) and small datasets held as one tensor on the device."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from robustxai.data.cache import default_cache_dir
from robustxai.data.order import EpochCursor, epoch_order, shard_length
from robustxai.errors import ConfigError
from robustxai.utils.validation import check_range

SPLITS = ("train", "val", "test")


def to_unit_box(images: Tensor) -> Tensor:
    """uint8 images as float in [0, 1]; float images unchanged."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


class TensorLoader(EpochCursor):
    """Iterates ``(x, y)`` batches as index slices of tensors that already live on the device.

    Shuffling draws one permutation per epoch from ``seed + epoch``, so an epoch's batches do not
    depend on what ran before it (a resumed run sees the same batches). Under DDP each rank takes
    the strided shard ``rank::world_size``; training shards are cut to equal length so every rank
    runs the same number of steps, evaluation shards keep every example exactly once. The loader is
    stateful (``state_dict``/``load_state_dict``), so Lightning resumes a mid-epoch checkpoint at the
    next unseen batch of the same permutation. The order comes from :func:`~robustxai.data.order.epoch_order`.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, epoch_fn: Callable[[], int] = lambda: 0,
                 rank: int = 0, world_size: int = 1, equal_shards: bool = False) -> None:
        super().__init__()
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.seed, self.epoch_fn = seed, epoch_fn
        self.rank, self.world_size, self.equal_shards = rank, world_size, equal_shards

    def _indices(self, epoch: int) -> Tensor:
        order = epoch_order(len(self.labels), self.shuffle, self.seed, epoch, self.rank, self.world_size,
                            self.equal_shards)
        return order.to(self.labels.device)

    def __len__(self) -> int:
        return -(-shard_length(len(self.labels), self.rank, self.world_size, self.equal_shards) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch_fn()
        start = self.begin(epoch)
        order = self._indices(epoch)
        for batch in range(start, len(self)):
            self.served(batch)
            idx = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            yield to_unit_box(self.images[idx]), self.labels[idx]


class DataModule(L.LightningDataModule):
    """What every data module shares, in memory or streamed: arguments, splits, ``take``, ``model_kwargs``.

    The splits are ``train``, ``val`` (the first ``val_size`` examples of the training split, as
    the RAR code does) and ``test`` (only the first ``test_subset`` examples when set). Subclasses
    say how a split is sized (:meth:`_split_length`), fetched (:meth:`_fetch`) and served (:meth:`_loader`).
    """

    num_classes: int
    input_shape: tuple[int, ...]
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

    # -- seams used by models, callbacks and tasks ------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        """The model constructor arguments the data implies (``build_model`` passes those a model takes).

        Images ``(C, H, W)``: ``in_channels``, ``num_classes`` and ``input_size`` (``H``, or ``(H, W)``
        when not square); flat features ``(D,)``: ``in_features`` and ``num_classes``. Needs no data.
        """
        shape = tuple(self.input_shape)
        if len(shape) == 3:
            channels, height, width = shape
            return {"in_channels": channels, "num_classes": self.num_classes,
                    "input_size": height if height == width else (height, width)}
        if len(shape) == 1:
            return {"in_features": shape[0], "num_classes": self.num_classes}
        raise ValueError(f"{type(self).__name__}.input_shape={shape} is neither (C, H, W) nor (D,); "
                         f"override model_kwargs() to say which model arguments the data implies")

    def split_size(self, split: str) -> int:
        """The number of examples in ``split`` (``train``, ``val`` or ``test``), loading it if needed."""
        self._check_split(split)
        return self._split_length(split)

    def take(self, split: str, indices: Tensor | Sequence[int] | range | int) -> tuple[Tensor, Tensor]:
        """The given examples of ``split``: images as float in [0, 1] and int64 labels, in the order asked.

        Loads the split if needed; indices count within the split (after ``val_size``/``test_subset``).
        Tensors stay where the split lives (the device for in-memory data, the CPU for streamed data).
        """
        index = self._as_index(indices)
        size = self.split_size(split)
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= size):
            bad = int(index.min()) if int(index.min()) < 0 else int(index.max())
            raise ValueError(f"take({split!r}, ...): index {bad} is out of range; the {split} split has "
                             f"{size} examples (indices 0..{size - 1})")
        images, labels = self._fetch(split, index)
        return to_unit_box(images), labels

    @staticmethod
    def _check_split(split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: choose one of {', '.join(map(repr, SPLITS))}")

    @staticmethod
    def _as_index(indices: Tensor | Iterable[int] | int) -> Tensor:
        """Indices as a 1-D int64 CPU tensor (an int gives one index); non-integer indices are refused."""
        if isinstance(indices, Tensor):
            if indices.dtype.is_floating_point or indices.dtype == torch.bool or indices.is_complex():
                raise ValueError(f"take() needs integer indices, got a {indices.dtype} tensor")
            return indices.detach().to("cpu", torch.int64).reshape(-1)
        values = [indices] if isinstance(indices, int) else list(indices)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"take() needs integer indices, got {values[:5]}")
        return torch.tensor(values, dtype=torch.int64)

    # -- what subclasses supply ---------------------------------------------------------------------
    @abstractmethod
    def _split_length(self, split: str) -> int:
        """The size of a (valid) split, loading it if needed."""

    @abstractmethod
    def _fetch(self, split: str, index: Tensor) -> tuple[Tensor, Tensor]:
        """The examples at the (checked) positions ``index`` of ``split``: images (uint8 or float) and labels."""

    @abstractmethod
    def _loader(self, split: str, train: bool) -> Iterable:
        """The loader of a split (shuffled, equally sharded batches when ``train``)."""

    # -- shared helpers ----------------------------------------------------------------------------
    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _train_val_bounds(self, n_train: int) -> int:
        """Check that ``val_size`` leaves training examples; return where the training examples start."""
        if self.val_size >= n_train:
            raise ConfigError(f"data.val_size={self.val_size} leaves no training images "
                             f"(the training split has {n_train}); lower data.val_size")
        return self.val_size

    def _test_length(self, n_test: int) -> int:
        """How many test examples are used (``test_subset`` keeps the first ones)."""
        return n_test if self.test_subset is None else min(n_test, self.test_subset)

    def _order_args(self, train: bool) -> dict[str, Any]:
        """Batch size, shuffling, seed, epoch source and DDP shard of a split's loader, from the trainer."""
        trainer = getattr(self, "trainer", None)
        return dict(batch_size=self.batch_size if train else self.eval_batch_size,
                    shuffle=train, seed=self.shuffle_seed,
                    epoch_fn=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
                    rank=trainer.global_rank if trainer is not None else 0,
                    world_size=trainer.world_size if trainer is not None else 1,
                    equal_shards=train)

    # -- Lightning hooks ---------------------------------------------------------------------------
    def train_dataloader(self) -> Iterable:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Iterable | list:
        if self.val_size == 0:
            return []
        return self._loader("val", train=False)

    def test_dataloader(self) -> Iterable:
        return self._loader("test", train=False)


class TensorDataModule(DataModule):
    """Base for datasets small enough to keep whole on the device.

    Subclasses implement :meth:`load` and return the train or test split as CPU tensors
    (images ``(N, C, H, W)``, float in [0, 1] or uint8; labels ``(N,)`` int64). The validation
    set is carved from the training split: the first ``val_size`` images, as the RAR code does.
    ``test_subset`` keeps only the first N test images (fast evaluation). ``splits`` holds the
    loaded splits; new code reads examples with :meth:`take`.
    """

    input_shape: tuple[int, int, int]

    def __init__(self, data_dir: str | Path = "data", batch_size: int = 128,
                 eval_batch_size: int | None = None, val_size: int = 0, test_subset: int | None = None,
                 download: bool = True, shuffle_seed: int = 0, cache_dir: str | Path | None = None) -> None:
        super().__init__(data_dir=data_dir, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         val_size=val_size, test_subset=test_subset, download=download,
                         shuffle_seed=shuffle_seed, cache_dir=cache_dir)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    @abstractmethod
    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        """Return the (images, labels) of the train or test split as CPU tensors."""

    def setup(self, stage: str | None = None) -> None:
        device = self._device()
        if stage in (None, "fit", "validate") and "train" not in self.splits:
            images, labels = self.load(train=True)
            v = self._train_val_bounds(len(labels))
            self.splits["val"] = (images[:v].to(device), labels[:v].to(device))
            self.splits["train"] = (images[v:].to(device), labels[v:].to(device))
        if stage in (None, "test") and "test" not in self.splits:
            images, labels = self.load(train=False)
            n = self._test_length(len(labels))
            self.splits["test"] = (images[:n].to(device), labels[:n].to(device))

    def _split_length(self, split: str) -> int:
        if split not in self.splits:
            self.setup("test" if split == "test" else "fit")
        return len(self.splits[split][1])

    def _fetch(self, split: str, index: Tensor) -> tuple[Tensor, Tensor]:
        images, labels = self.splits[split]
        index = index.to(labels.device)
        return images[index], labels[index]

    def _loader(self, split: str, train: bool) -> TensorLoader:
        if split not in self.splits:
            raise RuntimeError(f"the {split} split is not loaded: call setup() first")
        images, labels = self.splits[split]
        return TensorLoader(images, labels, **self._order_args(train))

    def train_dataloader(self) -> TensorLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorLoader | list:
        if self.val_size == 0:
            return []
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorLoader:
        return self._loader("test", train=False)


__all__ = ["SPLITS", "DataModule", "TensorDataModule", "TensorLoader", "to_unit_box"]
