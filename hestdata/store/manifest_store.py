"""A read-only zarr store for a remote sample, answered from the sample's manifest.

zarr-python opening a group over fsspec probes keys that do not exist (Zarr v2's ``.zattrs``, ``.zgroup``,
``.zmetadata``), lists prefixes, and fsspec's S3 ``cat_file`` asks for a file's size before reading it: opening one
table column cost four requests. The manifest already says which files a sample has and how big each is, so this
store answers ``exists``/``list`` from it without a request, fetches a whole file as one ranged GET of its known
size, and checks what arrives against the manifest's sha256 — a reader never mixes files of two versions of a
sample. Ranged reads (shard indices, chunks inside shards) are passed through unverified (a range has no digest;
their shard's index carries a CRC32C that zarr checks).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import ByteRequest, RangeByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype

from hestdata.errors import IntegrityError


class ManifestStore(Store):
    """``inner`` (a read-only ``zarr.storage.FsspecStore`` at the sample folder) limited to, and checked
    against, ``files`` (``{key: (size, sha256)}``); ``prefetched`` holds bytes already read (its zarr.json)."""

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(self, inner: Any, files: dict[str, tuple[int, str]], where: str,
                 prefetched: dict[str, bytes] | None = None) -> None:
        super().__init__(read_only=True)
        self.inner, self.files, self.where = inner, files, where
        self.prefetched = dict(prefetched or {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ManifestStore) and other.inner == self.inner and other.files == self.files

    def __repr__(self) -> str:
        return f"ManifestStore({self.where!r}, {len(self.files)} files)"

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
                  ) -> Buffer | None:
        entry = self.files.get(key)
        if entry is None:
            return None
        if byte_range is not None:
            return await self.inner.get(key, prototype, byte_range)
        size, sha = entry
        data = self.prefetched.get(key)
        if data is None:
            if size == 0:
                data = b""
            else:
                buf = await self.inner.get(key, prototype, RangeByteRequest(0, size))
                data = b"" if buf is None else buf.to_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            raise IntegrityError(f"{self.where}/{key}: differs from the sample's manifest (the sample changed under "
                                 "this reader, e.g. a push in progress); reopen the root")
        return prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        import asyncio

        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        return key in self.files

    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError(f"{self.where}: read-only")

    async def delete(self, key: str) -> None:
        raise PermissionError(f"{self.where}: read-only")

    async def list(self) -> AsyncIterator[str]:
        for k in sorted(self.files):
            yield k

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for k in sorted(self.files):
            if k.startswith(prefix):
                yield k

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        p = prefix.rstrip("/") + "/" if prefix else ""
        seen: set[str] = set()
        for k in sorted(self.files):
            if k.startswith(p):
                head = k[len(p):].split("/", 1)[0]
                if head not in seen:
                    seen.add(head)
                    yield head
