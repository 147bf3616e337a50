"""Open a stored Zarr group read-only, locally or through any fsspec filesystem."""

from __future__ import annotations

from typing import Any

from hestdata.io.fs import ProcessLocalFS, join, split_url, to_url
from hestdata.store import layout as L


def open_group(fs: ProcessLocalFS, path: str) -> Any:
    """The Zarr group at ``path`` on ``fs`` (a local folder, or a URL through fsspec), read-only."""
    import zarr

    if fs.is_local:
        return zarr.open_group(path, mode="r")
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(to_url(fs.protocol, path), storage_options=fs.storage_options or None,
                                 read_only=True)
    return zarr.open_group(store, mode="r")


def open_sample_group(root_url: str, sample_id: str, *parts: str, storage_options: dict[str, Any] | None = None
                      ) -> Any:
    """The group ``samples/<id>.zarr/<parts…>`` of the root at ``root_url`` (a folder or a URL), read-only."""
    protocol, base = split_url(root_url)
    return open_group(ProcessLocalFS(protocol, dict(storage_options or {})),
                      join(base, L.sample_relpath(sample_id), *parts))
