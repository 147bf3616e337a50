"""hestdata's loader against the streaming libraries people pick instead: litdata, MosaicML streaming (MDS),
webdataset — the same patch bytes and target vectors in each format, side by side in one run.

    python benchmarks/loader_peers.py                         # 3 reps x {0,1,2} workers x {local, s3}
    python benchmarks/loader_peers.py --reps 1 --workers 0 --quick   # the test's size

Data: the real her2st patches of ``benchmarks/_her2st.py`` (224 px at 0.5 µm/px, JPEG q90) and, for each patch,
the 50-gene target vector hestdata's loader yields (log1p). The JPEG bytes and vectors are exported once and
written unchanged into a litdata dataset (``litdata.optimize``), MDS shards (``streaming.MDSWriter``) and
webdataset tars (``webdataset.ShardWriter``), about ``--shard-items`` (1,000) patches per shard everywhere, as
hestdata's patch arrays are. A loopback S3 server (moto, in this process) holds a copy of each.

Each run is a **fresh process** (``--child``): it imports its library, opens the data, iterates one epoch (the
*first epoch*, timed from the moment the parent started the process: interpreter, imports, open, worker start,
cold pass, with an empty cache directory for the peers that cache remote shards) and then a second, *warm*
epoch (patches/s). Every item is decoded with the same libjpeg-turbo call (simplejpeg), batched by 64 with
shuffling on; runs alternate between systems in a rotating order. Printed per (source, workers, system): min /
median / max over the reps, the 1-minute load average when each run started, and the ratios hestdata / best
peer. Peers that are not installed are skipped and named. Install them with ``pip install -e '.[bench-peers]'``
(or ``nox -s peers``: MosaicML streaming holds numpy below 2.2, so it gets its own environment).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PATCH = "224px_0.5um"
N_GENES = 50
BATCH = 64
SYSTEMS = ("hestdata", "litdata", "mds", "webdataset")
MODULE = {"hestdata": "hestdata", "litdata": "litdata", "mds": "streaming", "webdataset": "webdataset"}
BUCKET = "peers"


def installed(system: str) -> bool:
    return importlib.util.find_spec(MODULE[system]) is not None


# -- the data, exported once and written into each format ------------------------------------------------------
def export_pairs(root: Path, out: Path) -> dict[str, Any]:
    """JPEG bytes and target vectors of every patch of ``root`` as hestdata's loader yields them."""
    import hestdata

    ds = hestdata.PatchDataset(root, patch=PATCH, decode="cpu")
    genes = ds.genes[:N_GENES]
    ds = hestdata.PatchDataset(root, patch=PATCH, decode="cpu", genes=genes)
    jpegs: list[bytes] = []
    ys = []
    for s_no, s in enumerate(ds.samples):
        n = s.reader.info.n_patches
        jpegs += [bytes(b) for b in s.reader.read(np.arange(n))]
        first = int(ds._offsets[s_no])
        for a in range(0, n, 256):
            ys.append(ds.load_block(np.arange(first + a, first + min(n, a + 256)))["expression"])
    y = np.concatenate(ys).astype(np.float32)
    assert len(jpegs) == len(y) == len(ds)
    out.mkdir(parents=True, exist_ok=True)
    blob = b"".join(jpegs)
    offsets = np.cumsum([0] + [len(b) for b in jpegs])
    np.savez(out / "pairs.npz", offsets=offsets, y=y, blob=np.frombuffer(blob, np.uint8))
    return {"genes": list(genes), "n": len(jpegs), "jpeg_bytes": len(blob)}


def load_pairs(folder: Path) -> tuple[list[bytes], np.ndarray]:
    z = np.load(folder / "pairs.npz")
    blob, off = z["blob"].tobytes(), z["offsets"]
    return [blob[off[i]:off[i + 1]] for i in range(len(off) - 1)], z["y"]


def _lit_item(item: tuple[bytes, np.ndarray]) -> dict[str, Any]:  # litdata.optimize's function (pickled)
    return {"jpeg": item[0], "y": item[1]}


def write_litdata(folder: Path, out: Path, shard_items: int) -> None:
    import litdata

    jpegs, y = load_pairs(folder)
    litdata.optimize(fn=_lit_item, inputs=list(zip(jpegs, y, strict=True)), output_dir=str(out),
                     chunk_size=shard_items, num_workers=1, mode="overwrite", verbose=False)


