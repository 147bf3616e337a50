"""``PatchDataset``: expression–morphology pairs streamed from a local or remote hestdata root.

Each item is an image patch (decoded in the worker, or left as JPEG bytes for one batched GPU decode) with the
expression vector of its spot over a requested gene list. The dataset is an ``IterableDataset`` of *batches*:
:func:`hestdata.make_loader` gives every worker a list of blocks (see ``sampler``), and the worker reads each
block's patches with coalesced byte-range reads of the shard files (``store.patches``), never through
zarr-python's per-chunk indexing. Random access (``dataset[i]``) also works, for inspection.

It never calls ``spatialdata.read_zarr`` (which loads every element eagerly): it reads the root ``zarr.json``
of each sample (metadata + consolidated array metadata), the patch → row index, and the expression table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hestdata.errors import HestdataError, IntegrityError, StoreError
from hestdata.loader.decode import decode_cpu, looks_like_jpeg
from hestdata.loader.sampler import ShardSpan
from hestdata.remote.fs import ProcessLocalFS, join
from hestdata.store import layout as L
from hestdata.store.patches import PatchArrayReader, open_patch_reader, read_root_metadata

try:
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover - torch is a dependency; keep the store usable without it
    _Base = object  # type: ignore[assignment,misc]

TARGETS = ("log1p", "raw")
DENSE_TARGETS_BYTES = 64 * 1024 * 1024  # per sample; larger target matrices stay sparse
DECODES = ("auto", "cpu", "gpu", "none")


NUMERIC_KEYS = ("expression", "mask", "coords_um", "index", "marker_mask", "marker_ids")


def as_tensors(batch: dict[str, Any]) -> dict[str, Any]:
    """Turn a batch's numpy arrays into tensors (no copy)."""
    import torch

    for k in NUMERIC_KEYS:
        if isinstance(batch.get(k), np.ndarray):
            batch[k] = torch.from_numpy(batch[k])
    return batch


def _open_group(fs: ProcessLocalFS, path: str) -> Any:
    import zarr

    if fs.is_local:
        return zarr.open_group(path, mode="r")
    from zarr.storage import FsspecStore

    from hestdata.remote.fs import to_url

    store = FsspecStore.from_url(to_url(fs.protocol, path), storage_options=fs.storage_options or None,
                                 read_only=True)
    return zarr.open_group(store, mode="r")


@dataclass
class _Sample:
    """Per-sample state; the expression matrix is loaded lazily in the process that needs it."""

    sample_id: str
    path: str
    reader: PatchArrayReader
    obs_index: np.ndarray  # patch -> table row
    centers_um: np.ndarray
    obs_names: np.ndarray
    gene_pos: np.ndarray  # requested gene j -> column in this sample, -1 if absent
    first: int  # global id of this sample's first patch
    table: str = f"tables/{L.TABLE}"  # the table obs_index points into
    _X: Any = field(default=None, repr=False)
    _pid: int = field(default=-1, repr=False)
    _dense: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_X"], d["_pid"], d["_dense"] = None, -1, None
        return d

    def targets_dense(self, fs: ProcessLocalFS, present: np.ndarray, targets: str) -> np.ndarray | None:
        """(n_obs, n_requested_genes) float32 targets, precomputed once when small (<= DENSE_TARGETS_BYTES)."""
        if self._dense is None:
            n_obs = self.X(fs).shape[0]
            if n_obs * len(self.gene_pos) * 4 > DENSE_TARGETS_BYTES:
                self._dense = False
            else:
                d = np.zeros((n_obs, len(self.gene_pos)), dtype=np.float32)
                if present.any():
                    d[:, present] = self.X(fs)[:, self.gene_pos[present]].toarray()
                if targets == "log1p":
                    np.log1p(d, out=d)
                self._dense = d
        return None if self._dense is False else self._dense

    def X(self, fs: ProcessLocalFS) -> Any:
        if self._X is None or self._pid != os.getpid():
            from anndata.io import read_elem

            g = _open_group(fs, self.path)
            self._X = read_elem(g[f"{self.table}/X"])
            if not hasattr(self._X, "tocsr"):
                import scipy.sparse as sp

                self._X = sp.csr_matrix(self._X)
            self._X = self._X.tocsr()
            self._pid = os.getpid()
        return self._X


