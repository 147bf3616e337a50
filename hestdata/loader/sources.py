"""Which samples a dataset covers: one sample, a whole root, or a catalog query — local or any fsspec URL —
always through the store's read door (``store.root``)."""

from __future__ import annotations

import os
from typing import Any

from hestdata.errors import StoreError
from hestdata.io.fs import ProcessLocalFS, join, split_url
from hestdata.store import layout as L
from hestdata.store.root import Root, StoredSample


def _is_sample(source: str | os.PathLike[str], storage_options: dict[str, Any]) -> bool:
    """A sample folder (named ``*.zarr``, or a local folder with a zarr.json and no root files); remote roots
    are tried as roots first (no probing request)."""
    protocol, path = split_url(source)
    if path.endswith(L.SAMPLE_SUFFIX):
        return True
    if protocol != "file":
        return False
    return os.path.exists(join(path, "zarr.json")) and not any(
        os.path.exists(join(path, f)) for f in (L.ROOT_POINTER, L.CATALOG))


def resolve_samples(source: Any, query: Any = None, storage_options: dict[str, Any] | None = None,
                    block_cache_dir: str | None = None) -> tuple[Root | None, list[StoredSample]]:
    """The root (None for a sample on its own) and the samples selected by ``source`` and ``query``.

    ``source`` is a :class:`~hestdata.store.root.Root`, a :class:`~hestdata.store.root.StoredSample`, or the path
    or URL of a root or of a ``samples/<id>.zarr`` folder; ``query`` a condition on the root's catalog."""
    opts = dict(storage_options or {})
    if isinstance(source, StoredSample) or (not isinstance(source, Root) and _is_sample(source, opts)):
        if query is not None:
            raise StoreError(f"{source}: a query needs a root, not a single sample")
        sample = source if isinstance(source, StoredSample) else StoredSample.open(source, opts)
        if block_cache_dir and not isinstance(source, StoredSample):
            sample.fs = ProcessLocalFS(sample.fs.protocol, opts, block_cache_dir)
        return None, [sample]
    try:
        root = Root.open(source, opts, block_cache_dir=block_cache_dir)
    except StoreError:
        protocol, path = split_url(source)
        if protocol == "file" or not ProcessLocalFS(protocol, opts).get().exists(join(path, "zarr.json")):
            raise
        if query is not None:  # a remote sample folder not named *.zarr
            raise StoreError(f"{source}: a query needs a root, not a single sample") from None
        return None, [StoredSample.open(source, opts)]
    selected = root.select(query) if query is not None else root
    if len(selected) == 0:
        raise StoreError(f"{root.url}: no sample matches" + ("" if query is None else f" the query {query}"))
    return selected, selected.samples()