def write_mds(folder: Path, out: Path, shard_items: int) -> None:
    from streaming import MDSWriter

    jpegs, y = load_pairs(folder)
    per_item = sum(len(b) for b in jpegs) / len(jpegs) + y.itemsize * y.shape[1] + 64
    with MDSWriter(out=str(out), columns={"jpeg": "bytes", "y": f"ndarray:float32:{N_GENES}"},
                   size_limit=int(per_item * shard_items)) as w:
        for b, v in zip(jpegs, y, strict=True):
            w.write({"jpeg": b, "y": v})


def write_webdataset(folder: Path, out: Path, shard_items: int) -> None:
    import webdataset as wds

    jpegs, y = load_pairs(folder)
    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=shard_items, verbose=0) as sink:
        for i, (b, v) in enumerate(zip(jpegs, y, strict=True)):
            buf = io.BytesIO()
            np.save(buf, v)
            sink.write({"__key__": f"{i:08d}", "jpg": b, "npy": buf.getvalue()})


WRITERS = {"litdata": write_litdata, "mds": write_mds, "webdataset": write_webdataset}


def folder_bytes(path: Path, skip_pyramids: bool = False) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")
               if p.is_file() and not (skip_pyramids and "/images/he/" in p.as_posix()))


# -- one run, in a fresh process ---------------------------------------------------------------------------------
def _decode(b: bytes) -> Any:
    import simplejpeg
    import torch

    return torch.from_numpy(simplejpeg.decode_jpeg(b, colorspace="RGB"))


def _hestdata_loader(spec: dict[str, Any], workers: int) -> Any:
    import hestdata

    ds = hestdata.PatchDataset(spec["url"], patch=PATCH, decode="cpu", genes=spec["genes"],
                               storage_options=spec.get("storage_options"))
    return hestdata.make_loader(ds, batch_size=BATCH, num_workers=workers, seed=0)


def _litdata_loader(spec: dict[str, Any], workers: int) -> Any:
    import litdata

    class Patches(litdata.StreamingDataset):
        def __getitem__(self, index: Any) -> dict[str, Any]:
            item = super().__getitem__(index)
            return {"image": _decode(item["jpeg"]), "y": item["y"]}

    kw: dict[str, Any] = {}
    if spec.get("remote"):
        from litdata.streaming import downloader

        # litdata builds its obstore client with fixed options that refuse http:// endpoints (a real bucket is
        # https); the loopback server is http, so allow it — nothing else of litdata's client changes
        downloader._OBSTORE_CLIENT_OPTIONS = {**downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": True}
        kw["storage_options"] = spec["litdata_options"]
        kw["cache_dir"] = spec["cache_dir"]
    ds = Patches(spec["url"], shuffle=True, seed=0, **kw)
    return litdata.StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers)


def _mds_loader(spec: dict[str, Any], workers: int) -> Any:
    from streaming import StreamingDataLoader, StreamingDataset

    class Patches(StreamingDataset):
        def __getitem__(self, index: int) -> dict[str, Any]:
            item = super().__getitem__(index)
            return {"image": _decode(item["jpeg"]), "y": item["y"]}

    if spec.get("remote"):
        ds = Patches(remote=spec["url"], local=spec["cache_dir"], shuffle=True, shuffle_seed=0, batch_size=BATCH)
    else:
        ds = Patches(local=spec["url"], shuffle=True, shuffle_seed=0, batch_size=BATCH)
    return StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers)


def _wds_loader(spec: dict[str, Any], workers: int) -> Any:
    import webdataset as wds

    def pair(sample: dict[str, Any]) -> dict[str, Any]:
        return {"image": _decode(sample["jpg"]), "y": np.load(io.BytesIO(sample["npy"]))}

    ds = (wds.WebDataset(spec["shards"], shardshuffle=len(spec["shards"]), seed=0, empty_check=False)
          .shuffle(1000).map(pair))
    return wds.WebLoader(ds, batch_size=BATCH, num_workers=workers)


LOADERS = {"hestdata": _hestdata_loader, "litdata": _litdata_loader, "mds": _mds_loader, "webdataset": _wds_loader}