class PatchDataset(_Base):  # type: ignore[misc,valid-type]
    """Expression–morphology pairs of one sample, a root, or a catalog query.

    Args:
        source: a ``samples/<id>.zarr`` folder or a root, local or any fsspec URL (``s3://``, ``https://`` …).
        query: polars expression over the root's catalog (e.g. ``pl.col("organ") == "breast"``).
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
        markers: multiplex arrays only — canonical marker names in the order wanted (default: the samples'
            common panel, else the union); a marker a sample lacks is zero and ``False`` in ``marker_mask``.
            Patches come as float32 (B, M, H, W) normalised per marker with the stored statistics
            (``(x / scale - mean) / std``).
    """

    def __init__(self, source: str | os.PathLike[str], query: Any = None, genes: Sequence[str] | str | None = None,
                 patch: str = "224px_0.5um", targets: str = "log1p", decode: str = "auto",
                 transform: Callable[[Any], Any] | None = None, storage_options: dict[str, Any] | None = None,
                 on_error: str = "raise", block_cache_dir: str | None = None,
                 markers: Sequence[str] | None = None) -> None:
        from hestdata.loader.sources import resolve_samples

        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        from hestdata.units import patch_array_name

        self.patch = patch_array_name(patch)[0]
        self.targets, self.transform, self.on_error = targets, transform, on_error
        if decode == "auto":
            from hestdata.loader.decode import cuda_available

            decode = "gpu" if cuda_available() else "cpu"
        self.decode = decode
        self.fs, paths = resolve_samples(source, query, storage_options, block_cache_dir)
        self.source = str(source)
        metas = [read_root_metadata(self.fs, p) for p in paths]
        sample_meta = [m.get("attributes", {}).get(L.META_KEY, {}) for m in metas]
        panels = [[mk["name"] for mk in sm.get("markers", [])] for sm in sample_meta]
        self.multiplex = any(panels)
        if self.multiplex and not all(panels):
            raise StoreError(f"{source}: mixes multiplex and expression samples; select one kind with a query")
        if self.multiplex:
            genes, decode = [], "cpu"
            self.decode = "cpu"
            from hestdata.curation.markers import resolve

            self.markers = [resolve(mk).name for mk in markers] if markers is not None else (
                panels[0] if all(p == panels[0] for p in panels) else list(dict.fromkeys(m for p in panels for m in p)))
            self._marker_stats = [{mk["name"]: mk for mk in sm["markers"]} for sm in sample_meta]
        elif markers is not None:
            raise ValueError("markers= applies to multiplex patch arrays only")
        else:
            self.markers = []
        tables = [self._table_of(m) for m in metas]
        # one read of each sample's table index: (var names, obs names); none for image-only arrays
        names = [self._table_names(p, t) if not self.multiplex and t else ([], None)
                 for p, t in zip(paths, tables, strict=True)]
        var_names = [v for v, _ in names]
        self.genes = self._gene_list(genes, var_names)
        gindex = {g: j for j, g in enumerate(self.genes)}
        self.samples: list[_Sample] = []
        self.spans: list[ShardSpan] = []
        first = 0
        for p, meta, table, (var, obs_names) in zip(paths, metas, tables, names, strict=True):
            consolidated = meta.get("consolidated_metadata", {}).get("metadata", {})
            sid = meta.get("attributes", {}).get(L.META_KEY, {}).get("id", p.rsplit("/", 1)[-1])
            reader = open_patch_reader(self.fs, p, self.patch, consolidated)
            g = _open_group(self.fs, join(p, L.PATCH_GROUP, self.patch))
            obs_index = np.asarray(g[L.PATCH_OBS_INDEX][:], dtype=np.int64)
            centers = np.asarray(g[L.PATCH_CENTERS][:], dtype=np.float32)
            pos = np.full(len(self.genes), -1, dtype=np.int64)
            for c, name in enumerate(var):
                j = gindex.get(name)
                if j is not None:
                    pos[j] = c
            if obs_names is None:  # patches are their own rows
                obs_names = np.array([f"tile{i}" for i in range(reader.info.n_patches)])
                obs_index = np.arange(reader.info.n_patches, dtype=np.int64)
            s = _Sample(sid, p, reader, obs_index, centers, obs_names, pos, first, table)
            self.samples.append(s)
            n, sp = reader.info.n_patches, reader.info.shard_patches
            self.spans += [ShardSpan(first + a, min(sp, n - a)) for a in range(0, n, sp)]
            first += n
        self._offsets = np.array([s.first for s in self.samples] + [first], dtype=np.int64)
        self._plan: dict[str, Any] | None = None  # set by make_loader
        self._plan_state: Any = None  # shared int64 tensor [epoch, consumed]

    # -- construction helpers -----------------------------------------------------------------------------
    def _table_of(self, meta: dict[str, Any]) -> str:
        """The table a patch array's ``obs_index`` points into (``tables/expression`` unless stated)."""
        cons = meta.get("consolidated_metadata", {}).get("metadata", {})
        attrs = cons.get(f"{L.PATCH_GROUP}/{self.patch}", {}).get("attributes", {})
        if "obs_index_table" in attrs and not attrs["obs_index_table"]:
            return ""  # patches tied to no table (slide tiles)
        return str(attrs.get("obs_index_table") or f"tables/{L.TABLE}")

    def _table_names(self, path: str, table: str) -> tuple[list[str], np.ndarray]:
        """(var names, obs names) of a sample's table, from one opening of its group."""
        from anndata.io import read_elem

        g = _open_group(self.fs, join(path, table))
        return [str(v) for v in read_elem(g["var"]).index], np.asarray(read_elem(g["obs"]).index.astype(str))

    @staticmethod
    def _gene_list(genes: Sequence[str] | str | None, var_names: list[list[str]]) -> list[str]:
        if genes is None:
            genes = "union"
        if isinstance(genes, str):
            if genes == "union":
                seen: dict[str, None] = {}
                for v in var_names:
                    seen.update(dict.fromkeys(v))
                return list(seen)
            if genes == "intersection":
                common = set(var_names[0]).intersection(*map(set, var_names[1:]))
                return [g for g in var_names[0] if g in common]
            raise ValueError(f"genes must be a list, 'union' or 'intersection', got {genes!r}")
        out = list(genes)
        if len(set(out)) != len(out):
            raise ValueError("the requested gene list has duplicates")
        return out

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
    def _expression(self, s: _Sample, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        present = s.gene_pos >= 0
        if not len(self.genes):  # images only (e.g. embedding extraction): never load the table
            return np.zeros((len(rows), 0), dtype=np.float32), present
        dense = s.targets_dense(self.fs, present, self.targets)
        if dense is not None:
            return dense[rows], present
        X = s.X(self.fs)
        out = np.zeros((len(rows), len(self.genes)), dtype=np.float32)
        if present.any():
            out[:, present] = X[rows][:, s.gene_pos[present]].toarray()
        if self.targets == "log1p":
            np.log1p(out, out=out)
        return out, present

    def _worker_buffer(self, n: int, shape: tuple[int, int, int]) -> Any:
        """In a DataLoader worker under ``make_loader``: the next slot of a ring of shared-memory batch buffers.

        Fresh shared memory costs a page fault per 4 KiB (~6 ms per 64-patch batch, as much as decoding half of
        it); a ring allocated once avoids that. A slot is reused only ``ring`` batches later, and the loader
        copies each image batch out of its slot as soon as the DataLoader hands it over; PyTorch keeps at most
        ``prefetch_factor`` batches in flight per worker, so ``ring = prefetch_factor + 2`` slots never overlap.
        """
        import torch

        if self._plan is None or not self._plan.get("ring"):
            return None
        cap = int(self._plan["batch_size"])
        if n > cap:
            return None
        key = (cap, shape)
        if getattr(self, "_ring_key", None) != key:
            self._ring = [torch.empty((cap, *shape), dtype=torch.uint8).share_memory_()
                          for _ in range(int(self._plan["ring"]))]
            self._ring_key, self._ring_next = key, 0
        slot = self._ring[self._ring_next]
        self._ring_next = (self._ring_next + 1) % len(self._ring)
        return slot[:n]

    def _read(self, s: _Sample, pidx: np.ndarray) -> tuple[list[bytes | None], int]:
        """Encoded bytes of a sample's patches; with ``on_error="skip"`` an unreadable shard loses only its own
        patches (``None``), and the count of lost patches is returned."""
        try:
            return list(s.reader.read(pidx)), 0
        except (HestdataError, OSError) as exc:
            if self.on_error == "raise":
                raise StoreError(f"{s.path}: sample {s.sample_id}: cannot read patches {pidx[:5].tolist()} "
                                 f"({self.patch}): {exc}") from exc
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

    def _read_by_sample(self, locs: list[tuple[int, int]]) -> Iterator[tuple[int, list[int], np.ndarray, list, int]]:
        """Group item positions by sample and read their encoded patches: yields
        ``(sample number, positions, patch indices, bytes or None per patch, patches lost)``."""
        by_sample: dict[int, list[int]] = {}
        for k, (s_no, _) in enumerate(locs):
            by_sample.setdefault(s_no, []).append(k)
        for s_no, ks in by_sample.items():
            pidx = np.array([locs[k][1] for k in ks], dtype=np.int64)
            raw, lost = self._read(self.samples[s_no], pidx)
            yield s_no, ks, pidx, raw, lost

    def load_block(self, ids: np.ndarray, decode: str | None = None) -> dict[str, Any]:
        """Read, decode and collate the items ``ids`` (global ids) into one batch dict.

        CPU decoding writes straight into the batch array; the image tensor is (B, 3, H, W) in channels-last
        memory (a permuted view, no transposing copy), which convolutional encoders consume directly.
        """
        import torch

        decode = decode or self.decode
        n = len(ids)
        ids = np.asarray(ids, dtype=np.int64)
        if n and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"items out of range [0, {len(self)})")
        s_of = np.searchsorted(self._offsets, ids, side="right") - 1
        locs = list(zip(s_of.tolist(), (ids - self._offsets[s_of]).tolist(), strict=True))
        ok = np.zeros(n, dtype=bool)
        jpegs: list[Any] = [None] * n
        buf = image_t = None
        if self.multiplex:
            return self._load_multiplex(ids, locs)
        if decode == "cpu":
            h, w, c = self.samples[locs[0][0]].reader.info.patch_shape if n else (1, 1, 3)
            image_t = self._worker_buffer(n, (h, w, 3)) if torch.utils.data.get_worker_info() is not None else None
            if image_t is None:
                image_t = torch.empty((n, h, w, 3), dtype=torch.uint8)
            buf = image_t.numpy()
        n_skipped = 0
        for s_no, ks, pidx, raw, lost in self._read_by_sample(locs):
            s = self.samples[s_no]
            n_skipped += lost
            for k, i, data in zip(ks, pidx, raw, strict=True):
                if data is None:
                    continue
                where = f"{s.path}: sample {s.sample_id} patch {int(i)} ({self.patch})"
                try:
                    if buf is not None:
                        decode_cpu(data, where, out=buf[k])
                    elif not looks_like_jpeg(data):
                        raise IntegrityError(f"{where}: corrupt JPEG (bad markers)")
                    else:
                        jpegs[k] = np.frombuffer(data, dtype=np.uint8)
                except IntegrityError:
                    if self.on_error == "raise":
                        raise
                    n_skipped += 1
                    continue
                ok[k] = True
        keep = np.flatnonzero(ok)
        g = len(self.genes)
        expr = np.zeros((len(keep), g), dtype=np.float32)
        mask = np.zeros((len(keep), g), dtype=bool)
        coords = np.zeros((len(keep), 2), dtype=np.float32)
        sample_ids, obs_ids = [], []
        by_sample_kept: dict[int, list[int]] = {}
        for j, k in enumerate(keep):
            by_sample_kept.setdefault(locs[k][0], []).append(j)
        for s_no, js in by_sample_kept.items():
            s = self.samples[s_no]
            pidx = np.array([locs[keep[j]][1] for j in js], dtype=np.int64)
            e, m = self._expression(s, s.obs_index[pidx])
            expr[js], mask[js], coords[js] = e, m, s.centers_um[pidx]
        for k in keep:
            s_no, i = locs[k]
            s = self.samples[s_no]
            sample_ids.append(s.sample_id)
            obs_ids.append(str(s.obs_names[s.obs_index[i]]))
        # small arrays stay numpy here: they travel from workers pickled inline (cheaper than one shared-memory
        # segment each) and become tensors in the loader (``as_tensors``)
        batch: dict[str, Any] = {
            "expression": expr, "mask": mask, "sample_id": sample_ids, "obs_id": obs_ids, "coords_um": coords,
            "index": np.asarray(ids, dtype=np.int64)[keep], "n_skipped": n_skipped,
        }
        if image_t is not None:
            t = (image_t if len(keep) == n else image_t[torch.from_numpy(keep)]).permute(0, 3, 1, 2)
            batch["_ring"] = image_t.is_shared()
            batch["image"] = self.transform(t) if self.transform is not None else t
        else:
            batch["jpeg"] = [torch.from_numpy(jpegs[k].copy()) for k in keep]
        return batch

    def _load_multiplex(self, ids: np.ndarray, locs: list[tuple[int, int]]) -> dict[str, Any]:
        """Lossless multiplex patches → float32 (B, M, H, W) over ``self.markers``, normalised per marker."""
        import torch

        n, m = len(ids), len(self.markers)
        shape = self.samples[locs[0][0]].reader.info.patch_shape if n else (m, 1, 1)
        out = np.zeros((n, m, shape[1], shape[2]), dtype=np.float32)
        mask = np.zeros((n, m), dtype=bool)
        ok = np.zeros(n, dtype=bool)
        n_skipped = 0
        for s_no, ks, pidx, raw, lost in self._read_by_sample(locs):
            s = self.samples[s_no]
            stats = self._marker_stats[s_no]
            order = list(stats)  # channel order of this sample
            n_skipped += lost
            for k, i, data in zip(ks, pidx, raw, strict=True):
                if data is None:
                    continue
                try:
                    patch = s.reader.info.decode(data)
                except Exception as exc:
                    if self.on_error == "raise":
                        raise IntegrityError(f"{s.path}: sample {s.sample_id} patch {int(i)} ({self.patch}): "
                                             f"corrupt chunk ({exc})") from exc
                    n_skipped += 1
                    continue
                for j, name in enumerate(self.markers):
                    st = stats.get(name)
                    if st is None:
                        continue
                    ch = patch[order.index(name)].astype(np.float32) / st["scale"]
                    out[k, j] = (ch - st["mean"]) / (st["std"] if st["std"] > 0 else 1.0)
                    mask[k, j] = True
                ok[k] = True
        keep = np.flatnonzero(ok)
        from hestdata.curation.markers import vocabulary

        vocab = {name: mk.marker_id for name, mk in vocabulary()[0].items()}
        for st in self._marker_stats:
            vocab.update({name: v["marker_id"] for name, v in st.items()})
        t = torch.from_numpy(out[keep])
        return {"image": self.transform(t) if self.transform is not None else t,
                "marker_mask": mask[keep], "marker_ids": np.array([vocab.get(x, 0) for x in self.markers]),
                "expression": np.zeros((len(keep), 0), np.float32), "mask": np.zeros((len(keep), 0), bool),
                "sample_id": [self.samples[locs[k][0]].sample_id for k in keep],
                "obs_id": [f"tile{locs[k][1]}" for k in keep],
                "coords_um": np.stack([self.samples[locs[k][0]].centers_um[locs[k][1]] for k in keep])
                if len(keep) else np.zeros((0, 2), np.float32),
                "index": np.asarray(ids, dtype=np.int64)[keep], "n_skipped": n_skipped}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this worker's blocks as batches.

        Under :func:`hestdata.make_loader` the blocks come from the epoch plan (shuffled, partitioned over ranks
        and workers, resumable); the plan's position (epoch, batches consumed) is read from shared memory, so
        persistent workers follow it across epochs. Used directly with a DataLoader, the dataset yields its items
        in order in blocks of 64, dealt round-robin to workers.
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
