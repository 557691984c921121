"""The order in which a loader serves a split: seeded per epoch, sharded by DDP rank, resumable mid-epoch.

Both loaders (:class:`~robustxai.data.base.TensorLoader` for tensors on the device and
:class:`~robustxai.data.streaming.StreamingLoader` for files read by workers) draw their epoch
order from :func:`epoch_order` and keep their position with :class:`EpochCursor`, so the two give
the same batches of positions for the same (seed, epoch, rank, world size).
"""

from __future__ import annotations

import torch
from torch import Tensor


def shard_length(n: int, rank: int = 0, world_size: int = 1, equal_shards: bool = False) -> int:
    """How many of ``n`` examples rank ``rank`` of ``world_size`` serves (equal shards drop the remainder)."""
    if world_size == 1:
        return n
    if equal_shards:
        return n // world_size
    return len(range(rank, n, world_size))


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                equal_shards: bool = False) -> Tensor:
    """Positions ``0..n-1`` in the order rank ``rank`` serves them in ``epoch`` (int64, CPU).

    Shuffling draws one permutation from ``seed + epoch``, so an epoch's order depends on nothing
    that ran before it. Under DDP each rank takes the strided shard ``rank::world_size`` of that
    order; ``equal_shards`` (training) cuts every shard to ``n // world_size`` so all ranks run the
    same number of steps, otherwise (evaluation) every example is served exactly once.
    """
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    else:
        order = torch.arange(n)
    if world_size > 1:
        shard = order[rank::world_size]
        order = shard[: n // world_size] if equal_shards else shard
    return order


class EpochCursor:
    """Which epoch a loader is serving and how many of its batches it has handed out (its resumable state).

    A loader calls :meth:`begin` when a pass starts (it returns the first batch to serve) and
    :meth:`served` after handing out each batch. ``state_dict``/``load_state_dict`` are what
    Lightning stores in a checkpoint, so a resumed run continues at the next unseen batch of the same
    epoch's order; the skip applies to the resumed pass only.
    """

    def __init__(self) -> None:
        self._epoch, self._served, self._resume_at = 0, 0, None

    def state_dict(self) -> dict[str, int]:
        """The epoch of the current pass and how many of its batches were handed out."""
        return {"epoch": self._epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass over ``state["epoch"]`` skip the batches already handed out."""
        self._resume_at = (int(state["epoch"]), int(state["batches"]))

    def begin(self, epoch: int) -> int:
        """Start a pass over ``epoch``; return the index of its first batch to serve (0 unless resuming)."""
        self._epoch, self._served = epoch, 0
        start = 0
        if self._resume_at is not None and self._resume_at[0] == epoch:
            start = self._resume_at[1]
            self._served = start
        self._resume_at = None
        return start

    def served(self, batch: int) -> None:
        """Record that batch ``batch`` (0-based) of the current pass was handed out."""
        self._served = batch + 1


__all__ = ["EpochCursor", "epoch_order", "shard_length"]
