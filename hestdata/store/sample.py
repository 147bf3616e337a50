"""Write and open one sample store (``samples/<id>.zarr``): a valid SpatialData Zarr v3 store plus the
``hestdata/patches`` arrays and the ``hestdata`` metadata in the root attributes.

Elements are written directly with zarr/anndata/geopandas in the exact layout spatialdata 0.7 writes
(OME-NGFF 0.5-dev multiscales, ``ngff:shapes`` parquet, ``ngff:regions_table`` AnnData), so that conversion
needs neither spatialdata's import cost nor a second in-memory copy of the image: level 0 is written in row
strips, each further level from the previous one. Everything goes to a dot-named temporary folder that is
renamed into place only when complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hestdata.errors import StoreError
from hestdata.io import progress
from hestdata.store import layout as L
from hestdata.store.atomic import commit_dir, held_lock, lock_of
from hestdata.store.failpoints import failpoint

if TYPE_CHECKING:
    import anndata

    from hestdata.metadata import SampleMetadata


def _cs(name: str, axes: list[str], unit: bool) -> dict[str, Any]:
    out = []
    for a in axes:
        if a == "c":
            out.append({"name": "c", "type": "channel"})
        else:
            out.append({"name": a, "type": "space", "unit": L.SPACE_UNIT} if unit else {"name": a, "type": "space"})
    return {"name": name, "axes": out}


def _transform(axes: list[str], scale: list[float] | None) -> dict[str, Any]:
    t: dict[str, Any] = {"type": "identity"} if scale is None else {"type": "scale", "scale": scale}
    t["input"] = _cs("".join(axes), axes, unit=True)
    t["output"] = _cs(L.COORDINATE_SYSTEM, axes, unit=True)
    return t


def _ngff_transform(pixel_size_um: float, origin_um: tuple[float, float], affine: np.ndarray | None) -> dict[str, Any]:
    """Image (c, y, x) level-0 pixels -> the sample's µm frame, encoded by spatialdata's own transformation
    classes (a scale, then a translation when the origin is not 0, or a 3x3 affine on (x, y, 1))."""
    from spatialdata.transformations import Affine, Scale, Sequence, Translation

    out_axes: tuple[str, ...] = ("c", "y", "x")
    if affine is not None:
        t: Any = Affine(np.asarray(affine, np.float64), input_axes=("x", "y"), output_axes=("x", "y"))
        out_axes = ("c", "x", "y")  # spatialdata's layout for an affine's output
    else:
        t = Scale([pixel_size_um, pixel_size_um], axes=("y", "x"))
        if any(origin_um):
            t = Sequence([t, Translation([float(origin_um[1]), float(origin_um[0])], axes=("y", "x"))])
    return t.to_ngff(input_axes=("c", "y", "x"), output_axes=out_axes, unit=L.SPACE_UNIT,
                     output_coordinate_system_name=L.COORDINATE_SYSTEM).to_dict()


def write_multiscale_metadata(g: Any, name: str, n_levels: int, channel_labels: list[str],
                              transform: dict[str, Any]) -> None:
    """The OME-NGFF multiscale metadata of ``images/<name>`` written by ome-zarr in spatialdata's current raster
    format (what ``spatialdata.read_zarr`` expects, so it follows the spec as spatialdata moves), with the
    channel labels as omero metadata (as spatialdata writes them) and the µm transformation."""
    from ome_zarr.writer import write_multiscales_metadata
    from spatialdata._io.format import CurrentRasterFormat  # spatialdata's writer uses exactly this format

    datasets = [{"path": f"s{i}", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0 ** i, 2.0 ** i]}]}
                for i in range(n_levels)]
    write_multiscales_metadata(g, datasets, fmt=CurrentRasterFormat(), axes=_cs("cyx", ["c", "y", "x"], unit=False)["axes"],
                               name=f"/images/{name}", metadata={"omero": {"channels": [{"label": c} for c in channel_labels]}})
    ome = dict(g.attrs)["ome"]
    ome["multiscales"][0]["coordinateTransformations"] = [transform]  # where spatialdata keeps them (zarr v3)
    g.attrs.update({"ome": ome, "spatialdata_attrs": {"version": L.ELEMENT_VERSION}})


def _zstd(level: int = 1) -> Any:
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=level)


class ShardRowWriter:
    """The (c, y, x) pyramid levels ``folder/s<k>``, written as the Zarr v3 ``sharding_indexed`` arrays their
    metadata declares, row of chunks by row of chunks, in bounded memory.

    Each inner chunk (c, 512, 512) is cut from a (rows, x, c) block, transposed and zstd-compressed (level 1,
    numcodecs — the frames zarr's ``ZstdCodec`` writes) on a thread pool, then appended to the file of its shard
    ``s<k>/c/0/<sy>/<sx>``; when the last chunk row of a shard row has arrived, each of those files gets its index
    (little-endian uint64 offset/nbytes per inner chunk in C order, 2^64-1 twice for a chunk not stored) and the
    index's CRC32C, as zarr writes it. All-zero chunks are not stored and a shard with none is not written, as
    zarr does by default. Alive at any time: one block of rows and the compressed chunks of one chunk row (zarr
    itself would need a whole shard row, 4,096 rows of the level, decoded in memory). zarr and spatialdata read
    the result like any other sharded array (tests compare both ways)."""

    def __init__(self, folder: Path, chunks: list[tuple[int, ...]], shards: list[tuple[int, ...]], dtype: Any,
                 workers: int | None = None, names: list[str] | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from numcodecs import Zstd

        self.folder, self.chunks, self.shards, self.dtype = folder, chunks, shards, np.dtype(dtype)
        self.names = names or [f"s{k}" for k in range(len(chunks))]  # the level arrays' folder names
        self.codec = Zstd(level=1)
        self.pool = ThreadPoolExecutor(workers or os.cpu_count() or 1, thread_name_prefix="hestdata-zstd")
        self.pending: list[Any] = []
        # per level: the open shard files of the current shard row, {sx: (file, index)}
        self.open: dict[int, dict[int, tuple[Any, np.ndarray]]] = {}

    def _encode(self, k: int, block: np.ndarray, x0: int) -> bytes | None:
        c, ch, cw = self.chunks[k]
        part = block[:, x0:x0 + cw]
        if not part.any():
            return None
        buf = np.zeros((c, ch, cw), dtype=self.dtype)
        buf[:, :part.shape[0], :part.shape[1]] = np.moveaxis(part, -1, 0)
        return bytes(self.codec.encode(buf))

    def _drain(self) -> None:
        """Append the encoded chunks of the chunk row in flight to their shard files."""
        for k, yi, xi, fut in self.pending:
            data = fut.result()
            if data is None:
                continue
            _, sh, sw = self.shards[k]
            _, ch, cw = self.chunks[k]
            per_y, per_x = sh // ch, sw // cw
            row = self.open.setdefault(k, {})
            sx = xi // per_x
            if sx not in row:
                path = self.folder / self.names[k] / "c" / "0" / str(yi // per_y) / str(sx)
                path.parent.mkdir(parents=True, exist_ok=True)
                row[sx] = (open(path, "wb"), np.full((per_y, per_x, 2), np.iinfo(np.uint64).max, dtype="<u8"))
            fh, index = row[sx]
            index[yi % per_y, xi % per_x] = (fh.tell(), len(data))
            fh.write(data)
        self.pending = []

    def _close_row(self, k: int) -> None:
        from google_crc32c import value as crc32c  # what zarr itself uses

        for fh, index in self.open.pop(k, {}).values():
            raw = index.tobytes()
            fh.write(raw)
            fh.write(int(crc32c(raw)).to_bytes(4, "little"))
            fh.close()

    def write(self, k: int, r0: int, block: np.ndarray, level_rows: int) -> None:
        """Write rows ``r0 : r0 + len(block)`` of level ``k`` (``r0`` on a chunk boundary, whole chunk rows
        except at the bottom of the level, which has ``level_rows`` rows)."""
        _, ch, cw = self.chunks[k]
        per_y = self.shards[k][1] // ch
        for a in range(0, len(block), ch):
            self._drain()  # at most one row of chunks in flight
            yi = (r0 + a) // ch
            self.pending = [(k, yi, x0 // cw, self.pool.submit(self._encode, k, block[a:a + ch], x0))
                            for x0 in range(0, block.shape[1], cw)]
            if (yi + 1) % per_y == 0 or r0 + a + ch >= level_rows:
                self._drain()
                self._close_row(k)

    def close(self) -> None:
        self._drain()
        for k in list(self.open):
            self._close_row(k)
        self.pool.shutdown()


def shard_shape(chunks: tuple[int, ...], shape: tuple[int, ...], per_shard: int = L.PYRAMID_SHARD_CHUNKS
                ) -> tuple[int, ...]:
    """The shard of a (c, y, x) level: ``per_shard`` x ``per_shard`` inner chunks, fewer where the level is
    smaller (a shard is a whole number of chunks)."""
    c, ch, cw = chunks
    return (c, ch * min(per_shard, -(-shape[1] // ch)), cw * min(per_shard, -(-shape[2] // cw)))


class PatchArrayWriter:
    """``hestdata/patches/<name>`` written in order. Patches are JPEG-encoded on a thread pool as they arrive
    (libjpeg-turbo releases the GIL) and each shard file is written once, directly in the Zarr v3
    ``sharding_indexed`` layout the array's metadata declares — inner chunks back to back, then the index of
    little-endian uint64 (offset, nbytes) pairs (2^64-1 for an empty chunk) and its CRC32C — so that neither a
    decoded shard nor zarr-python's per-chunk overhead (~0.4 ms) is on the way. zarr reads the result like any
    other sharded array (tests check every patch both ways). :meth:`finish` trims the array to what was appended
    and adds the index arrays."""

    def __init__(self, g: Any, folder: Path, n_max: int, patch_size_px: int, jpeg_quality: int,
                 shard_patches: int, workers: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from hestdata.store.codecs import JpegCodec

        self.g, self.folder, self.quality = g, folder, jpeg_quality
        self.p, self.n_max = patch_size_px, n_max
        self.shard = max(1, min(shard_patches, n_max))
        p = patch_size_px
        self.codec = JpegCodec(quality=jpeg_quality)
        self.images = g.create_array(L.PATCH_IMAGES, shape=(n_max, p, p, 3), dtype="uint8", chunks=(1, p, p, 3),
                                     shards=(self.shard, p, p, 3), serializer=self.codec,
                                     compressors=None, fill_value=0, dimension_names=("patch", "y", "x", "c"))
        self.pool = ThreadPoolExecutor(workers or os.cpu_count() or 1, thread_name_prefix="hestdata-jpeg")
        self.encoded: list[bytes] = []
        self.written = self.filled = 0

    def append(self, batch: np.ndarray | list[np.ndarray | bytes]) -> None:
        """Append patches in order: (H, W, 3) uint8 arrays, JPEG-encoded here, or — an image collection's source
        files that already have the geometry — JPEG bytes stored as they are (the caller checked they decode to
        (H, W, 3) with a baseline decoder: :func:`hestdata.store.codecs.jpeg_passthrough`)."""
        from hestdata.store.codecs import encode_jpeg

        if self.filled + len(batch) > self.n_max:
            raise StoreError(f"{self.folder}: more than {self.n_max} patches")
        for a in batch if isinstance(batch, list) else [batch[0]] if len(batch) else []:
            if isinstance(a, bytes):
                continue
            if a.shape != (self.p, self.p, 3) or a.dtype != np.uint8:
                raise StoreError(f"{self.folder}: patches of shape {a.shape} {a.dtype}, expected "
                                 f"({self.p}, {self.p}, 3) uint8")
        q, sub = self.codec.quality, self.codec.subsampling
        self.encoded.extend(self.pool.map(lambda a: a if isinstance(a, bytes) else encode_jpeg(a, q, sub), batch))
        self.filled += len(batch)
        while len(self.encoded) >= self.shard:
            self._flush(self.shard)

    def _flush(self, take: int) -> None:
        """Write the next shard file from the first ``take`` encoded patches."""
        from google_crc32c import value as crc32c  # what zarr itself uses

        chunks, self.encoded = self.encoded[:take], self.encoded[take:]
        sizes = np.array([len(c) for c in chunks], dtype=np.uint64)
        index = np.full((self.shard, 2), np.iinfo(np.uint64).max, dtype="<u8")
        index[:take, 0] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.uint64)
        index[:take, 1] = sizes
        raw = index.tobytes()
        path = self.folder / L.PATCH_IMAGES / "c" / str(self.written // self.shard) / "0" / "0" / "0"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"".join(chunks))
            f.write(raw)
            f.write(int(crc32c(raw)).to_bytes(4, "little"))
        self.written += take

    def finish(self, obs_index: np.ndarray, centers_um: np.ndarray, attrs: dict[str, Any], table: str = L.TABLE
               ) -> int:
        n = self.filled
        if n != self.n_max:
            self.images.resize((n, self.p, self.p, 3))
        if self.encoded:
            self._flush(len(self.encoded))
        self.pool.shutdown()
        self.g.create_array(L.PATCH_OBS_INDEX, data=np.asarray(obs_index, dtype=np.int64).reshape(n),
                            chunks=(max(1, n),), compressors=[_zstd(3)])
        self.g.create_array(L.PATCH_CENTERS, data=np.asarray(centers_um, dtype=np.float64).reshape(n, 2),
                            chunks=(max(1, n), 2), compressors=[_zstd(3)])
        self.g.attrs.update({"patch_size_px": self.p, "n_patches": n, "codec": "hestdata.jpeg",
                             "jpeg_quality": self.quality, "obs_index_table": f"tables/{table}" if table else None,
                             "shard_patches": self.shard, **attrs})
        return n


class SampleWriter:
    """Builds one sample in a temporary folder; ``commit`` renames it into ``root/samples/<id>.zarr``."""

    def __init__(self, root: str | Path, sample_id: str, overwrite: bool = False) -> None:
        import zarr

        from hestdata.store.publish import check_writable

        self.root = Path(root)
        check_writable(self.root)
        self.final = L.sample_path(self.root, L.check_sample_id(sample_id))
        if self.final.exists() and not overwrite:
            raise StoreError(f"{self.final}: sample already exists (pass overwrite=True / --overwrite)")
        self.overwrite, self.sample_id = overwrite, sample_id
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(f".tmp-{sample_id}-{uuid.uuid4().hex[:8]}{L.SAMPLE_SUFFIX}")
        # the lock marks the temporary folder as in use: a recovery removes only folders nobody holds
        self._lock = held_lock(lock_of(self.tmp))
        self._lock.__enter__()
        self.group = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
        self._done = False

    # -- context manager: any exception removes the temporary folder ---------------------------------------
    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self._lock.__exit__(None, None, None)

    # -- elements ------------------------------------------------------------------------------------------
    def write_image(self, shapes: list[tuple[int, int]], channels: int, dtype: Any, pixel_size_um: float,
                    strips: Iterable[tuple[int, int, np.ndarray]], name: str = L.IMAGE_HE,
                    channel_names: list[str] | None = None, origin_um: tuple[float, float] = (0.0, 0.0),
                    affine: np.ndarray | None = None, workers: int | None = None) -> None:
        """Write a pyramid as OME-Zarr ``images/<name>`` (c, y, x) from ``(level, first_row, strip)`` strips.

        Strips are (rows, x, c); they are buffered per level up to a whole row of chunks so every chunk is
        written exactly once (:class:`ShardRowWriter`: zstd on a thread pool, appended to shard files).
        """
        g = self.group.require_group("images").require_group(name)
        chunk = L.IMAGE_CHUNK_PX
        chunks = [(channels, min(chunk, h), min(chunk, w)) for h, w in shapes]
        shards = [shard_shape(c, (channels, h, w)) for c, (h, w) in zip(chunks, shapes, strict=True)]
        for i, (h, w) in enumerate(shapes):
            g.create_array(f"s{i}", shape=(channels, h, w), dtype=dtype, chunks=chunks[i], shards=shards[i],
                           compressors=[_zstd(1)], dimension_names=("c", "y", "x"), fill_value=0)
        pending: dict[int, tuple[int, list[np.ndarray]]] = {}
        written = [0] * len(shapes)
        chunk_rows = ShardRowWriter(self.tmp / "images" / name, chunks, shards, dtype, workers)

        def flush(k: int) -> None:
            r0, parts = pending.pop(k)
            block = np.concatenate(parts) if len(parts) > 1 else parts[0]
            chunk_rows.write(k, r0, block, shapes[k][0])
            written[k] += len(block)

        for k, r0, strip in progress.track(strips, f"{self.sample_id} {name} pyramid", sum(h for h, _ in shapes),
                                           weight=lambda s: len(s[2])):
            if k not in pending:
                pending[k] = (r0, [])
            pending[k][1].append(strip)
            rows = sum(len(p) for p in pending[k][1])
            if rows >= chunk or pending[k][0] + rows >= shapes[k][0]:
                flush(k)
        for k in list(pending):
            flush(k)
        chunk_rows.close()
        bad = [k for k, (h, _) in enumerate(shapes) if written[k] != h]
        if bad:
            raise StoreError(f"{self.tmp}: image level(s) {bad} incompletely written")
        # channel coordinates: r, g, b for RGB (what spatialdata-io writes and napari-spatialdata shows as colour),
        # marker names for multiplex
        labels = list(channel_names) if channel_names else (["r", "g", "b"] if channels == 3 else
                                                             [str(i) for i in range(channels)])
        write_multiscale_metadata(g, name, len(shapes), labels, _ngff_transform(pixel_size_um, origin_um, affine))

    def write_shapes(self, name: str, gdf: Any) -> None:
        """Write a GeoDataFrame (coordinates in µm) as ``shapes/<name>`` (``ngff:shapes``, identity to µm)."""
        g = self.group.require_group("shapes").require_group(name)
        path = self.tmp / "shapes" / name / "shapes.parquet"
        gdf.to_parquet(path)
        g.attrs.update({
            "encoding-type": "ngff:shapes", "axes": ["x", "y"],
            "coordinateTransformations": [_transform(["x", "y"], None)],
            "spatialdata_attrs": {"version": L.ELEMENT_VERSION},
        })

    def write_points(self, name: str, df: Any, feature_key: str, instance_key: str) -> None:
        """Write a points element (x, y in µm + columns) as spatialdata's ``ngff:points`` parquet."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        g = self.group.require_group("points").require_group(name)
        folder = self.tmp / "points" / name / "points.parquet"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / "part.0.parquet")
        g.attrs.update({
            "encoding-type": "ngff:points", "axes": ["x", "y"],
            "coordinateTransformations": [_transform(["x", "y"], None)],
            "spatialdata_attrs": {"instance_key": instance_key, "feature_key": feature_key, "version": "0.2"},
        })

    def write_table(self, adata: anndata.AnnData, region: str | None = L.SHAPES_SPOTS, name: str = L.TABLE) -> None:
        """Write the expression AnnData annotating ``shapes/<region>`` (``ngff:regions_table``); ``region=None``:
        a table annotating no element (an image collection's items), as spatialdata writes one."""
        import warnings

        import pandas as pd
        from anndata.io import write_elem

        adata = adata.copy()
        # what scanpy and squidpy look for: spatial coordinates in obsm (µm, x then y: the frame of the shapes and
        # of the image's µm transform) and scanpy's var column names
        if {"x_um", "y_um"} <= set(adata.obs.columns):
            adata.obsm["spatial"] = adata.obs[["x_um", "y_um"]].to_numpy(np.float64)
        adata.var = adata.var.rename(columns=L.SCANPY_VAR_NAMES)
        keys: dict[str, Any] = {"region": None, "region_key": None, "instance_key": None}
        if region is not None:
            adata.obs[L.REGION_KEY] = pd.Categorical([region] * adata.n_obs)
            adata.obs[L.INSTANCE_KEY] = adata.obs_names.astype(str)
            keys = {"region": region, "region_key": L.REGION_KEY, "instance_key": L.INSTANCE_KEY}
            adata.uns["spatialdata_attrs"] = keys
        tables = self.group.require_group("tables")
        with warnings.catch_warnings():  # zarr's notice about future default sharding; not actionable here
            warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
            write_elem(tables, name, adata)
        tables[name].attrs.update({"spatialdata-encoding-type": "ngff:regions_table", **keys,
                                   "version": L.TABLE_VERSION})

    def write_plain_table(self, adata: anndata.AnnData, name: str) -> None:
        """Write a table that annotates no spatial element (slide-level profile, alterations) as
        ``hestdata/tables/<name>``: a plain AnnData group (``anndata.io.read_elem`` reads it), outside
        ``tables/``, because spatialdata's spatial queries fail on a table that annotates nothing
        (``KeyError: 'spatialdata_attrs'``, spatialdata issue #1248)."""
        import warnings

        from anndata.io import write_elem

        adata = adata.copy()
        adata.var = adata.var.rename(columns=L.SCANPY_VAR_NAMES)
        g = self.group
        for part in L.SLIDE_TABLES.split("/"):
            g = g.require_group(part)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
            write_elem(g, name, adata)

    def write_patches(self, name: str, n: int, patch_size_px: int, batches: Iterable[tuple[int, np.ndarray]],
                      obs_index: np.ndarray, centers_um: np.ndarray, attrs: dict[str, Any],
                      jpeg_quality: int, shard_patches: int = L.DEFAULT_SHARD_PATCHES, table: str = L.TABLE,
                      workers: int | None = None) -> None:
        """Write ``hestdata/patches/<name>``: sharded JPEG images (N, H, W, 3), ``obs_index`` and ``centers_um``
        (JPEG encoding on ``workers`` threads)."""
        pw = self.patch_writer(name, n, patch_size_px, jpeg_quality, shard_patches, workers)
        for start, batch in progress.track(batches, f"{self.sample_id} {name}", n, weight=lambda b: len(b[1])):
            if start != pw.filled:
                raise StoreError(f"{self.tmp}: patch batches out of order ({start} != {pw.filled})")
            pw.append(batch)
        if pw.filled != n:
            raise StoreError(f"{self.tmp}: expected {n} patches, got {pw.filled}")
        pw.finish(obs_index, centers_um, attrs, table)

    def patch_writer(self, name: str, n_max: int, patch_size_px: int, jpeg_quality: int,
                     shard_patches: int = L.DEFAULT_SHARD_PATCHES, workers: int | None = None) -> PatchArrayWriter:
        """A JPEG patch array of at most ``n_max`` patches filled batch by batch (for counts known only once the
        patches are rendered, e.g. slide tiles after background rejection)."""
        return PatchArrayWriter(self.group.require_group(L.PATCH_GROUP).require_group(name),
                                self.tmp / L.PATCH_GROUP / name, n_max, patch_size_px, jpeg_quality, shard_patches,
                                workers)

    def write_lossless_patches(self, name: str, patches: np.ndarray, centers_um: np.ndarray, attrs: dict[str, Any],
                               shard_patches: int = L.DEFAULT_SHARD_PATCHES) -> None:
        """Multiplex patches (N, C, P, P) in their native dtype, one zstd chunk per patch, sharded (plain zarr
        codecs: readable without hestdata). ``obs_index`` is -1: the patches are not tied to table rows."""
        from zarr.codecs import BytesCodec

        g = self.group.require_group(L.PATCH_GROUP).require_group(name)
        n = len(patches)
        shard = max(1, min(shard_patches, n))
        c, h, w = patches.shape[1:]
        arr = g.create_array(L.PATCH_IMAGES, shape=patches.shape, dtype=patches.dtype, chunks=(1, c, h, w),
                             shards=(shard, c, h, w), serializer=BytesCodec(), compressors=[_zstd(3)], fill_value=0,
                             dimension_names=("patch", "c", "y", "x"))
        for a in range(0, n, shard):
            arr[a:a + shard] = patches[a:a + shard]
        g.create_array(L.PATCH_OBS_INDEX, data=np.full(n, -1, dtype=np.int64), chunks=(max(1, n),),
                       compressors=[_zstd(3)])
        g.create_array(L.PATCH_CENTERS, data=np.asarray(centers_um, dtype=np.float64).reshape(n, 2),
                       chunks=(max(1, n), 2), compressors=[_zstd(3)])
        g.attrs.update({"patch_size_px": int(h), "n_patches": n, "codec": "zstd", "shard_patches": shard,
                        "obs_index_table": None, **attrs})

    def commit(self, metadata: SampleMetadata) -> Path:
        """Write root attributes, consolidate metadata, write the sample's manifest and rename into place
        atomically."""
        import zarr

        from hestdata.errors import SchemaError
        from hestdata.metadata import schema_violations

        meta = metadata.model_dump(mode="json")
        problems = schema_violations(meta)
        if problems:
            raise SchemaError(self.final, problems)
        self.group.attrs.update({
            "spatialdata_attrs": {"version": L.SPATIALDATA_VERSION, "spatialdata_software_version": "0.7.3"},
            L.META_KEY: meta,
        })
        import warnings

        with warnings.catch_warnings():  # parquet files beside zarr nodes, and the v3 consolidation notice
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            zarr.consolidate_metadata(str(self.tmp))
        from hestdata.store.consolidated import split_file
        from hestdata.store.manifest import write_sample_manifest

        split_file(self.tmp / "zarr.json")  # zarr and spatialdata open the sample without hestdata

        write_sample_manifest(self.tmp, metadata.id)  # last: every file of the sample, hashed
        failpoint("before-sample-rename", self.final.name[: -len(L.SAMPLE_SUFFIX)])
        commit_dir(self.tmp, self.final, self.overwrite, root=self.root)
        self._done = True
        failpoint("after-sample-rename", self.final.name[: -len(L.SAMPLE_SUFFIX)])
        return self.final


