"""``make_loader``: a resumable, shard-aware, DDP-aware DataLoader over a :class:`PatchDataset`."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np

from hestdata.loader.dataset import BlockStream, PatchDataset, as_tensors
from hestdata.loader.sampler import epoch_order, rank_blocks


def _dist_defaults(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return (dist.get_rank() if rank is None else rank,
                    dist.get_world_size() if world_size is None else world_size)
    except ImportError:
        pass
    return (rank or 0), (world_size or 1)


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    """Batches are collated by the dataset already (module-level so workers can pickle it)."""
    return batch


class HestLoader:
    """Iterates batches of one rank for the current epoch; ``state_dict`` resumes mid-epoch exactly.

    Batches are dicts: ``image`` uint8 (B, 3, H, W) (on ``device`` when decoding on the GPU), ``expression``
    float32 (B, G), ``mask`` bool (B, G), ``sample_id``, ``obs_id`` (lists), ``coords_um`` (B, 2), ``index``
    (global item ids). After a full pass the epoch advances; ``set_epoch`` sets it explicitly.
    ``n_skipped`` counts items dropped with ``on_error="skip"``.
    """

    def __init__(self, dataset: PatchDataset, batch_size: int, num_workers: int, seed: int, shuffle: bool,
                 drop_last: bool, rank: int, world_size: int, window_shards: int = 4, device: Any = None,
                 pin_memory: bool = False, prefetch_factor: int | None = None) -> None:
        self.dataset, self.batch_size, self.num_workers = dataset, int(batch_size), int(num_workers)
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.rank, self.world_size, self.window_shards = int(rank), int(world_size), int(window_shards)
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self.device = device
        if dataset.decode == "gpu" and device is None:
            import torch

            self.device = torch.device("cuda", torch.cuda.current_device())
        self.epoch = 0
        self._consumed = 0
        self.n_skipped = 0
        self._dl: Any = None
        self._state: Any = None
        self._blocks(0)  # validate arguments now

    def transform_is_none(self) -> bool:
        """Ring buffers hold raw decoded batches only (a transform makes a new tensor anyway)."""
        return self.dataset.transform is None

    def _blocks(self, epoch: int) -> list[np.ndarray]:
        order = epoch_order(self.dataset.spans, seed=self.seed, epoch=epoch, shuffle=self.shuffle,
                            window_shards=self.window_shards)
        return rank_blocks(order, batch_size=self.batch_size, rank=self.rank, world_size=self.world_size,
                           drop_last=self.drop_last)

    def __len__(self) -> int:
        """Batches this rank yields in a full epoch (fewer if ``on_error='skip'`` empties a batch)."""
        return len(self._blocks(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning."""
        self.epoch, self._consumed = int(epoch), 0

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream: epoch, batches consumed in it, and what the order depends on."""
        return {"epoch": self.epoch, "consumed": self._consumed, "seed": self.seed, "shuffle": self.shuffle,
                "batch_size": self.batch_size, "rank": self.rank, "world_size": self.world_size,
                "drop_last": self.drop_last, "window_shards": self.window_shards, "n_items": len(self.dataset)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where ``state`` was taken; the dataset and partitioning must be the same."""
        for k in ("seed", "shuffle", "batch_size", "rank", "world_size", "drop_last", "window_shards", "n_items"):
            mine = len(self.dataset) if k == "n_items" else getattr(self, k)
            if state.get(k) != mine:
                raise ValueError(f"cannot resume: {k} was {state.get(k)!r}, is {mine!r}")
        self.epoch, self._consumed = int(state["epoch"]), int(state["consumed"])

    def _dataloader(self) -> Any:
        """One DataLoader for the loader's life; workers persist across epochs and read the plan's position
        (epoch, consumed) from a shared tensor, so their caches (shard indices, expression) survive."""
        if self._dl is None:
            import torch
            from torch.utils.data import DataLoader

            ds = copy.copy(self.dataset)
            prefetch = self.prefetch_factor or 2
            ds._plan = {"seed": self.seed, "shuffle": self.shuffle, "window_shards": self.window_shards,
                        "batch_size": self.batch_size, "rank": self.rank, "world_size": self.world_size,
                        "drop_last": self.drop_last,
                        "ring": prefetch + 2 if self.num_workers > 0 and self.transform_is_none() else 0}
            ds._plan_state = torch.zeros(2, dtype=torch.int64).share_memory_()
            kw: dict[str, Any] = {}
            if self.num_workers > 0:
                kw["persistent_workers"] = True
                kw["prefetch_factor"] = prefetch
            self._state = ds._plan_state
            self._dl = DataLoader(BlockStream(ds), batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                                  collate_fn=_as_is, **kw)
        return self._dl

    def __iter__(self) -> Iterator[dict[str, Any]]:
        dl = self._dataloader()
        self._state[0], self._state[1] = self.epoch, self._consumed
        for batch in dl:
            if batch.pop("_ring", False) and not self.pin_memory:
                batch["image"] = batch["image"].clone()  # leave the worker's ring slot at once (see dataset)
            as_tensors(batch)
            self._consumed += 1
            self.n_skipped += int(batch.pop("n_skipped", 0))
            if "jpeg" in batch and self.dataset.decode == "gpu":
                batch = self._gpu_decode(batch)
            if len(batch["index"]):
                yield batch
        self.epoch += 1
        self._consumed = 0

    def _gpu_decode(self, batch: dict[str, Any]) -> dict[str, Any]:
        from hestdata.loader.decode import decode_gpu

        where = [f"sample {s} obs {o}" for s, o in zip(batch["sample_id"], batch["obs_id"], strict=True)]
        shape_hw = tuple(self.dataset.samples[0].reader.info.patch_shape[:2]) if self.dataset.samples else None
        images, kept = decode_gpu(batch.pop("jpeg"), self.device, where, self.dataset.on_error, shape_hw)
        if len(kept) != len(where):
            self.n_skipped += len(where) - len(kept)
            idx = list(kept)
            for k in ("expression", "mask", "coords_um", "index", "label"):
                if k in batch:
                    batch[k] = batch[k][idx]
            batch["sample_id"] = [batch["sample_id"][i] for i in idx]
            batch["obs_id"] = [batch["obs_id"][i] for i in idx]
        tf = self.dataset.transform
        batch["image"] = tf(images) if tf is not None else images
        return batch


def make_loader(dataset: PatchDataset, batch_size: int, num_workers: int = 0, seed: int = 0, shuffle: bool = True,
                drop_last: bool = False, rank: int | None = None, world_size: int | None = None, *,
                window_shards: int = 4, device: Any = None, pin_memory: bool = False,
                prefetch_factor: int | None = None) -> HestLoader:
    """A loader over ``dataset``: shard-aware shuffling deterministic in ``(seed, epoch)``, items partitioned
    across DataLoader workers and DDP ranks (``torch.distributed`` when initialised, or ``rank``/``world_size``)
    with every item exactly once per epoch, and exact mid-epoch resumption through ``state_dict``."""
    r, w = _dist_defaults(rank, world_size)
    return HestLoader(dataset, batch_size, num_workers, seed, shuffle, drop_last, r, w, window_shards, device,
                      pin_memory, prefetch_factor)