def child(system: str, spec_json: str, workers: int, t_spawn: float) -> None:
    """One run: first epoch (from the parent's spawn time), then a warm epoch; prints one JSON line."""
    import torch

    spec = json.loads(spec_json)
    for k, v in spec.get("env", {}).items():
        os.environ[k] = v
    torch.set_num_threads(1)
    loader = LOADERS[system](spec, workers)

    def epoch() -> tuple[int, float]:
        t, n = time.perf_counter(), 0
        for b in loader:
            img = b["image"]
            n += int(img.shape[0])
        return n, time.perf_counter() - t

    n1, _ = epoch()
    first_s = time.time() - t_spawn
    n2, warm_s = epoch()
    print(json.dumps({"first_epoch_s": first_s, "warm_rate": n2 / warm_s, "n_first": n1, "n_warm": n2}))


# -- the parent: build, upload, alternate runs, report -----------------------------------------------------------
def _specs(work: Path, pairs: dict[str, Any], s3: Any, source: str, run_dir: Path) -> dict[str, dict[str, Any]]:
    genes = pairs["genes"]
    if source == "local":
        shards = sorted(str(p) for p in (work / "webdataset").glob("*.tar"))
        return {"hestdata": {"url": str(work / "root"), "genes": genes},
                "litdata": {"url": str(work / "litdata")},
                "mds": {"url": str(work / "mds")},
                "webdataset": {"shards": shards}}
    o = s3.options
    endpoint = o["endpoint_url"]
    env = {"AWS_ACCESS_KEY_ID": o["key"], "AWS_SECRET_ACCESS_KEY": o["secret"], "AWS_DEFAULT_REGION": "us-east-1",
           "S3_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL": endpoint}
    import boto3  # webdataset reads a bucket over HTTP: presigned GET URLs, as one shares a private bucket

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=o["key"],
                          aws_secret_access_key=o["secret"])
    shards = ["pipe:curl -s -f '" + client.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": f"webdataset/{p.name}"}, ExpiresIn=24 * 3600) + "'"
        for p in sorted((work / "webdataset").glob("*.tar"))]
    return {"hestdata": {"url": f"s3://{BUCKET}/root", "genes": genes, "storage_options": o, "remote": True},
            "litdata": {"url": f"s3://{BUCKET}/litdata", "remote": True, "cache_dir": str(run_dir / "lit"),
                        "litdata_options": {"endpoint_url": endpoint, "aws_access_key_id": o["key"],
                                            "aws_secret_access_key": o["secret"]}, "env": env},
            "mds": {"url": f"s3://{BUCKET}/mds", "remote": True, "cache_dir": str(run_dir / "mds"), "env": env},
            "webdataset": {"shards": shards, "remote": True}}


def run_one(system: str, spec: dict[str, Any], workers: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    t_spawn = time.time()
    r = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", system, json.dumps(spec), str(workers),
                        repr(t_spawn)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if r.returncode != 0:
        raise SystemExit(f"{system} ({workers} workers) failed:\n{r.stderr[-3000:]}")
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "load": load}


def build(work: Path, quick: bool, shard_items: int, systems: list[str]) -> dict[str, Any]:
    from benchmarks._her2st import build_root

    root = build_root(work / "root", ["C2"] if quick else None, grid=not quick)
    pairs = export_pairs(root, work / "pairs")
    sizes = {"hestdata": folder_bytes(root / "samples", skip_pyramids=True)}
    for system in systems:
        if system != "hestdata":
            dest = work / system
            shutil.rmtree(dest, ignore_errors=True)
            WRITERS[system](work / "pairs", dest, shard_items)
            sizes[system] = folder_bytes(dest)
    return {**pairs, "bytes": sizes}


def upload(work: Path, s3: Any, systems: list[str]) -> None:
    s3.bucket(BUCKET)
    fs = s3.fs()
    for system in systems:
        name = "root" if system == "hestdata" else system
        src = work / name
        for p in src.rglob("*"):
            if p.is_file() and "/images/he/" not in p.as_posix():  # no loader reads the pyramid
                fs.put_file(str(p), f"{BUCKET}/{name}/{p.relative_to(src).as_posix()}")


