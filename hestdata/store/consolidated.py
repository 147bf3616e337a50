"""A sample's consolidated metadata, kept openable by zarr and spatialdata without hestdata installed.

zarr parses every array listed in a group's consolidated metadata when the group is opened, and an array whose
codecs it does not know (our ``hestdata.jpeg``) makes that fail with ``UnknownCodecError`` — so a plain
``spatialdata.read_zarr`` of a sample with JPEG patch arrays would fail for anyone without hestdata. The
metadata of such arrays is therefore moved out of ``consolidated_metadata`` into the root attribute
:data:`PRIVATE_KEY` (``{path inside the sample: the array's zarr.json}``): zarr and spatialdata never see it,
the array's own ``zarr.json`` stays where zarr expects it (opened directly, it decodes once hestdata is
installed), and hestdata's readers get the whole picture from the one root document (:func:`merged`), with no
extra request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hestdata.store.codecs import CODEC_NAME

PRIVATE_KEY = "hestdata_arrays"  # root attribute: metadata of arrays whose codecs only hestdata knows


def needs_hestdata(meta: dict[str, Any]) -> bool:
    """Does this node's metadata name a codec only hestdata provides (at any depth, e.g. inside sharding)?"""
    def walk(x: Any) -> bool:
        if isinstance(x, dict):
            return x.get("name") == CODEC_NAME or any(walk(v) for v in x.values())
        if isinstance(x, list):
            return any(walk(v) for v in x)
        return False

    return meta.get("node_type") == "array" and walk(meta.get("codecs", []))


def split_private(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (a root ``zarr.json``) with every hestdata-codec array moved from its consolidated metadata into
    the :data:`PRIVATE_KEY` attribute (in place; returned for chaining). Idempotent."""
    cons = doc.get("consolidated_metadata", {}).get("metadata")
    if not isinstance(cons, dict):
        return doc
    private = {k: v for k, v in cons.items() if isinstance(v, dict) and needs_hestdata(v)}
    for k in private:
        del cons[k]
    if private:
        attrs = doc.setdefault("attributes", {})
        attrs[PRIVATE_KEY] = {**attrs.get(PRIVATE_KEY, {}), **private}
    return doc


def merged(doc: dict[str, Any]) -> dict[str, Any]:
    """Every node of the sample hestdata knows of: the consolidated metadata plus the private arrays (older
    samples, written before the split, hold everything in the consolidated metadata)."""
    cons = doc.get("consolidated_metadata", {}).get("metadata", {}) or {}
    private = doc.get("attributes", {}).get(PRIVATE_KEY) or {}
    return {**cons, **private} if private else cons


def open_child(group: Any, path: str) -> Any:
    """The group ``path`` below the zarr group ``group``, opened from its own ``zarr.json`` rather than from the
    root's consolidated metadata (which leaves out the arrays only hestdata decodes)."""
    import zarr

    full = "/".join(p for p in (group.path, path) if p)
    try:
        return zarr.open_group(group.store, path=full, mode="r", use_consolidated=False)
    except FileNotFoundError as exc:
        raise KeyError(path) from exc


def drop(doc: dict[str, Any], keys: list[str]) -> None:
    """Remove nodes from both halves (a partial download leaving elements out)."""
    cons = doc.get("consolidated_metadata", {}).get("metadata", {})
    private = doc.get("attributes", {}).get(PRIVATE_KEY, {})
    for k in keys:
        cons.pop(k, None)
        private.pop(k, None)


def is_split(doc: dict[str, Any]) -> bool:
    """Can zarr open this document's consolidated metadata without hestdata?"""
    cons = doc.get("consolidated_metadata", {}).get("metadata", {}) or {}
    return not any(isinstance(v, dict) and needs_hestdata(v) for v in cons.values())


def split_file(zarr_json: Path) -> bool:
    """Rewrite a sample's root ``zarr.json`` split (atomically); False when it already was."""
    doc = json.loads(zarr_json.read_text())
    if is_split(doc):
        return False
    tmp = zarr_json.with_name(zarr_json.name + ".tmp")
    tmp.write_text(json.dumps(split_private(doc), indent=2))
    tmp.replace(zarr_json)
    return True
