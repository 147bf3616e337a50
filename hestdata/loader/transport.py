"""How batches travel from DataLoader workers to the training process.

Images are decoded straight into a ring of shared-memory batch buffers allocated once per worker (fresh shared
memory costs a page fault per 4 KiB — ~6 ms per 64-patch batch, as much as decoding half of it); small arrays
stay numpy and are pickled inline (cheaper than one shared segment each), becoming tensors in the loader.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUMERIC_KEYS = ("expression", "mask", "coords_um", "index", "marker_mask", "marker_ids", "label")


def as_tensors(batch: dict[str, Any]) -> dict[str, Any]:
    """Turn a batch's numpy arrays into tensors (no copy)."""
    import torch

    for k in NUMERIC_KEYS:
        if isinstance(batch.get(k), np.ndarray):
            batch[k] = torch.from_numpy(batch[k])
    return batch


class WorkerRing:
    """A ring of shared-memory uint8 batch buffers, created in the worker process that uses it.

    A slot is reused only ``ring`` batches later, and the loader copies each image batch out of its slot as soon
    as the DataLoader hands it over; PyTorch keeps at most ``prefetch_factor`` batches in flight per worker, so
    ``ring = prefetch_factor + 2`` slots never overlap.
    """

    def __init__(self) -> None:
        self._key: tuple[int, tuple[int, ...]] | None = None
        self._slots: list[Any] = []
        self._next = 0

    def __getstate__(self) -> dict[str, Any]:  # never ship buffers to another process
        return {"_key": None, "_slots": [], "_next": 0}

    def slot(self, n: int, shape: tuple[int, int, int], capacity: int, ring: int) -> Any:
        """A (n, *shape) uint8 view of the next buffer, or None when ``n`` exceeds the batch capacity."""
        import torch

        if n > capacity or ring <= 0:
            return None
        key = (capacity, tuple(shape))
        if self._key != key:
            self._slots = [torch.empty((capacity, *shape), dtype=torch.uint8).share_memory_() for _ in range(ring)]
            self._key, self._next = key, 0
        buf = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        return buf[:n]