def measure(work: Path, pairs: dict[str, Any], systems: list[str], workers: list[int], sources: list[str],
            reps: int, s3: Any) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    out: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    k = 0
    for rep in range(reps):
        for source in sources:
            for w in workers:
                order = systems[k % len(systems):] + systems[:k % len(systems)]  # rotate who goes first
                k += 1
                for system in order:
                    run_dir = Path(tempfile.mkdtemp(dir=work, prefix="run-"))  # empty peer caches: a cold start
                    spec = _specs(work, pairs, s3, source, run_dir)[system]
                    res = run_one(system, spec, w)
                    shutil.rmtree(run_dir, ignore_errors=True)
                    if res["n_warm"] != pairs["n"]:
                        raise SystemExit(f"{system} yielded {res['n_warm']} of {pairs['n']} patches in an epoch")
                    out.setdefault((source, w, system), []).append(res)
                    print(f"  rep {rep} {source} {w}w {system:<10} first {res['first_epoch_s']:6.2f} s  warm "
                          f"{res['warm_rate']:7.0f}/s  load {res['load']:.2f}", flush=True)
    return out


def _mmm(v: list[float], fmt: str) -> str:
    return "/".join(format(x, fmt) for x in (min(v), statistics.median(v), max(v)))


def report(res: dict[tuple[str, int, str], list[dict[str, Any]]], pairs: dict[str, Any], systems: list[str]) -> str:
    lines = [f"{pairs['n']} patches, {pairs['jpeg_bytes'] / pairs['n'] / 1024:.1f} KiB JPEG each; batch {BATCH}; "
             f"{os.cpu_count()} cores",
             "bytes on disk: " + ", ".join(f"{s} {b / 1e6:.1f} MB" for s, b in pairs["bytes"].items()),
             f"{'source':<6} {'w':>2} {'system':<11} {'warm patches/s min/med/max':>28} {'first epoch s':>20} "
             f"{'load':>10}"]
    keys = sorted({(s, w) for s, w, _ in res})
    ratios = []
    for source, w in keys:
        for system in systems:
            r = res.get((source, w, system))
            if not r:
                continue
            lines.append(f"{source:<6} {w:>2} {system:<11} {_mmm([x['warm_rate'] for x in r], '.0f'):>28} "
                         f"{_mmm([x['first_epoch_s'] for x in r], '.1f'):>20} "
                         f"{_mmm([x['load'] for x in r], '.1f'):>10}")
        ours = res.get((source, w, "hestdata"))
        peers = {p: res[(source, w, p)] for p in systems if p != "hestdata" and (source, w, p) in res}
        if ours and peers:
            med = {p: statistics.median([x["warm_rate"] for x in v]) for p, v in peers.items()}
            first = {p: statistics.median([x["first_epoch_s"] for x in v]) for p, v in peers.items()}
            best_w, best_f = max(med, key=med.get), min(first, key=first.get)
            ow = statistics.median([x["warm_rate"] for x in ours])
            of = statistics.median([x["first_epoch_s"] for x in ours])
            ratios.append(f"{source:<6} {w} workers: warm {ow / med[best_w]:.2f}x {best_w} (goal >= 1.2), "
                          f"first epoch {of / first[best_f]:.2f}x {best_f} (goal <= 1.0)")
    return "\n".join([*lines, "hestdata / best peer (medians):", *ratios])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--sources", default="local,s3")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--shard-items", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="one her2st section, no dense grid (the test's size)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the data (default: a temporary one)")
    a = ap.parse_args(argv)
    from benchmarks._loopback import CountingS3

    wanted = [s for s in a.systems.split(",") if s]
    systems = [s for s in wanted if installed(s)]
    missing = sorted(set(wanted) - set(systems))
    if missing:
        print(f"not installed, skipped: {', '.join(missing)} (pip install -e '.[bench-peers]')")
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        work = Path(tmp)
        pairs = build(work, a.quick, a.shard_items, systems)
        sources = a.sources.split(",")
        with CountingS3() as s3:
            if "s3" in sources:
                upload(work, s3, systems)
            res = measure(work, pairs, systems, [int(w) for w in a.workers.split(",")], sources, a.reps, s3)
        text = report(res, pairs, systems)
    print(text)
    return {"pairs": pairs, "results": {f"{s}/{w}/{n}": v for (s, w, n), v in res.items()}, "report": text}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
