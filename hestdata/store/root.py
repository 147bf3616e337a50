"""The one read door of a root: :class:`Root` (opened once, pinned to a catalog version) and
:class:`StoredSample` (one sample: typed, versioned metadata, its manifest, its elements).

Everything that reads a root — the loader, the benchmark, download and push, the CLI and ``validate`` — opens it
here, locally or through any fsspec URL, in store format 2 (``hestdata.json`` + versioned catalog + a manifest per
sample) or format 1 (``catalog.parquet`` + one root ``manifest.json``, read as it is). Opening a format-2 root
costs three requests (pointer, catalog base, catalog tail), whatever it holds; a sample costs nothing until it is
used, then one request for its manifest (checked against its catalog row) and one for its ``zarr.json``.

Remote reads are pinned: a file fetched whole is checked against the sample's manifest, the manifest against the
catalog row, the catalog against the pointer the root was opened at — so a reader never mixes two versions of a
sample, and a root changed under it is detected (:meth:`Root.changed`, and :class:`IntegrityError` on a file
that differs). Local roots are read in place.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hestdata.errors import IntegrityError, StoreError
from hestdata.io import retry
from hestdata.io.fs import ProcessLocalFS, fsspec_options, join, split_url, to_url
from hestdata.store import layout as L

local_format = L.local_format


def _with_all_columns(cat: Any) -> Any:
    """A catalog with every column of the current schema (older catalogs lack the format-2 ones: null)."""
    import polars as pl

    from hestdata.store.catalog import polars_schema

    schema = polars_schema()
    missing = [pl.lit(None, dtype=dt).alias(name) for name, dt in schema.items() if name not in cat.columns]
    return cat.with_columns(missing) if missing else cat


@dataclass
class Root:
    """A root opened for reading, pinned to one catalog version.

    ``catalog`` (polars) is that version's catalog, possibly narrowed by :meth:`select`; :meth:`sample` gives a
    :class:`StoredSample`. ``format_version`` is 1 or 2; ``version`` the catalog version (format 2; 0 for an
    empty root; None for format 1)."""

    url: str
    fs: ProcessLocalFS
    base: str
    format_version: int
    version: int | None
    catalog: Any
    pointer: dict[str, Any] | None = field(default=None, repr=False)
    manifest1: dict[str, tuple[int, str]] | None = field(default=None, repr=False)  # format 1: every file
    _rows: dict[str, int] | None = field(default=None, repr=False)

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, source: str | os.PathLike[str] | Root | None, storage_options: dict[str, Any] | None = None, *,
             version: int | None = None, block_cache_dir: str | None = None, ids: list[str] | None = None) -> Root:
        """Open a root by path, URL (``s3://``, ``https://``, ``hf://`` …) or configured remote name
        (``$HESTDATA_REMOTE`` when None); ``version`` reopens an earlier catalog version (format 2, one of the
        last ``store.versions.KEEP_VERSIONS``). ``ids`` opens it already narrowed to those samples (as
        :meth:`select` ``(ids=…)``, unknown ids dropped), decoding only their rows. An opened :class:`Root` is
        returned as it is."""
        from hestdata.store.remotes import resolve_remote

        if isinstance(source, Root):
            return source
        url, opts = resolve_remote(source, storage_options)
        protocol, base = split_url(url)
        if base.endswith(L.SAMPLE_SUFFIX):
            raise StoreError(f"{url}: a sample, not a root (open it with StoredSample.open)")
        fs = ProcessLocalFS(protocol, opts, block_cache_dir)
        if fs.is_local and not Path(base).is_dir():
            raise StoreError(f"{base}: root folder not found")
        root = cls(url, fs, base, 2, 0, None)
        pointer_rel = L.ROOT_POINTER if version is None else f"{L.CATALOG_DIR}/v{version:08d}.json"
        raw = root._read_opt(pointer_rel)
        if raw is not None:
            return root._open_v2(raw, pointer_rel, ids)
        if version is not None:
            raise StoreError(f"{url}: no catalog version {version} (only the last versions are kept)")
        cat_raw = root._read_opt(L.CATALOG)
        if cat_raw is None:
            if fs.is_local and not (Path(base) / L.MANIFEST).is_file():
                from hestdata.store.catalog import empty_catalog

                root.catalog = empty_catalog()
                return root
            raise StoreError(f"{url}: not a hestdata root (no {L.ROOT_POINTER} or {L.CATALOG})")
        root = root._open_v1(cat_raw)
        return root if ids is None else root.select(ids=[i for i in ids if i in root])

    def _open_v2(self, raw: bytes, rel: str, ids: list[str] | None = None) -> Root:
        from hestdata.store import versions
        from hestdata.store.catalog import parse_catalog, parse_tail

        where = self.where(rel)
        pointer = versions.parse_pointer(raw, where)
        parts = versions.read_version(self.read, pointer, where)
        base = parse_catalog(parts[0], self.where(pointer["catalog"]["base"]["path"]), ids)
        tail = parse_tail(parts[1], self.where(pointer["catalog"]["tail"]["path"]), ids) if len(parts) > 1 else None
        self.catalog = _with_all_columns(versions.merge(base, tail))
        self.pointer, self.version, self.format_version = pointer, int(pointer["version"]), 2
        return self

    def _open_v1(self, cat_raw: bytes) -> Root:
        from hestdata.store.catalog import parse_catalog
        from hestdata.store.safety import check_entry, check_relpath

        where = self.where(L.MANIFEST)
        raw = self._read_opt(L.MANIFEST)
        if raw is None:
            raise StoreError(f"{where}: missing (a format-1 root needs its manifest; run `hestdata repair`)")
        try:
            m = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"{where}: invalid JSON ({exc})") from exc
        if not isinstance(m, dict) or m.get("format") != "hestdata-manifest" or not isinstance(m.get("files"), dict):
            raise IntegrityError(f"{where}: not a hestdata manifest")
        files = {check_relpath(rel, where): check_entry(rel, e, where) for rel, e in m["files"].items()}
        if L.CATALOG in files and hashlib.sha256(cat_raw).hexdigest() != files[L.CATALOG][1]:
            raise IntegrityError(f"{self.where(L.CATALOG)}: does not match {L.MANIFEST}")
        self.catalog = _with_all_columns(parse_catalog(cat_raw, self.where(L.CATALOG)))
        self.format_version, self.version, self.manifest1 = 1, None, files
        return self

    # -- reading files -------------------------------------------------------------------------------------
    def where(self, rel: str = "") -> str:
        """A root-relative path as the user would name it (for messages)."""
        return join(self.base, rel) if rel else self.base

    def read(self, rel: str) -> bytes:
        """The bytes of a file of the root (``rel`` relative to it)."""
        path = join(self.base, rel)
        try:
            if self.fs.is_local:
                with open(path, "rb") as fh:
                    return fh.read()
            return retry.cat_file(self.fs.get(), path)
        except FileNotFoundError:
            raise StoreError(f"{path}: not found") from None
        except OSError as exc:  # unreachable host, refused connection, timeouts
            raise StoreError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None

    def _read_opt(self, rel: str) -> bytes | None:
        path = join(self.base, rel)
        try:
            if self.fs.is_local:
                with open(path, "rb") as fh:
                    return fh.read()
            return retry.cat_file(self.fs.get(), path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None

    @property
    def is_local(self) -> bool:
        return self.fs.is_local

    @property
    def path(self) -> Path:
        """The local folder (local roots only)."""
        if not self.fs.is_local:
            raise StoreError(f"{self.url}: not a local root")
        return Path(self.base)

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.fs.storage_options

    def root_files(self) -> dict[str, tuple[int, str]]:
        """The root's own files (cohort descriptors) with (size, sha256)."""
        if self.format_version == 1:
            assert self.manifest1 is not None
            return {k: v for k, v in self.manifest1.items() if not k.startswith(L.SAMPLES + "/") and k != L.CATALOG}
        files = (self.pointer or {}).get("files", {})
        return {k: (int(e["size"]), str(e["sha256"])) for k, e in files.items()}

    # -- the catalog -----------------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return self.catalog["id"].to_list()

    sample_ids = ids

    def metadata(self, sample_id: str) -> Any:
        """Typed metadata of one sample (one small read)."""
        return self.sample(sample_id).metadata

    def __len__(self) -> int:
        return int(self.catalog.height)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._row_index()

    def _row_index(self) -> dict[str, int]:
        """Row position of each id (built once: rows are materialised one at a time, when asked for)."""
        if self._rows is None:
            self._rows = {sid: i for i, sid in enumerate(self.catalog["id"].to_list())}
        return self._rows

    def row(self, sample_id: str) -> dict[str, Any]:
        """The catalog row of a sample."""
        try:
            i = self._row_index()[sample_id]
        except KeyError:
            raise StoreError(f"{self.url}: no sample {sample_id!r} in the catalog") from None
        return self.catalog.row(i, named=True)

    def select(self, where: Any = None, *, ids: list[str] | None = None, patch: str | None = None,
               element: str | None = None, variant: str | None = None) -> Root:
        """The same root (same pinned version) with its catalog narrowed: a filter (a polars expression, or a
        condition in :mod:`hestdata.store.query`'s language on the catalog's columns), ids (unknown ones are an error), samples holding a patch array,
        an element, or of a variant."""
        import polars as pl

        from hestdata.store.query import filter_frame

        cat = self.catalog
        if ids is not None:
            unknown = sorted(set(ids) - set(cat["id"].to_list()))
            if unknown:
                raise StoreError(f"{self.url}: unknown sample id(s) {unknown}")
            cat = cat.filter(pl.col("id").is_in(list(ids)))
        if where is not None:
            cat = filter_frame(cat, where, f"the catalog of {self.url}")
        if patch is not None or element is not None:
            from hestdata.store.catalog import ids_with

            cat = cat.filter(pl.col("id").is_in(ids_with(cat, patch=patch, element=element)))
        if variant is not None:
            cat = cat.filter(pl.col("variant").fill_null("spots") == variant) if self.format_version == 2 else \
                cat.filter(pl.col("id").is_in([s for s in cat["id"].to_list() if self.sample(s).variant == variant]))
        return replace(self, catalog=cat, _rows=None)

    def sample(self, sample_id: str) -> StoredSample:
        """One sample of the catalog (nothing is read until it is used)."""
        return StoredSample(self, sample_id, self.row(sample_id))

    def samples(self) -> list[StoredSample]:
        """Every sample of the (selected) catalog, in catalog order."""
        return [StoredSample(self, r["id"], r) for r in self.catalog.to_dicts()]

    # -- change detection ---------------------------------------------------------------------------------
    def current_version(self) -> int | str | None:
        """The version the root is at now (format 2: the pointer's version; format 1: the catalog's sha256)."""
        if self.format_version == 2:
            raw = self._read_opt(L.ROOT_POINTER)
            if raw is None:
                return None
            from hestdata.store.versions import parse_pointer

            return int(parse_pointer(raw, self.where(L.ROOT_POINTER))["version"])
        raw = self._read_opt(L.CATALOG)
        return None if raw is None else hashlib.sha256(raw).hexdigest()

    def pinned_version(self) -> int | str | None:
        if self.format_version == 2:
            return self.version
        assert self.manifest1 is not None
        return self.manifest1.get(L.CATALOG, (0, None))[1]

    def changed(self) -> bool:
        """Has the root moved on since it was opened (a publish, a push)?"""
        return self.current_version() != self.pinned_version()

    def reopen(self) -> Root:
        """The root at its current version (the same selection is not kept)."""
        return Root.open(self.url, self.storage_options)


MAX_PATCHES_PER_SAMPLE = 100_000_000  # ~10x a Visium HD sample's 2 µm bins


def check_patch_count(where: str, name: str, n: int, per_shard: int, n_files: Any) -> tuple[int, int]:
    """A patch array's declared (patches, patches per shard), refused when impossible: negative, above
    ``MAX_PATCHES_PER_SAMPLE``, or more shards than the sample has files (each shard is a file of its manifest)."""
    if n < 0 or per_shard < 1 or n > MAX_PATCHES_PER_SAMPLE:
        raise StoreError(f"{where}: patch array {name!r} declares {n:,} patches in shards of {per_shard:,} "
                         f"(at most {MAX_PATCHES_PER_SAMPLE:,} per sample): a corrupt or hostile catalog row")
    shards = -(-n // per_shard)
    if n_files is not None and int(n_files) > 0 and shards > int(n_files):
        raise StoreError(f"{where}: patch array {name!r} declares {n:,} patches = {shards:,} shards, but the sample "
                         f"has {int(n_files):,} files: a corrupt or hostile catalog row")
    return n, per_shard


@dataclass
class StoredSample:
    """One stored sample, read lazily: manifest, metadata, tables, patch arrays, image pyramid.

    Open through :meth:`Root.sample`, or :meth:`StoredSample.open` for a ``samples/<id>.zarr`` folder or URL on
    its own (then nothing pins it: no catalog row to check its manifest against)."""

    root: Root | None
    id: str
    row: dict[str, Any] | None = None
    fs: ProcessLocalFS = field(default=None, repr=False)  # type: ignore[assignment]
    path: str = ""  # the sample folder on fs
    _manifest: dict[str, tuple[int, str]] | None = field(default=None, repr=False)
    _doc: dict[str, Any] | None = field(default=None, repr=False)
    _meta: Any = field(default=None, repr=False)
    _raw_doc: bytes | None = field(default=None, repr=False)
    _zroot: Any = field(default=None, repr=False)  # (pid, group): an fsspec store is bound to its process's loop
    _names: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.root is not None:
            self.fs = self.root.fs
            self.path = join(self.root.base, L.sample_relpath(self.id))

    @classmethod
    def open(cls, source: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> StoredSample:
        """A sample folder (``…/samples/<id>.zarr``, local or a URL) on its own."""
        protocol, path = split_url(source)
        fs = ProcessLocalFS(protocol, dict(storage_options or {}))
        name = path.rstrip("/").rsplit("/", 1)[-1]
        sid = name[: -len(L.SAMPLE_SUFFIX)] if name.endswith(L.SAMPLE_SUFFIX) else name
        return cls(None, sid, None, fs, path.rstrip("/"))

    @classmethod
    def of(cls, sample: StoredSample | str | os.PathLike[str]) -> StoredSample:
        """``sample`` itself, or the sample folder it names opened on its own."""
        return sample if isinstance(sample, StoredSample) else cls.open(sample)

    def __getstate__(self) -> dict[str, Any]:  # shipped to DataLoader workers: small, no caches of bytes
        return {**self.__dict__, "_doc": None, "_meta": None, "_raw_doc": None, "_zroot": None, "_names": {}}

    # -- files -----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return to_url(self.fs.protocol, self.path) if not self.fs.is_local else self.path

    @property
    def local_path(self) -> Path:
        if not self.fs.is_local:
            raise StoreError(f"{self.url}: not a local sample")
        return Path(self.path)

    @property
    def format_version(self) -> int:
        if self.root is not None and self.root.format_version == 1:
            return 1
        v = (self.row or {}).get("format_version")
        return int(v) if v is not None else int(self.metadata.format_version)

    def _read_raw(self, rel: str) -> bytes:
        path = join(self.path, rel)
        try:
            if self.fs.is_local:
                with open(path, "rb") as fh:
                    return fh.read()
            return retry.cat_file(self.fs.get(), path)
        except FileNotFoundError:
            hint = f" (run `hestdata repair {self.root.base}`)" if self.root is not None and rel == "zarr.json" \
                and self.fs.is_local else ""
            raise StoreError(f"{path}: not found{hint}") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None

    def manifest(self) -> dict[str, tuple[int, str]]:
        """``{path inside the sample: (size, sha256)}``: format 2 from its ``manifest.json`` (checked against
        the catalog row's digest), format 1 from the root manifest."""
        if self._manifest is None:
            own = self.fs.is_local and os.path.isfile(join(self.path, L.SAMPLE_MANIFEST))
            if self.root is not None and self.root.format_version == 1 and not own:  # (own: upgraded already)
                prefix = L.sample_relpath(self.id) + "/"
                assert self.root.manifest1 is not None
                self._manifest = {k[len(prefix):]: v for k, v in self.root.manifest1.items() if k.startswith(prefix)}
            else:
                from hestdata.store.manifest import parse_sample_manifest

                data = self._read_raw(L.SAMPLE_MANIFEST)
                where = join(self.path, L.SAMPLE_MANIFEST)
                digest = (self.row or {}).get("sha256")
                if digest and hashlib.sha256(data).hexdigest() != digest:
                    raise IntegrityError(f"{where}: differs from the catalog version this reader opened (the sample "
                                         "changed under it, e.g. an overwrite or a push in progress); reopen the root")
                self._manifest = parse_sample_manifest(data, where, self.id)
        return self._manifest

    def digest(self, prefix: str) -> str:
        """sha256 over the manifest entries under ``prefix`` (a folder inside the sample, e.g. a patch array):
        equal digests, equal bytes — what caches derived from a part of a sample are keyed by."""
        files = self.manifest()
        lines = [f"{k}\t{files[k][0]}\t{files[k][1]}\n" for k in sorted(files) if k.startswith(prefix + "/")]
        if not lines:
            raise StoreError(f"{self.path}: no files under {prefix} in its manifest")
        return hashlib.sha256("".join(lines).encode()).hexdigest()

    def pinned(self) -> dict[str, tuple[int, str]] | None:
        """Remote samples: ``{absolute path: (size, sha256)}`` every fetched file is checked against (None for a
        local sample, read in place, or a sample opened without a root)."""
        if self.fs.is_local or self.root is None:
            return None
        return {join(self.path, rel): e for rel, e in self.manifest().items()}

    def read(self, rel: str) -> bytes:
        """A file of the sample, checked against the manifest when the sample is remote."""
        data = self._read_raw(rel)
        pin = self.pinned()
        if pin is not None:
            from hestdata.store.patches import check_pinned

            check_pinned(pin, join(self.path, rel), data)
        return data

    # -- metadata ----------------------------------------------------------------------------------------
    def doc(self) -> dict[str, Any]:
        """The root ``zarr.json`` (attributes and consolidated metadata), read once."""
        if self._doc is None:
            raw = self._raw_doc = self.read("zarr.json")
            try:
                self._doc = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise StoreError(f"{join(self.path, 'zarr.json')}: invalid JSON ({exc})") from exc
        return self._doc

    @property
    def attrs(self) -> dict[str, Any]:
        """The raw ``hestdata`` metadata of the root attributes."""
        meta = self.doc().get("attributes", {}).get(L.META_KEY)
        if meta is None:
            raise StoreError(f"{self.path}: no '{L.META_KEY}' metadata in the root attributes; not a hestdata sample")
        return meta

    @property
    def consolidated(self) -> dict[str, Any]:
        """Every node's metadata: zarr's consolidated metadata plus the arrays kept out of it because only
        hestdata decodes them (:mod:`hestdata.store.consolidated`)."""
        from hestdata.store.consolidated import merged

        return merged(self.doc())

    @property
    def metadata(self) -> Any:
        """The typed metadata (:class:`hestdata.metadata.SampleMetadata`); a newer format names the version
        to install."""
        if self._meta is None:
            from hestdata.metadata import parse_metadata

            self._meta = parse_metadata(self.attrs, join(self.path, "zarr.json"))
        return self._meta

    @property
    def variant(self) -> str:
        v = (self.row or {}).get("variant")
        return str(v) if v else L.variant_of(self.attrs)

    def patch_arrays(self) -> list[str]:
        if self.row is not None and self.row.get("patch_arrays") is not None:
            return list(self.row["patch_arrays"])
        return sorted(self.attrs.get("qc", {}).get("patches", {}))

    def patch_count(self, name: str) -> tuple[int, int]:
        """(patches, patches per shard) of a patch array, from the catalog row when it has them; declared sizes
        are checked before anything is allocated for them (:func:`check_patch_count`)."""
        r = self.row or {}
        names, counts, shards = r.get("patch_arrays"), r.get("patch_counts"), r.get("patch_shards")
        if names is not None and counts is not None and shards is not None and name in names:
            i = list(names).index(name)
            return check_patch_count(self.path, name, int(counts[i]), int(shards[i]), r.get("n_files"))
        info = self.patch_reader(name).info
        return check_patch_count(self.path, name, info.n_patches, info.shard_patches, None)

    # -- elements --------------------------------------------------------------------------------------------
    def group(self, *parts: str) -> Any:
        """The zarr group ``<sample>/<parts…>`` read-only (patch arrays decode: the JPEG codec is registered)."""
        import zarr

        import hestdata.store.codecs  # noqa: F401

        path = join(self.path, *parts) if parts else self.path
        try:
            if self.fs.is_local:
                return zarr.open_group(path, mode="r")
            root = self._remote_root()
            if parts and "/".join(parts).startswith(L.PATCH_GROUP):
                # JPEG patch arrays are kept out of the consolidated metadata (hestdata.store.consolidated):
                # open their group from its own zarr.json so its arrays are found
                from hestdata.store.consolidated import open_child

                return open_child(root, "/".join(parts))
            return root["/".join(parts)] if parts else root
        except (FileNotFoundError, KeyError):
            raise StoreError(f"{path}: not found in sample {self.id}") from None

    def _remote_root(self) -> Any:
        """Remote: the sample's root group, opened once from its consolidated metadata over a
        :class:`~hestdata.store.manifest_store.ManifestStore` (children open without a request)."""
        if self._zroot is None or self._zroot[0] != os.getpid():  # a forked worker opens its own
            import zarr
            from zarr.storage import FsspecStore

            from hestdata.store.manifest_store import ManifestStore

            self.doc()
            opts = fsspec_options(self.fs.protocol, self.fs.storage_options)
            inner = FsspecStore.from_url(to_url(self.fs.protocol, self.path), storage_options=opts or None,
                                         read_only=True)
            files = self.manifest() if self.root is not None or self._has_manifest() else None
            if files is None:  # a sample on its own without a manifest (format 1): plain fsspec
                self._zroot = (os.getpid(), zarr.open_group(inner, mode="r"))
            else:
                store = ManifestStore(inner, files, self.path, {"zarr.json": self._raw_doc or self.read("zarr.json")})
                self._zroot = (os.getpid(), zarr.open_group(store, mode="r", use_consolidated=True))
        return self._zroot[1]

    def _has_manifest(self) -> bool:
        try:
            self.manifest()
            return True
        except StoreError:
            return False

    def has(self, *parts: str) -> bool:
        """Does the sample store this element (per its consolidated metadata)?"""
        return "/".join(parts) in self.consolidated

    def table(self, name: str = L.TABLE) -> Any:
        """The zarr group of ``tables/<name>`` (read with ``anndata.io.read_elem``)."""
        if not self.has("tables", name):
            raise StoreError(f"{self.path}: no table {name!r}")
        return self.group("tables", name)

    def table_names(self, name: str = L.TABLE) -> tuple[list[str], Any]:
        """(var names, obs names) of a table (read once: the two index columns only, without anndata)."""
        from hestdata.store.elements import read_index

        if name not in self._names:
            g = self.table(name)
            self._names[name] = (read_index(g["var"]).tolist(), read_index(g["obs"]))
        return self._names[name]

    def read_table(self, name: str = L.TABLE) -> Any:
        """A table as an AnnData."""
        from anndata.io import read_elem

        return read_elem(self.table(name))

    def patch_group(self, name: str) -> Any:
        """The zarr group ``hestdata/patches/<name>`` (arrays ``images``, ``obs_index``, ``centers_um``)."""
        if not self.has(L.PATCH_GROUP, name):
            raise StoreError(f"{self.path}: no patch array {name!r}; available: {self.patch_arrays()}")
        return self.group(L.PATCH_GROUP, name)

    def patches(self, name: str) -> Any:
        """The patch array ``name`` (e.g. ``224px_0.5um``): its zarr group, whose ``images[i]`` decodes patch ``i``
        (same as :meth:`patch_group`; :meth:`patch_reader` gives the raw JPEG bytes)."""
        return self.patch_group(name)

    def profile(self) -> tuple[Any, list[str]] | None:
        """The slide-level profile (``hestdata/tables/slide_profile``): (values, gene names), or None when the sample has
        none."""
        import numpy as np
        from anndata.io import read_elem

        where = next((w for w in (L.SLIDE_TABLES, "tables") if self.has(w, L.PROFILE_TABLE)), None)
        if where is None:  # (``tables/`` in stores before 0.2.1)
            return None
        t = read_elem(self.group(where, L.PROFILE_TABLE))
        X = t.X.toarray() if hasattr(t.X, "toarray") else t.X
        return np.asarray(X, np.float64).ravel(), [str(v) for v in t.var_names]

    def patch_reader(self, name: str) -> Any:
        """The raw-bytes reader of a patch array (:class:`hestdata.store.patches.PatchArrayReader`), pinned."""
        from hestdata.store.patches import open_patch_reader

        return open_patch_reader(self.fs, self.path, name, self.consolidated, self.pinned())

    def patch_attrs(self, name: str) -> dict[str, Any]:
        return self.consolidated.get(f"{L.PATCH_GROUP}/{name}", {}).get("attributes", {})

    def image(self, name: str | None = None) -> Any:
        """The zarr group of the main image (``images/he``, or ``images/if`` for cells and channels) or of
        ``images/<name>``; its levels are ``s0, s1, …``."""
        image = name or L.VARIANT_IMAGE[self.variant]
        if not self.has("images", image):
            raise StoreError(f"{self.path}: no image {image!r}")
        return self.group("images", image)

    def open_spatialdata(self) -> Any:
        """The whole sample as a ``spatialdata.SpatialData`` (eager: not for DataLoader workers)."""
        import spatialdata

        import hestdata.store.codecs  # noqa: F401

        if not self.fs.is_local:
            raise StoreError(f"{self.url}: spatialdata reads local samples; download it first")
        return spatialdata.read_zarr(self.path)


def open_root(source: str | os.PathLike[str] | Root | None, storage_options: dict[str, Any] | None = None, *,
              version: int | None = None) -> Root:
    """Open a root by path, URL or remote name (:meth:`Root.open`): three small requests for a format-2 root."""
    return Root.open(source, storage_options, version=version)


def open_catalog(root: str | Path) -> Any:
    """The catalog of a root (local path, URL or remote name) as a polars DataFrame: its current version (empty,
    with the full schema, if nothing is published)."""
    return Root.open(root).catalog
