"""Slide mode: one item per slide — its bag (or grid) of patch features, or its patches — with its slide-level
profile and label, for models that learn at slide level (Threads, TITAN, MIL).

Items are dicts: ``sample_id``, ``patient``, ``features`` float32 (N, D) (a bag) or (rows, cols, D) with
``grid_mask`` (rows, cols) (a feature grid), or ``image`` uint8 (N, 3, H, W) (patch mode, decoded on the CPU);
``coords_um`` (N, 2) patch centres (bags; grids carry their positions in their indices); ``profile`` float32 (G,)
log1p counts per 10,000 on the genes every slide of the dataset shares (``genes``), when the slides have one;
``label`` when labels are given.

The unit of shuffling and of distribution is the slide (a slide's patches live in its own shards, so reading
a slide touches only its shards): each epoch is a seeded permutation of the slides, split across DDP ranks
round-robin (padded by wrapping, as ``DistributedSampler`` does, unless ``drop_last``), and ``state_dict`` /
``load_state_dict`` resume mid-epoch exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from hestdata.units import DEFAULT_PATCH


class SlideDataset:
    """Slides of a root (a catalog ``query`` selects them) with their features or patches, profile and label.

    ``features``: sample id → (N, D) array in patch order, or an object with ``features`` and ``mask``
    (a feature grid, e.g. :class:`hestdata.bench.grid.FeatureGrid`); only those slides are served. Without it
    the slide's ``patch`` array is served as images. ``labels``: sample id → label, or a catalog column name.
    """

    def __init__(self, root: str | os.PathLike[str] | Any, *, features: Mapping[str, Any] | None = None,
                 query: Any = None, patch: str = DEFAULT_PATCH.name, labels: Mapping[str, Any] | str | None = None,
                 profiles: bool = True, storage_options: dict[str, Any] | None = None) -> None:
        from hestdata.store.root import Root

        self.patch, self.features = patch, features
        r = Root.open(root, storage_options)
        self.root = r.select(query) if query is not None else r
        samples = [s for s in self.root.samples()
                   if (s.id in features if features is not None else patch in s.patch_arrays())]
        if not samples:
            raise ValueError(f"{r.url}: no slide matches the query (with features or the {patch} patch array)")
        self._samples = {s.id: s for s in samples}
        ids = list(self._samples)
        self.sample_ids = ids
        self.patients = [str((s.row or {}).get("patient") or s.id) for s in samples]
        if isinstance(labels, str):
            meta = {s.id: s.attrs for s in samples}
            self.labels: dict[str, Any] | None = {i: meta[i].get(labels, meta[i].get("alterations", {}).get(labels))
                                                  for i in ids}
        else:
            self.labels = dict(labels) if labels is not None else None
        self.profile_matrix, self.genes = self._profiles() if profiles else (None, [])

    def _profiles(self) -> tuple[np.ndarray | None, list[str]]:
        from hestdata.curation.profiles import normalise_profiles
        from hestdata.errors import InputError
        from hestdata.store.profiles import aligned_profiles

        try:
            raw, genes = aligned_profiles(self.root, self.sample_ids)
        except InputError:
            return None, []
        return normalise_profiles(raw).astype(np.float32), genes

    def __len__(self) -> int:
        return len(self.sample_ids)

    def _patch_group(self, sid: str) -> Any:
        return self._samples[sid].patch_group(self.patch)

    def item(self, i: int) -> dict[str, Any]:
        """The i-th slide's item (see the module docstring)."""
        from hestdata.store import layout as L

        sid = self.sample_ids[i]
        out: dict[str, Any] = {"sample_id": sid, "patient": self.patients[i]}
        f = self.features[sid] if self.features is not None else None
        if f is not None and hasattr(f, "mask"):
            out["features"], out["grid_mask"] = np.asarray(f.features, np.float32), np.asarray(f.mask, bool)
        else:
            g = self._patch_group(sid) if (f is None or self.patch) else None
            if g is not None:
                out["coords_um"] = np.asarray(g[L.PATCH_CENTERS][:], np.float64)
            if f is not None:
                out["features"] = np.asarray(f, np.float32)
                if "coords_um" in out and len(out["coords_um"]) != len(out["features"]):
                    raise ValueError(f"{sid}: {len(out['features'])} feature rows for {len(out['coords_um'])} patches")
            else:
                out["image"] = np.moveaxis(np.asarray(g[L.PATCH_IMAGES][:]), -1, 1)
        if self.profile_matrix is not None:
            out["profile"] = self.profile_matrix[i]
        if self.labels is not None:
            out["label"] = self.labels.get(sid)
        return out


class SlideLoader:
    """Iterates one rank's slides for the current epoch (see the module docstring); resumable mid-epoch."""

    def __init__(self, dataset: SlideDataset, *, seed: int = 0, shuffle: bool = True, rank: int | None = None,
                 world_size: int | None = None, drop_last: bool = False) -> None:
        from hestdata.loader.loader import _dist_defaults

        self.dataset, self.seed, self.shuffle, self.drop_last = dataset, int(seed), bool(shuffle), bool(drop_last)
        self.rank, self.world_size = _dist_defaults(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        self.epoch = 0
        self._consumed = 0

    def order(self, epoch: int) -> np.ndarray:
        """This rank's slide indices for ``epoch``."""
        n = len(self.dataset)
        perm = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        if self.drop_last:
            perm = perm[: n - n % self.world_size]
        else:
            per = -(-n // self.world_size)
            perm = np.resize(perm, per * self.world_size)  # wrap: every rank gets the same count
        return perm[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(self.order(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._consumed = int(epoch), 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self._consumed, "seed": self.seed, "shuffle": self.shuffle,
                "rank": self.rank, "world_size": self.world_size, "drop_last": self.drop_last,
                "slides": list(self.dataset.sample_ids)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("seed", "shuffle", "rank", "world_size", "drop_last"):
            if state.get(k) != getattr(self, k):
                raise ValueError(f"cannot resume: {k} was {state.get(k)!r}, is {getattr(self, k)!r}")
        if state.get("slides") != list(self.dataset.sample_ids):
            raise ValueError("cannot resume: the dataset's slides differ from the saved state's")
        self.epoch, self._consumed = int(state["epoch"]), int(state["consumed"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self.order(self.epoch)
        while self._consumed < len(order):
            item = self.dataset.item(int(order[self._consumed]))
            self._consumed += 1
            yield item
        self.epoch += 1
        self._consumed = 0
