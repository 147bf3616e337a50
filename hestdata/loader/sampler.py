"""Epoch plans: shard-aware shuffling, partitioning over DDP ranks and DataLoader workers, resumption.

An epoch's order is a pure function of ``(seed, epoch)``: the list of shards (sample, shard) is permuted, then
items are permuted within windows of ``window_shards`` consecutive shards — so a worker reads a few shards at a
time instead of seeking all over the store. The order is cut into blocks of ``batch_size`` items; rank ``r``
takes blocks ``r, r + world, …`` and worker ``w`` of that rank takes every ``num_workers``-th of the rank's
blocks. PyTorch's DataLoader returns worker outputs round-robin, so the rank sees its blocks in order, and
resuming after ``k`` consumed batches is: drop the first ``k`` blocks, deal the rest again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShardSpan:
    """Items ``[first, first + count)`` of the global item list live in one shard."""

    first: int
    count: int


def epoch_order(spans: list[ShardSpan], *, seed: int, epoch: int, shuffle: bool, window_shards: int = 4) -> np.ndarray:
    """Global item ids in this epoch's order (every item exactly once)."""
    if not spans:
        return np.zeros(0, dtype=np.int64)
    if not shuffle:
        return np.concatenate([np.arange(s.first, s.first + s.count) for s in spans]).astype(np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    perm = rng.permutation(len(spans))
    parts = []
    for w0 in range(0, len(perm), max(1, window_shards)):
        window = [spans[i] for i in perm[w0:w0 + window_shards]]
        ids = np.concatenate([np.arange(s.first, s.first + s.count) for s in window])
        parts.append(ids[rng.permutation(len(ids))])
    return np.concatenate(parts).astype(np.int64)


def rank_blocks(order: np.ndarray, *, batch_size: int, rank: int, world_size: int, drop_last: bool) -> list[np.ndarray]:
    """The blocks (future batches) of one rank, in the order that rank will see them.

    Without ``drop_last`` every item appears exactly once over all ranks (ranks may differ by one block). With
    ``drop_last`` incomplete blocks are dropped and every rank gets the same number of blocks (what DDP needs
    to avoid a hang on the last step).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    blocks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if drop_last:
        blocks = [b for b in blocks if len(b) == batch_size]
        blocks = blocks[: (len(blocks) // world_size) * world_size]
    return blocks[rank::world_size]


def deal(blocks: list[np.ndarray], num_workers: int, skip: int = 0) -> list[list[np.ndarray]]:
    """Worker assignments after skipping the first ``skip`` blocks (already consumed)."""
    rest = blocks[skip:]
    n = max(1, num_workers)
    return [rest[w::n] for w in range(n)]