@dataclass
class OpenSample:
    """An opened sample: the SpatialData object, its typed metadata, and direct access to patch arrays."""

    path: Path
    sdata: Any
    metadata: SampleMetadata
    stored: Any = None  # the StoredSample it was read through

    def patch_arrays(self) -> list[str]:
        """Names of the patch arrays (e.g. ``['224px_0.5um']``)."""
        return sorted(self.metadata.qc.patches)

    def patches(self, name: str) -> Any:
        """The zarr group ``hestdata/patches/<name>`` (arrays ``images``, ``obs_index``, ``centers_um``)."""
        from hestdata.store.root import StoredSample

        return (self.stored or StoredSample.open(self.path)).patch_group(name)


def read_rows(array: Any, rows: Any) -> np.ndarray:
    """Rows ``rows`` (ascending) of a zarr array such as a patch array, one slice read per run of consecutive
    rows: zarr's orthogonal selection over a sharded patch array costs about 5 ms a row (64 patches spread over
    180 took 0.32 s; all 180 as one slice, 0.06 s)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
    for a, b in zip(starts, [*starts[1:], len(rows)], strict=False):  # (no row: no run)
        out[a:b] = array[int(rows[a]):int(rows[b - 1]) + 1]
    return out


def read_metadata(path: str | Path) -> SampleMetadata:
    """The typed metadata of a sample folder, read from its root attributes (cheap: no element is loaded); a
    sample from a newer hestdata names the version to install."""
    from hestdata.store.root import StoredSample

    return StoredSample.open(Path(path)).metadata


def open_sample(path: str | Path) -> OpenSample:
    """Open ``samples/<id>.zarr`` with ``spatialdata.read_zarr`` plus its validated metadata."""
    from hestdata.store.root import StoredSample

    p = Path(path)
    if not p.is_dir():
        raise StoreError(f"{p}: sample folder not found")
    s = StoredSample.open(p)
    meta = s.metadata
    return OpenSample(p, s.open_spatialdata(), meta, s)
