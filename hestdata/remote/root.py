"""``hestdata.open_root(url)``: a remote (or local) root's catalog and manifest, without downloading samples."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from hestdata.io.fs import ProcessLocalFS, join, split_url
from hestdata.remote.config import resolve_remote
from hestdata.store import layout as L


@dataclass
class Root:
    """A root opened for reading: ``catalog`` (polars), ``manifest`` (dict), ``dataset(...)`` to stream pairs."""

    url: str
    storage_options: dict[str, Any]
    catalog: Any
    manifest: dict[str, Any]

    @property
    def sample_ids(self) -> list[str]:
        return self.catalog["id"].to_list()

    def dataset(self, **kwargs: Any) -> Any:
        """A :class:`hestdata.PatchDataset` streaming this root (keyword arguments as PatchDataset's)."""
        from hestdata.loader.dataset import PatchDataset

        return PatchDataset(self.url, storage_options=self.storage_options, **kwargs)

    def metadata(self, sample_id: str) -> Any:
        """Typed metadata of one sample (one small read)."""
        from hestdata.metadata import SampleMetadata
        from hestdata.store.patches import read_root_metadata

        protocol, base = split_url(self.url)
        doc = read_root_metadata(ProcessLocalFS(protocol, self.storage_options), join(base, L.sample_relpath(sample_id)))
        return SampleMetadata.model_validate(doc["attributes"][L.META_KEY])


def open_root(source: str | os.PathLike[str] | None, storage_options: dict[str, Any] | None = None) -> Root:
    """Open a root by URL, path or configured remote name; reads only ``catalog.parquet`` and ``manifest.json``."""
    from hestdata.store.catalog import parse_catalog

    url, opts = resolve_remote(source, storage_options)
    protocol, base = split_url(url)
    fs = ProcessLocalFS(protocol, opts)

    def read(rel: str) -> bytes:
        path = join(base, rel)
        if fs.is_local:
            with open(path, "rb") as fh:
                return fh.read()
        return fs.get().cat_file(path)

    catalog = parse_catalog(read(L.CATALOG), join(base, L.CATALOG))
    manifest = json.loads(read(L.MANIFEST))
    return Root(url, opts, catalog, manifest)
