"""``PatchDataset``: expression–morphology pairs streamed from a local or remote hestdata root.

Each item is an image patch (decoded in the worker, or left as JPEG bytes for one batched GPU decode) with the
expression vector of its spot over a requested gene list. The dataset is a map-style torch ``Dataset``
(``len``, ``dataset[i]`` → one item): a stock ``DataLoader(ds, batch_size=…, num_workers=…, shuffle=…)`` or
``sampler=DistributedSampler(ds)`` works with the default collate. The fast path is :func:`hestdata.make_loader`:
it streams *blocks* (:class:`BlockStream`, an ``IterableDataset``) planned shard by shard (see ``sampler``), each
worker reading a block's patches with coalesced byte-range reads of the shard files (``store.patches``), never
through zarr-python's per-chunk indexing, into reused ring buffers.

The pieces live beside it: which samples (``sources``), per-sample state (``samples``), expression targets
(``targets``), RGB vs multiplex images (``modality``), and the shared-memory transport (``transport``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from hestdata.errors import HestdataError, IntegrityError, StoreError
from hestdata.loader import modality
from hestdata.loader.sampler import ShardSpan
from hestdata.loader.samples import LoadedSample
from hestdata.loader.targets import TARGETS, gene_list
from hestdata.loader.transport import WorkerRing, as_tensors
from hestdata.units import DEFAULT_PATCH

try:
    from torch.utils.data import Dataset as _Base
    from torch.utils.data import IterableDataset as _Stream
except ImportError:  # pragma: no cover - torch is a dependency; keep the store usable without it
    _Base = _Stream = object  # type: ignore[assignment,misc]

DECODES = ("auto", "cpu", "gpu", "none")
__all__ = ["DECODES", "BlockStream", "PatchDataset", "as_tensors"]


class PatchDataset(_Base):  # type: ignore[misc,valid-type]
    """Expression–morphology pairs of one sample, a root, or a catalog query.

    Args:
        source: a root (a :class:`hestdata.Root`, or its path or fsspec URL: ``s3://``, ``https://`` …) or a
            ``samples/<id>.zarr`` folder. Samples without the patch array are skipped (``skipped_samples``).
        query: a condition on the root's catalog (polars expression or query text, hestdata.store.query, e.g. ``"organ = 'breast'"``).
        genes: a list of symbols, ``"union"`` or ``"intersection"`` of the selected samples' genes (default:
            the sample's own genes for one sample, else the union). Absent genes are zero and masked.
        patch: patch array name, e.g. ``"224px_0.5um"``.
        targets: ``"log1p"`` (HEST-Benchmark's targets: log1p of raw counts, no library-size normalisation) or
            ``"raw"``.
        decode: ``"cpu"`` (libjpeg-turbo in workers), ``"gpu"`` (raw bytes to the training process, one batched
            nvJPEG call), ``"auto"`` (GPU when CUDA is available) or ``"none"`` (raw bytes, no decoding).
        transform: callable applied to each decoded batch, a uint8 tensor (B, 3, H, W) (on the device for GPU).
        storage_options: passed to fsspec (credentials, endpoint_url …).
        on_error: ``"raise"`` (an error naming the sample and patch index) or ``"skip"`` (skip and count).
        block_cache_dir: cache remote byte ranges on local disk (fsspec block cache).
        labels: an obs column of the samples' tables (e.g. ``label``, joined by ``convert … --labels``): each item
            then has ``label``, its class index in ``classes`` (sorted values over the samples), -1 where the spot
            has no label (masked values such as ``undetermined`` included).
        markers: multiplex arrays only — canonical marker names in the order wanted (default: the samples'
            common panel, else the union); a marker a sample lacks is zero and ``False`` in ``marker_mask``.
            Patches come as float32 (B, M, H, W) normalised per marker with the stored statistics
            (``(x / scale - mean) / std``).
    """

    def __init__(self, source: Any, query: Any = None, genes: Sequence[str] | str | None = None,
                 patch: str = DEFAULT_PATCH.name, targets: str = "log1p", decode: str = "auto",
                 transform: Callable[[Any], Any] | None = None, storage_options: dict[str, Any] | None = None,
                 on_error: str = "raise", block_cache_dir: str | None = None,
                 markers: Sequence[str] | None = None, labels: str | None = None) -> None:
        from hestdata.loader.sources import resolve_samples
        from hestdata.units import patch_array_name

        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.patch = patch_array_name(patch)[0]
        self.targets, self.transform, self.on_error = targets, transform, on_error
        if decode == "auto":
            from hestdata.loader.decode import cuda_available

            decode = "gpu" if cuda_available() else "cpu"
        self.decode = decode
        self.root, stored = resolve_samples(source, query, storage_options, block_cache_dir)
        self.source = str(self.root.url if self.root is not None else stored[0].url)
        self.fs = stored[0].fs
        missing = [s.id for s in stored if self.patch not in s.patch_arrays()]
        if missing and len(missing) == len(stored):
            raise StoreError(f"{self.source}: no patch array {self.patch!r} in any selected sample "
                             f"({', '.join(missing[:5])}{' …' if len(missing) > 5 else ''})")
        self.skipped_samples = missing  # without the patch array: skipped, counted
        stored = [s for s in stored if s.id not in set(missing)]
        self._modality(stored, markers)
        if self.multiplex:
            genes = []
        var_of = self._gene_lists(stored, genes)
        self.genes = gene_list(genes, list(dict.fromkeys(map(tuple, var_of.values()))) if var_of else [])
        self.samples: list[LoadedSample] = []
        self.spans: list[ShardSpan] = []
        first = 0
        for st in stored:
            n, sp = st.patch_count(self.patch)
            self.samples.append(LoadedSample(st, self.patch, n, sp, first, self.genes))
            self.spans += [ShardSpan(first + a, min(sp, n - a)) for a in range(0, n, sp)]
            first += n
        self._offsets = np.array([s.first for s in self.samples] + [first], dtype=np.int64)
        self.label_column, self.classes = labels, []
        if labels is not None:
            from hestdata.loader.samples import table_of
            from hestdata.loader.targets import label_codes

            self.classes, codes = label_codes([s.stored for s in self.samples], labels,
                                              [table_of(s.stored, self.patch) for s in self.samples])
            for s, c in zip(self.samples, codes, strict=True):
                s.label_codes = c
        self._plan: dict[str, Any] | None = None  # set by make_loader
        self._plan_state: Any = None  # shared int64 tensor [epoch, consumed]
        self._ring = WorkerRing()

    def _gene_lists(self, stored: list[Any], genes: Sequence[str] | str | None) -> dict[str, list[str]]:
        """The samples' gene lists, read once per distinct list (catalog ``genes_sha256``) when the dataset's
        genes depend on them (``"union"``, ``"intersection"``); an explicit list reads none here."""
        from hestdata.loader.samples import table_of

        if genes is not None and not isinstance(genes, str):
            return {}
        out: dict[str, list[str]] = {}
        for st in stored:
            key = (st.row or {}).get("genes_sha256") or st.id
            if key in out:
                continue
            table = table_of(st, self.patch)
            out[key] = st.table_names(table[len("tables/"):])[0] if table else []
        return out

    def _modality(self, stored: list[Any], markers: Sequence[str] | None) -> None:
        """Multiplex (channels variant: lossless patches over canonical markers) or RGB pairs — never mixed."""
        channels = [s.variant == "channels" for s in stored]
        self.multiplex = any(channels)
        if self.multiplex and not all(channels):
            raise StoreError(f"{self.source}: mixes multiplex and expression samples; select one kind with a query")
        if self.multiplex:
            attrs = [s.attrs for s in stored]
            self.decode = "cpu"
            panels = [[mk["name"] for mk in a.get("markers", [])] for a in attrs]
            self.markers = modality.choose_markers(panels, markers)
            self.marker_stats = [{mk["name"]: mk for mk in a["markers"]} for a in attrs]
        elif markers is not None:
            raise ValueError("markers= applies to multiplex patch arrays only")
        else:
            self.markers, self.marker_stats = [], []

    # -- sizes and random access --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, item: int) -> tuple[int, int]:
        """(sample number, patch index within the sample) of a global item id."""
        if not 0 <= item < len(self):
            raise IndexError(f"item {item} out of range [0, {len(self)})")
        s = int(np.searchsorted(self._offsets, item, side="right") - 1)
        return s, int(item - self._offsets[s])

    def __getitem__(self, item: int) -> dict[str, Any]:
        batch = as_tensors(self.load_block(np.array([item]), decode="cpu" if self.decode == "gpu" else self.decode))
        if not batch["index"].numel():
            raise IntegrityError(f"{self.source}: item {item} could not be read")
        return {k: (v if k == "marker_ids" else v[0]) for k, v in batch.items()
                if k != "n_skipped" and not k.startswith("_")}

    # -- the hot path ---------------------------------------------------------------------------------------
    def worker_buffer(self, n: int, shape: tuple[int, int, int]) -> Any:
        """In a DataLoader worker under ``make_loader``: the next slot of the worker's shared-memory ring."""
        if self._plan is None or not self._plan.get("ring"):
            return None
        return self._ring.slot(n, shape, int(self._plan["batch_size"]), int(self._plan["ring"]))

    def read(self, s: LoadedSample, pidx: np.ndarray) -> tuple[list[bytes | None], int]:
        """Encoded bytes of a sample's patches; with ``on_error="skip"`` an unreadable shard loses only its own
        patches (``None``), and the count of lost patches is returned. A local sample replaced since the dataset
        opened it is read from the old version an overwrite keeps (``samples/.old-…``), else an error whatever
        ``on_error`` says (checked after the read: nothing of a new version is returned)."""
        for _ in range(2):  # again when the sample moved to the version it opened, kept by an overwrite
            try:
                out_all = list(s.reader.read(pidx))
            except (HestdataError, OSError) as exc:
                if s.check_unchanged():
                    continue
                if self.on_error == "raise":
                    raise StoreError(f"{s.path}: sample {s.sample_id}: cannot read patches {pidx[:5].tolist()} "
                                     f"({self.patch}): {exc}") from exc
                break
            if not s.check_unchanged():
                return out_all, 0
        s.check_unchanged()
        out: list[bytes | None] = [None] * len(pidx)
        shards = pidx // s.reader.info.shard_patches
        lost = 0
        for shard in np.unique(shards):
            pos = np.flatnonzero(shards == shard)
            try:
                for p, data in zip(pos, s.reader.read(pidx[pos]), strict=True):
                    out[int(p)] = data
            except (HestdataError, OSError):
                lost += len(pos)
        return out, lost

    def read_by_sample(self, locs: list[tuple[int, int]]) -> Iterator[tuple[int, list[int], np.ndarray, list, int]]:
        """Group item positions by sample and read their encoded patches: yields
        ``(sample number, positions, patch indices, bytes or None per patch, patches lost)``."""
        by_sample: dict[int, list[int]] = {}
        for k, (s_no, _) in enumerate(locs):
            by_sample.setdefault(s_no, []).append(k)
        for s_no, ks in by_sample.items():
            pidx = np.array([locs[k][1] for k in ks], dtype=np.int64)
            raw, lost = self.read(self.samples[s_no], pidx)
            yield s_no, ks, pidx, raw, lost

    def load_block(self, ids: np.ndarray, decode: str | None = None) -> dict[str, Any]:
        """Read, decode and collate the items ``ids`` (global ids) into one batch dict."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"items out of range [0, {len(self)})")
        s_of = np.searchsorted(self._offsets, ids, side="right") - 1
        locs = list(zip(s_of.tolist(), (ids - self._offsets[s_of]).tolist(), strict=True))
        if self.multiplex:
            return modality.load_multiplex(self, ids, locs)
        return modality.load_rgb(self, ids, locs, decode or self.decode)

    def blocks(self) -> Iterator[dict[str, Any]]:
        """Yield this worker's blocks as batches.

        Under :func:`hestdata.make_loader` the blocks come from the epoch plan (shuffled, partitioned over ranks
        and workers, resumable); the plan's position (epoch, batches consumed) is read from shared memory, so
        persistent workers follow it across epochs. Otherwise the items come in order in blocks of 64, dealt
        round-robin to workers (``DataLoader(BlockStream(ds), batch_size=None)``).
        """
        import torch

        from hestdata.loader.sampler import deal, epoch_order, rank_blocks

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        if self._plan is None:
            blocks = [np.arange(a, min(a + 64, len(self))) for a in range(0, len(self), 64)]
            mine = blocks[wid::nw]
        else:
            p = self._plan
            epoch, consumed = (int(v) for v in self._plan_state.tolist())
            order = epoch_order(self.spans, seed=p["seed"], epoch=epoch, shuffle=p["shuffle"],
                                window_shards=p["window_shards"])
            blocks = rank_blocks(order, batch_size=p["batch_size"], rank=p["rank"], world_size=p["world_size"],
                                 drop_last=p["drop_last"])
            mine = deal(blocks, nw, skip=consumed)[wid]
        for block in mine:
            yield self.load_block(block)


class BlockStream(_Stream):  # type: ignore[misc,valid-type]
    """The batches of a :class:`PatchDataset` as an ``IterableDataset`` (what :func:`hestdata.make_loader` hands
    its DataLoader, with ``batch_size=None``): each element is a whole collated block."""

    def __init__(self, dataset: PatchDataset) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.dataset.blocks()
