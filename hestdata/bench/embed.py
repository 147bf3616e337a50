"""Embedding extraction with a Zarr cache keyed by (encoder fingerprint, patch-array checksum).

The loader feeds uint8 batches (decoded on the GPU when one is used) to the encoder under ``inference_mode``
and autocast; each sample's embeddings are written to ``<cache>/<fingerprint[:16]>/<sample>-<patch>-<digest[:16]>.zarr``
through a temporary folder and a rename, so a rerun reuses finished samples and an interrupted run resumes with
the sample it was working on.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.bench.encoders import Encoder
from hestdata.io import progress
from hestdata.store import layout as L
from hestdata.units import DEFAULT_PATCH


def default_cache_dir(root: str | os.PathLike[str]) -> Path:
    s = os.fspath(root)
    if "://" not in s:
        return Path(s) / "embeddings"
    return Path(os.environ.get("HESTDATA_CACHE", Path.home() / ".cache" / "hestdata")) / "embeddings"


def patch_digest(sample: Any, patch: str) -> str:
    """Checksum of one sample's patch array (a :class:`hestdata.store.root.StoredSample`), from its manifest."""
    return sample.digest(f"{L.PATCH_GROUP}/{patch}")


def _write(base: Path, key: Path, emb: np.ndarray, encoder: Encoder, sid: str, patch: str) -> None:
    import zarr

    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{uuid.uuid4().hex[:8]}.zarr"
    try:
        z = zarr.create_array(str(tmp), shape=emb.shape, dtype="float32", chunks=(max(1, min(4096, len(emb))), emb.shape[1]))
        z[:] = emb
        z.attrs.update({"encoder": encoder.name, "fingerprint": encoder.fingerprint, "sample": sid, "patch": patch})
        os.replace(tmp, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embed_samples(root: Any, encoder: Encoder, sample_ids: list[str], *, patch: str = DEFAULT_PATCH.name,
                  batch_size: int = 64, num_workers: int = 0, device: Any = None, cache_dir: str | Path | None = None,
                  storage_options: dict[str, Any] | None = None,
                  on_sample: Callable[[str, bool], None] | None = None) -> dict[str, np.ndarray]:
    """(n_patches, D) float32 embeddings per sample, in patch order; cached."""
    import torch
    import zarr

    from hestdata.loader import PatchDataset, make_loader
    from hestdata.store.root import Root

    r = Root.open(root, storage_options)
    cache = Path(cache_dir) if cache_dir else default_cache_dir(r.url)
    base = cache / encoder.fingerprint[:16]
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder.to(dev)
    out: dict[str, np.ndarray] = {}
    keys = {sid: base / f"{sid}-{patch}-{patch_digest(r.sample(sid), patch)[:16]}.zarr" for sid in sample_ids}
    todo = []
    for sid in sample_ids:
        if keys[sid].exists():
            out[sid] = zarr.open_array(str(keys[sid]), mode="r")[:]
            if on_sample:
                on_sample(sid, True)
        else:
            todo.append(sid)
    if not todo:
        return out

    # one dataset and one loader for every sample still to embed (no per-sample worker start-up); each sample's
    # embeddings are written as soon as its last patch is through, so an interrupted run keeps finished samples
    ds = PatchDataset(r.select(ids=todo), genes=[], patch=patch, decode="gpu" if dev.type == "cuda" else "cpu")
    loader = make_loader(ds, batch_size=batch_size, num_workers=num_workers, shuffle=False, rank=0, world_size=1,
                         device=dev if dev.type == "cuda" else None)
    spans = [(s.sample_id, s.first, s.first + s.n_patches) for s in ds.samples]
    emb: np.ndarray | None = None
    done = 0
    nxt = 0
    for batch in progress.track(loader, f"embed {encoder.name} ({len(todo)} sample(s))", len(ds),
                                weight=lambda b: len(b["index"])):
        z = encoder(batch["image"].to(dev, non_blocking=True)).cpu().numpy()
        if emb is None:
            emb = np.zeros((len(ds), z.shape[1]), dtype=np.float32)
        idx = batch["index"].numpy()
        emb[idx] = z
        done = max(done, int(idx.max()) + 1)
        while nxt < len(spans) and spans[nxt][2] <= done:
            sid, a, e = spans[nxt]
            out[sid] = emb[a:e].copy()
            _write(base, keys[sid], out[sid], encoder, sid, patch)
            if on_sample:
                on_sample(sid, False)
            nxt += 1
    return out
