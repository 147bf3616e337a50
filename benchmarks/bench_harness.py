"""Embedding extraction throughput vs the bare encoder forward on the same batches held in memory.

    python benchmarks/bench_harness.py [--encoder random-vit-s16] [--batch-size 32] [--workers 1]

Uses the her2st root built by ``benchmarks/her2st_benchmark.py`` (built here if missing). "bare" = the encoder
called on pre-decoded uint8 batches already in memory (the ceiling); "extraction" = ``embed_samples`` (loader
reading and decoding JPEGs from the store, encoder, writing the cache), with the cache in a fresh folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.her2st_benchmark import ROOT, build  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    """Print the rates; returns extraction / bare."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="random-vit-s16")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--root", type=Path, default=ROOT, help="a root holding the three her2st sections (built if absent)")
    args = ap.parse_args(argv)
    import torch

    from hestdata.bench.embed import embed_samples
    from hestdata.bench.encoders import load_encoder
    from hestdata.loader import PatchDataset
    from hestdata.loader.dataset import as_tensors

    root = build(args.root)
    ids = ["her2st_B4", "her2st_C2", "her2st_C3"]
    enc = load_encoder(args.encoder)
    batches = []
    for sid in ids:
        ds = PatchDataset(root / "samples" / f"{sid}.zarr", genes=[], decode="cpu")
        for a in range(0, len(ds), args.batch_size):
            batches.append(as_tensors(ds.load_block(np.arange(a, min(a + args.batch_size, len(ds)))))["image"])
    n = sum(len(b) for b in batches)
    enc(batches[0])  # warm-up
    t = time.perf_counter()
    for b in batches:
        enc(b)
    bare = n / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        embed_samples(root, enc, ids, batch_size=args.batch_size, num_workers=args.workers, cache_dir=cache)
        extraction = n / (time.perf_counter() - t)
    print(f"{args.encoder}, {n} her2st patches, batch {args.batch_size}, {args.workers} loader worker(s), "
          f"{torch.get_num_threads()} torch threads, device cpu")
    print(f"bare encoder forward (batches in memory): {bare:8.1f} patches/s")
    print(f"extraction (loader + encoder + cache):   {extraction:8.1f} patches/s")
    print(f"extraction / bare = {extraction / bare:.2f}   (target >= 0.9)")
    return extraction / bare


if __name__ == "__main__":
    main()
