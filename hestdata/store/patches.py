"""Fast path for patch arrays: shard index + byte ranges → raw JPEG bytes, bypassing zarr-python.

zarr-python costs ~1 ms per indexing call; a patch array is a Zarr v3 ``sharding_indexed`` array whose inner
chunks are single JPEGs, so the bytes of patch ``i`` are a plain byte range of its shard file, located by the
shard's index (``n`` pairs of little-endian uint64 ``offset, nbytes`` + a CRC32C, at the end of the shard).
``PatchArrayReader`` reads and caches those indices and fetches coalesced byte ranges of neighbouring patches
in one request, locally with ``os.pread`` and remotely through fsspec.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hestdata.errors import IntegrityError, StoreError
from hestdata.io import retry
from hestdata.io.fs import ProcessLocalFS, join
from hestdata.store import layout as L

EMPTY = 2**64 - 1
COALESCE_GAP_BYTES = 256 * 1024
REMOTE_SHARD_CACHE_BYTES = 256 * 1024 * 1024


@dataclass
class PatchArrayInfo:
    """What the fast path needs to know about one patch array (parsed from its ``zarr.json``)."""

    n_patches: int
    patch_shape: tuple[int, int, int]
    shard_patches: int
    codec: str  # "hestdata.jpeg", or "zstd" for lossless (multiplex) arrays
    index_at_end: bool
    index_has_crc: bool
    dtype: str = "uint8"

    def decode(self, data: bytes) -> Any:
        """A lossless patch (C, H, W) in its native dtype (JPEG patches are decoded by the loader)."""
        if self.codec != "zstd":
            raise ValueError(f"decode() is for lossless arrays, this one is {self.codec}")
        import numcodecs

        raw = numcodecs.Zstd().decode(data)
        return np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.patch_shape)

    @property
    def n_shards(self) -> int:
        return -(-self.n_patches // self.shard_patches)

    def index_nbytes(self) -> int:
        return self.shard_patches * 16 + (4 if self.index_has_crc else 0)


def parse_array_meta(meta: dict[str, Any], where: str) -> PatchArrayInfo:
    """Check that ``meta`` (a patch ``images`` array's zarr.json) is a sharded single-JPEG-chunk array."""
    try:
        shape = meta["shape"]
        shard_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        codec = meta["codecs"][0]
        if codec["name"] != "sharding_indexed":
            raise StoreError(f"{where}: patch array is not sharded (codec {codec['name']!r})")
        cfg = codec["configuration"]
        inner = cfg["chunk_shape"]
        inner_names = [c["name"] for c in cfg["codecs"]]
        inner_codec = "zstd" if inner_names == ["bytes", "zstd"] else inner_names[0]
        if inner_codec not in ("hestdata.jpeg", "zstd"):
            raise StoreError(f"{where}: unsupported inner codecs {inner_names}")
        index_codecs = [c["name"] for c in cfg.get("index_codecs", [])]
        loc = cfg.get("index_location", "end")
    except (KeyError, IndexError, TypeError) as exc:
        raise StoreError(f"{where}: malformed patch array metadata ({exc})") from exc
    if inner[0] != 1 or list(inner[1:]) != list(shape[1:]) or list(shard_shape[1:]) != list(shape[1:]):
        raise StoreError(f"{where}: inner chunks must be single patches, got {inner} in shards {shard_shape}")
    return PatchArrayInfo(int(shape[0]), tuple(shape[1:]), int(shard_shape[0]), inner_codec, loc == "end",
                          "crc32c" in index_codecs, str(meta.get("data_type", "uint8")))


@dataclass
class PatchArrayReader:
    """Raw encoded patches of one ``hestdata/patches/<name>/images`` array (local path or fsspec URL)."""

    fs: ProcessLocalFS
    array_path: str  # .../samples/<id>.zarr/hestdata/patches/<name>/images
    info: PatchArrayInfo
    shard_cache_bytes: int = REMOTE_SHARD_CACHE_BYTES
    # the manifest a remote dataset started from: shard path -> (size, sha256); a shard that differs was
    # changed under the reader (an interrupted or concurrent push) and is never served
    pinned: dict[str, tuple[int, str]] | None = None
    _index: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _shards: dict[int, bytes] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:  # caches are per process (cheap to rebuild, never pickled)
        return {"fs": self.fs, "array_path": self.array_path, "info": self.info,
                "shard_cache_bytes": self.shard_cache_bytes, "pinned": self.pinned, "_index": {}, "_shards": {}}

    def _local_map(self, shard: int) -> Any:
        """Local only: the shard file memory-mapped (kept open; the OS page cache does the caching)."""
        m = self._shards.get(shard)
        if m is None:
            import mmap

            path = self.shard_path(shard)
            try:
                with open(path, "rb") as fh:
                    m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except FileNotFoundError:
                raise StoreError(f"{path}: shard file missing") from None
            except ValueError:  # empty file
                raise IntegrityError(f"{path}: empty shard file") from None
            if len(self._shards) >= 64:
                self._shards.pop(next(iter(self._shards))).close()
            self._shards[shard] = m
        return m

    def _whole_shard(self, shard: int) -> bytes | None:
        """Remote only: the whole shard in one request, kept in a small LRU (shard-aware order makes a worker
        revisit the same few shards for many batches, so one GET per shard replaces one per patch)."""
        if self.fs.is_local:
            return self._local_map(shard)
        if self.shard_cache_bytes <= 0:
            return None
        blob = self._shards.pop(shard, None)
        if blob is None:
            path = self.shard_path(shard)
            try:
                blob = retry.cat_file(self.fs.get(), path)
            except FileNotFoundError:
                raise StoreError(f"{path}: shard file missing") from None
            check_pinned(self.pinned, path, blob)
            if len(blob) > self.shard_cache_bytes:
                return blob
        self._shards[shard] = blob  # most recent last
        while sum(len(b) for b in self._shards.values()) > self.shard_cache_bytes and len(self._shards) > 1:
            self._shards.pop(next(iter(self._shards)))
        return blob

    def shard_path(self, shard: int) -> str:
        nd = len(self.info.patch_shape)
        return join(self.array_path, "c", str(shard), *(["0"] * nd))

    def _read_range(self, path: str, start: int, end: int) -> bytes:
        if self.fs.is_local:
            fd = os.open(path, os.O_RDONLY)
            try:
                if start < 0:  # suffix read: the last -start bytes
                    size = os.fstat(fd).st_size
                    start, end = max(0, size + start), size
                return os.pread(fd, end - start, start)
            finally:
                os.close(fd)
        fs = self.fs.get()
        return retry.cat_file(fs, path, start=start, end=None if start < 0 else end)  # start < 0: a suffix

    def shard_index(self, shard: int, blob: bytes | None = None) -> np.ndarray:
        """(shard_patches, 2) uint64 offsets/nbytes of a shard, cached (parsed from ``blob`` if given)."""
        idx = self._index.get(shard)
        if idx is None:
            n = self.info.index_nbytes()
            path = self.shard_path(shard)
            try:
                if blob is not None:
                    raw = blob[-n:] if self.info.index_at_end else blob[:n]
                else:
                    raw = self._read_range(path, -n, 0) if self.info.index_at_end else self._read_range(path, 0, n)
            except FileNotFoundError:
                raise StoreError(f"{path}: shard file missing") from None
            if len(raw) != n:
                raise IntegrityError(f"{path}: shard index truncated ({len(raw)} of {n} bytes)")
            body = raw[: self.info.shard_patches * 16]
            if self.info.index_has_crc:
                from google_crc32c import value as crc32c  # what zarr itself uses

                (stored,) = struct.unpack("<I", raw[-4:])
                if crc32c(body) != stored:
                    raise IntegrityError(f"{path}: shard index checksum mismatch (corrupt shard)")
            idx = np.frombuffer(body, dtype="<u8").reshape(-1, 2)
            self._index[shard] = idx
        return idx

    def read(self, indices: np.ndarray | list[int]) -> list[bytes]:
        """Encoded bytes of the given patches (any order), fetching coalesced ranges per shard."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.info.n_patches):
            raise IndexError(f"{self.array_path}: patch index out of range [0, {self.info.n_patches})")
        out: list[bytes | None] = [None] * len(idx)
        sp = self.info.shard_patches
        shards = idx // sp
        for shard in np.unique(shards):
            pos = np.flatnonzero(shards == shard)
            blob = self._whole_shard(int(shard))
            table = self.shard_index(int(shard), blob)
            local = idx[pos] - shard * sp
            offs, sizes = table[local, 0], table[local, 1]
            empty = (offs == EMPTY)
            if empty.any():
                raise IntegrityError(f"{self.shard_path(int(shard))}: patch {int(idx[pos][empty][0])} has no data")
            if blob is not None:
                if int((offs + sizes).max()) > len(blob):
                    raise IntegrityError(f"{self.shard_path(int(shard))}: index points past the end of the shard")
                mv = memoryview(blob)
                for p, o, n in zip(pos, offs, sizes, strict=True):
                    out[int(p)] = bytes(mv[int(o):int(o) + int(n)])
                continue
            order = np.argsort(offs, kind="stable")
            path = self.shard_path(int(shard))
            run: list[int] = []
            for j in order:
                if run and int(offs[j]) > int(offs[run[-1]] + sizes[run[-1]]) + COALESCE_GAP_BYTES:
                    self._fetch_run(path, run, offs, sizes, pos, out)
                    run = []
                run.append(int(j))
            if run:
                self._fetch_run(path, run, offs, sizes, pos, out)
        return out  # type: ignore[return-value]

    def _fetch_run(self, path: str, run: list[int], offs: np.ndarray, sizes: np.ndarray, pos: np.ndarray,
                   out: list[bytes | None]) -> None:
        start = int(min(offs[j] for j in run))
        end = int(max(offs[j] + sizes[j] for j in run))
        blob = self._read_range(path, start, end)
        if len(blob) != end - start:
            raise IntegrityError(f"{path}: short read ({len(blob)} of {end - start} bytes)")
        mv = memoryview(blob)
        for j in run:
            a = int(offs[j]) - start
            out[int(pos[j])] = bytes(mv[a:a + int(sizes[j])])


def check_pinned(pinned: dict[str, tuple[int, str]] | None, path: str, data: bytes) -> None:
    """``data`` read from ``path`` must be the bytes the pinned manifest lists (if it lists the file)."""
    if not pinned or path not in pinned:
        return
    import hashlib

    size, sha = pinned[path]
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
        raise IntegrityError(f"{path}: differs from the manifest this dataset started from (the root changed "
                             "under it, e.g. a push in progress); reopen the dataset")


def open_patch_reader(fs: ProcessLocalFS, sample_path: str, name: str, consolidated: dict[str, Any],
                      pinned: dict[str, tuple[int, str]] | None = None) -> PatchArrayReader:
    """Reader for ``<sample>/hestdata/patches/<name>/images`` using the sample's consolidated metadata."""
    key = f"{L.PATCH_GROUP}/{name}/{L.PATCH_IMAGES}"
    meta = consolidated.get(key)
    if meta is None:
        raise StoreError(f"{sample_path}: no patch array {name!r}")
    return PatchArrayReader(fs, join(sample_path, key), parse_array_meta(meta, join(sample_path, key)),
                            pinned=pinned)
