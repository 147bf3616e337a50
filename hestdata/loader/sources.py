"""Which samples a dataset covers: one sample, a whole root, or a catalog query — local or any fsspec URL."""

from __future__ import annotations

import os
from typing import Any

from hestdata.errors import StoreError
from hestdata.io.fs import ProcessLocalFS, join, split_url
from hestdata.store import layout as L


def _exists(fs: ProcessLocalFS, path: str) -> bool:
    return os.path.exists(path) if fs.is_local else bool(fs.get().exists(path))


def _pin_manifest(fs: ProcessLocalFS, root: str) -> dict[str, tuple[int, str]] | None:
    """Remote roots: the manifest as it is now (path -> (size, sha256)); readers check what they fetch against it
    so that a dataset never mixes two versions of a root. Local roots are read in place (None)."""
    import json

    if fs.is_local:
        return None
    try:
        doc = json.loads(fs.get().cat_file(join(root, L.MANIFEST)))
        return {join(root, rel): (int(e["size"]), str(e["sha256"])) for rel, e in doc["files"].items()}
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None  # a root without a manifest (written by hand): nothing to pin


def resolve_samples(source: str | os.PathLike[str], query: Any = None, storage_options: dict[str, Any] | None = None,
                    block_cache_dir: str | None = None
                    ) -> tuple[ProcessLocalFS, list[str], dict[str, tuple[int, str]] | None]:
    """The filesystem handle, the sample paths (``…/samples/<id>.zarr``) selected by ``source``/``query``, and
    (remote roots) the manifest the dataset is pinned to.

    ``source`` is a sample folder or a root; ``query`` a polars expression over the root's catalog.
    """
    protocol, path = split_url(source)
    fs = ProcessLocalFS(protocol, dict(storage_options or {}), block_cache_dir)
    if path.endswith(L.SAMPLE_SUFFIX) or (_exists(fs, join(path, "zarr.json")) and not _exists(fs, join(path, L.CATALOG))):
        if query is not None:
            raise StoreError(f"{source}: a query needs a root (with {L.CATALOG}), not a single sample")
        return fs, [path], None
    cat_path = join(path, L.CATALOG)
    if not _exists(fs, cat_path):
        raise StoreError(f"{source}: neither a sample nor a root (no {L.CATALOG})")
    from hestdata.store.catalog import parse_catalog

    raw = open(cat_path, "rb").read() if fs.is_local else fs.get().cat_file(cat_path)
    cat = parse_catalog(raw, cat_path)
    if query is not None:
        try:
            cat = cat.filter(query)
        except Exception as exc:
            raise StoreError(f"{source}: catalog query failed ({type(exc).__name__}: {exc})") from exc
    if cat.height == 0:
        raise StoreError(f"{source}: no sample matches" + ("" if query is None else f" the query {query}"))
    rels = cat.sort("id")["path"].to_list()
    return fs, [join(path, r) for r in rels], _pin_manifest(fs, path)
