"""Loader throughput, side by side in one run (patches/s and bytes/patch).

    python benchmarks/loader.py [--epochs 2] [--batch-size 64]

Data: real tissue. The three her2st sections (../shared/data) are converted once into benchmarks/out/root with,
besides their spots, a dense 112 µm grid of patches over each section's tissue (so the root holds a few
thousand real H&E patches, 224 px at 0.5 µm/px, JPEG q90). Columns:

(a) bare libjpeg-turbo (simplejpeg) decode of the same JPEG bytes held in memory — the CPU ceiling, 1 core
(b) PatchDataset + make_loader, CPU decode, 0 / 1 / 2 workers, 50 genes (after one untimed warm-up epoch)
(c) naive zarr-python indexing, one call per patch
(d) the HEST-1k layout: an HDF5 of uint8 patches read in 128-patch slices with h5py
(e) (b) streamed from an S3-compatible server (moto) on 127.0.0.1 through s3fs, 1 / 2 workers
(f) GPU: raw batched nvJPEG decode vs the loader's GPU path, end to end to device tensors (needs CUDA)
(g) spatialdata's ImageTilesDataset serving 224 px tiles of the same spots from the same (her2st C2) sample
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks._her2st import DATA, build_root  # noqa: E402

OUT = REPO / "benchmarks" / "out"


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def bench_bare(raw: list[bytes]) -> float:
    import simplejpeg

    t = time.perf_counter()
    for b in raw:
        simplejpeg.decode_jpeg(b, colorspace="RGB")
    return rate(len(raw), time.perf_counter() - t)


def bench_loader(ds, workers: int, batch: int, epochs: int) -> float:
    import hestdata

    dl = hestdata.make_loader(ds, batch_size=batch, num_workers=workers, seed=0)
    for _ in dl:  # warm-up epoch, not timed: worker start, expression tables, shard indices
        pass
    t = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for b in dl:
            n += len(b["index"])
    return rate(n, time.perf_counter() - t)


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--quick", action="store_true",
                    help="one section, no dense grid, one epoch, into a temporary root (the test that keeps this "
                         "script from rotting)")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for the root and the HDF5 copy")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    import h5py
    import torch
    import zarr

    import hestdata
    from hestdata.store.codecs import decode_jpeg

    if args.quick:
        args.epochs = 1
    root = build_root(args.out / "root", ["C2"] if args.quick else None, grid=not args.quick)
    ds = hestdata.PatchDataset(root, decode="cpu")
    genes = ds.genes[:50]
    ds = hestdata.PatchDataset(root, decode="cpu", genes=genes)
    n = len(ds)
    raw = [b for s in ds.samples for b in s.reader.read(np.arange(s.reader.info.n_patches))]
    jpeg_bytes = sum(len(b) for b in raw)
    rows: list[tuple[str, float, str]] = []
    a = bench_bare(raw)
    rows.append(("(a) bare simplejpeg decode, in memory", a, f"{jpeg_bytes / n / 1024:.1f} KiB"))
    for w in (0, 1, 2):
        rows.append((f"(b) PatchDataset+make_loader cpu, {w} workers", bench_loader(ds, w, args.batch_size, args.epochs), ""))

    # (c) zarr-python, one indexing call per patch
    order = np.random.default_rng(0).permutation(n)[:600]
    arrays = [zarr.open_array(f"{s.path}/hestdata/patches/224px_0.5um/images", mode="r") for s in ds.samples]
    t = time.perf_counter()
    for i in order:
        s, j = ds.locate(int(i))
        arrays[s][j]
    c = rate(len(order), time.perf_counter() - t)
    rows.append(("(c) zarr-python z[i] per patch", c, ""))

    # (d) HEST-1k layout
    h5 = args.out / "hest_layout.h5"
    if not h5.exists():
        with h5py.File(h5, "w") as f:
            d = f.create_dataset("img", shape=(n, 224, 224, 3), dtype="uint8", chunks=(1, 224, 224, 3))
            for k in range(0, n, 256):
                d[k:k + 256] = np.stack([decode_jpeg(b) for b in raw[k:k + 256]])
    t = time.perf_counter()
    for _ in range(args.epochs):
        with h5py.File(h5, "r") as f:
            d = f["img"]
            for k in range(0, n, 128):
                torch.from_numpy(d[k:k + 128])
    dd = rate(n * args.epochs, time.perf_counter() - t)
    h5_bytes = h5.stat().st_size
    rows.append(("(d) HEST-1k h5, 128-patch slices", dd, f"{h5_bytes / n / 1024:.1f} KiB"))

    # (e) loopback S3
    e_rates = bench_s3(root, genes, args)
    rows += e_rates

    # (f) GPU
    if torch.cuda.is_available():
        rows += bench_gpu(root, genes, raw, args)
    else:
        rows.append(("(f) GPU nvJPEG", float("nan"), "no CUDA here"))

    # (g) spatialdata ImageTilesDataset
    rows.append(bench_spatialdata(root, 12 if args.quick else 120))

    b1 = dict((r[0], r[1]) for r in rows)
    name_b1 = "(b) PatchDataset+make_loader cpu, 1 workers"
    print(f"{n} patches (224 px, 0.5 µm/px) from {len(ds.samples)} samples; batch {args.batch_size}; "
          f"{os.cpu_count()} CPU cores; torch {torch.__version__}")
    print(f"{'path':<50}{'patches/s':>12}  note")
    for name, r, note in rows:
        print(f"{name:<50}{r:>12,.0f}  {note}")
    print()
    print(f"(b, 1 worker) / (a)   = {b1[name_b1] / a:.2f}   (target >= 0.8)")
    print(f"(b, 1 worker) / (c)   = {b1[name_b1] / c:.1f}   (target >= 10)")
    g = [r for r in rows if r[0].startswith("(g)")][0][1]
    print(f"(b, 1 worker) / (g)   = {b1[name_b1] / g:.1f}   (target >= 20)")
    print(f"bytes/patch ours / (d) = {jpeg_bytes / h5_bytes:.3f}   (target <= 0.2)")
    e1 = [r for r in rows if r[0].startswith("(e)") and "1 workers" in r[0]][0][1]
    print(f"(e, 1 worker) / (b, 1 worker) = {e1 / b1[name_b1]:.2f}   (target >= 0.5)")
    return b1


def bench_s3(root: Path, genes: list[str], args: argparse.Namespace) -> list[tuple[str, float, str]]:
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    import hestdata

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        opts = {"key": "bench", "secret": "bench", "endpoint_url": url, "client_kwargs": {"region_name": "us-east-1"}}
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket="bench")
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
        for p in root.rglob("*"):
            if p.is_file() and "/images/he/" not in p.as_posix():  # the loader never reads the pyramid
                fs.put_file(str(p), f"bench/root/{p.relative_to(root).as_posix()}")
        ds = hestdata.PatchDataset("s3://bench/root", decode="cpu", genes=genes, storage_options=opts)
        return [(f"(e) same from loopback S3 (moto), {w} workers", bench_loader(ds, w, args.batch_size, args.epochs), "")
                for w in (1, 2)]
    finally:
        server.stop()


def bench_gpu(root: Path, genes: list[str], raw: list[bytes], args: argparse.Namespace) -> list[tuple[str, float, str]]:
    import torch
    from torchvision.io import decode_jpeg

    import hestdata

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
    bs = 256
    decode_jpeg(tensors[:bs], device=dev)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.epochs):
        for k in range(0, len(tensors), bs):
            decode_jpeg(tensors[k:k + bs], device=dev)
        torch.cuda.synchronize()
    raw_rate = rate(len(tensors) * args.epochs, time.perf_counter() - t)
    out = [(f"(f) raw batched nvJPEG ({name})", raw_rate, f"batch {bs}")]
    ds = hestdata.PatchDataset(root, decode="gpu", genes=genes)
    for w in (2, 4, 8):
        out.append((f"(f) loader GPU path, {w} workers ({name})", bench_loader(ds, w, bs, args.epochs), f"batch {bs}"))
    return out


def bench_spatialdata(root: Path, n_tiles: int) -> tuple[str, float, str]:
    import spatialdata
    from spatialdata.dataloader import ImageTilesDataset

    sdata = spatialdata.read_zarr(root / "samples" / "her2st_C2.zarr")
    tiles = ImageTilesDataset(sdata, regions_to_images={"spots": "he"}, regions_to_coordinate_systems={"spots": "global"},
                              tile_dim_in_units=112.0, rasterize=True, rasterize_kwargs={"target_width": 224},
                              return_annotations="x_um", table_name="expression")
    k = min(len(tiles), n_tiles)
    tiles[0]
    t = time.perf_counter()
    for i in range(k):
        tiles[i]
    return ("(g) spatialdata ImageTilesDataset (her2st C2)", rate(k, time.perf_counter() - t), f"{k} tiles")


if __name__ == "__main__":
    main()
