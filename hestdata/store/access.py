"""Open a stored Zarr group read-only, locally or through any fsspec filesystem."""

from __future__ import annotations

from typing import Any

from hestdata.io.fs import ProcessLocalFS, to_url


def open_group(fs: ProcessLocalFS, path: str) -> Any:
    """The Zarr group at ``path`` on ``fs`` (a local folder, or a URL through fsspec), read-only."""
    import zarr

    if fs.is_local:
        return zarr.open_group(path, mode="r")
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(to_url(fs.protocol, path), storage_options=fs.storage_options or None,
                                 read_only=True)
    return zarr.open_group(store, mode="r")
