"""Store format 2 at scale: what one-sample operations cost as a root grows from 10 to 10,000 samples.

One real sample (the squidpy mouse-brain crop of ../shared/data, converted by hestdata) is cloned into roots of N
samples: hard links of its files, its id rewritten where the store records it (``zarr.json``'s metadata, the
sample's ``manifest.json``), published through the public API (``hestdata.store.publish.publish``, one catalog
version for the whole batch). The root grows in place from one N to the next. For each N it measures, in one
process (imports paid once):

- files per sample, catalog size (base + tail) and pointer size;
- publish one new sample (time; catalog bytes written), validate that sample (time), remove it again;
- validate the whole root (time, up to ``--whole-validate-max`` samples: linear is the goal);
- ``PatchDataset`` over the whole local root (construction time: lazy per-sample opening);
- over a loopback S3 server (moto, requests and response bytes counted by a WSGI middleware): ``open_root``;
  a one-sample ``PatchDataset`` and its first batch; ``download`` of one sample; ``push`` of one changed sample.

The bucket holds the root's pointer and catalog (all N rows) and the files of the samples those operations touch:
a format-2 reader or writer never reads another sample's files, and the request log shows it.

    python benchmarks/root_scale.py                        # N = 10, 100, 1000, 10000
    python benchmarks/root_scale.py --sizes 10,200 --out results.json

Goals (issue 22): every one-sample operation at the largest N ≤ 1.5 x its time at N = 10; whole-root validate
linear; remote open ≤ 3 requests and ≤ 2 MB.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(os.environ.get("HESTDATA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PATCH = "224px_0.5um"


def _settle(repeats: int) -> None:
    """A full collection before a timing, so a process holding many rows does not charge its gen-2 collections to
    the operation measured (0.3 s each in a test process that has imported torch). Only when timings are compared:
    a single repeat is a smoke run (the test suite's)."""
    if repeats > 1:
        gc.collect()


def template(work: Path) -> Path:
    """The real sample every root is made of."""
    import hestdata

    d = SHARED / "visium" / "squidpy_mouse_brain_crop"
    s = hestdata.read_anndata(d / "test_data.h5ad", image=d / "test_img.jpg", sample_id="squidpy_crop")
    return Path(hestdata.convert(s, work / "template", metadata={"organ": "brain", "cohort": "scale"}))


def clone(src: Path, dst: Path, sid: str, organ: str = "brain") -> None:
    """A copy of the sample ``src`` as ``dst`` with id ``sid``: hard links, zarr.json and manifest rewritten."""
    from hestdata.store import layout as L
    from hestdata.store.manifest import parse_sample_manifest, sample_manifest_bytes

    files = parse_sample_manifest((src / L.SAMPLE_MANIFEST).read_bytes(), str(src))
    s, d = str(src), str(dst)
    for folder in sorted({os.path.dirname(rel) for rel in files}):
        os.makedirs(os.path.join(d, folder), exist_ok=True)
    for rel in files:
        if rel != "zarr.json":
            os.link(os.path.join(s, rel), os.path.join(d, rel))
    doc = json.loads((src / "zarr.json").read_text())
    doc["attributes"][L.META_KEY]["id"] = sid
    doc["attributes"][L.META_KEY]["organ"] = organ
    data = json.dumps(doc, indent=2).encode()
    (dst / "zarr.json").write_bytes(data)
    files["zarr.json"] = (len(data), hashlib.sha256(data).hexdigest())
    (dst / L.SAMPLE_MANIFEST).write_bytes(sample_manifest_bytes(sid, files))


def grow(root: Path, tpl: Path, n: int) -> float:
    """Add clones until ``root`` holds ``n`` samples (one publication); returns the seconds it took."""
    from hestdata.store import layout as L
    from hestdata.store.publish import publish

    t0 = time.perf_counter()
    have = len(list((root / L.SAMPLES).glob("s*.zarr"))) if (root / L.SAMPLES).is_dir() else 0
    ids = [f"s{i:06d}" for i in range(have, n)]
    for sid in ids:
        clone(tpl, L.sample_path(root, sid), sid)
    publish(root, ids)
    return time.perf_counter() - t0


def _catalog_bytes(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (root / "catalog").iterdir()} | \
        {"hestdata.json": (root / "hestdata.json").stat().st_size}


def local_ops(root: Path, tpl: Path, n: int, whole_max: int, repeats: int) -> dict[str, Any]:
    import hestdata
    from hestdata.store import layout as L
    from hestdata.store.publish import publish
    from hestdata.store.root import Root

    out: dict[str, Any] = {"n": n}
    r = Root.open(root)
    p = r.pointer
    out["catalog_bytes"] = p["catalog"]["base"]["size"] + (p["catalog"]["tail"] or {}).get("size", 0)
    out["pointer_bytes"] = (root / L.ROOT_POINTER).stat().st_size
    out["files_per_sample"] = int(r.row("s000000")["n_files"])
    pub, written, val1 = [], [], []
    for k in range(repeats):
        sid = f"extra{k}"
        clone(tpl, L.sample_path(root, sid), sid)
        before = _catalog_bytes(root)
        _settle(repeats)
        t0 = time.perf_counter()
        publish(root, [sid])
        pub.append(time.perf_counter() - t0)
        after = _catalog_bytes(root)
        written.append(sum(v for name, v in after.items() if before.get(name) != v))
        _settle(repeats)
        t0 = time.perf_counter()
        rep = hestdata.validate(L.sample_path(root, sid))
        val1.append(time.perf_counter() - t0)
        assert rep.ok, rep.violations
        shutil.rmtree(L.sample_path(root, sid))
        publish(root, [sid])  # its row goes
    out["publish_one_s"], out["publish_one_bytes"] = statistics.median(pub), statistics.median(written)
    out["validate_one_s"] = statistics.median(val1)
    out["publish_one_min_s"], out["validate_one_min_s"] = min(pub), min(val1)
    if n <= whole_max:
        t0 = time.perf_counter()
        rep = hestdata.validate(root)
        out["validate_root_s"] = time.perf_counter() - t0
        assert rep.ok, rep.violations[:5]
    t0 = time.perf_counter()
    ds = hestdata.PatchDataset(root, patch=PATCH, decode="cpu")
    out["dataset_root_s"] = time.perf_counter() - t0
    assert len(ds) == n * ds.samples[0].n_patches
    return out


def remote_ops(root: Path, n: int, s3: Any, repeats: int) -> dict[str, Any]:
    """The remote operations on a bucket holding this root's pointer, catalog and the touched samples."""
    import hestdata
    from hestdata.store import layout as L

    bucket = f"scale{n}-{root.name}"
    s3.bucket(bucket)
    fs = s3.fs()
    url = f"s3://{bucket}/root"
    touched = ["s000000", "s000001"]
    rels = [L.ROOT_POINTER, *(f"catalog/{x.name}" for x in (root / "catalog").iterdir())]
    rels += [f.relative_to(root).as_posix() for sid in touched for f in L.sample_path(root, sid).rglob("*")
             if f.is_file()]
    fs.put([str(root / r) for r in rels], [f"{bucket}/root/{r}" for r in rels])  # setup, untimed: concurrent PUTs
    out: dict[str, Any] = {}
    opens = []
    for _ in range(repeats):
        s3.traffic.clear()
        _settle(repeats)
        t0 = time.perf_counter()
        rt = hestdata.open_root(url, storage_options=s3.options)
        opens.append(time.perf_counter() - t0)
        assert len(rt) == n
    out["open_s"], out["open_requests"], out["open_bytes"] = statistics.median(opens), s3.traffic.n, s3.traffic.bytes_out
    out["open_min_s"] = min(opens)
    ds_s, dl_s, push_s = [], [], []
    for k in range(repeats):  # medians of `repeats` runs each: loopback timings are noisy
        s3.traffic.clear()
        _settle(repeats)
        t0 = time.perf_counter()
        ds = hestdata.PatchDataset(url, query="id = 's000000'", patch=PATCH, decode="cpu",
                                   storage_options=s3.options)
        batch = ds.load_block(list(range(min(16, len(ds)))))
        ds_s.append(time.perf_counter() - t0)
        out["dataset_one_requests"], out["dataset_one_bytes"] = s3.traffic.n, s3.traffic.bytes_out
        others = [p for p in s3.traffic.gets() if "/samples/" in p and "s000000.zarr" not in p]
        assert not others, others[:3]
        assert len(batch["index"]) == min(16, len(ds))
        dest = root.parent / f"dl{n}"
        s3.traffic.clear()
        _settle(repeats)
        t0 = time.perf_counter()
        hestdata.download(url, dest, ids=["s000000"], storage_options=s3.options, workers=4)
        dl_s.append(time.perf_counter() - t0)
        out["download_one_requests"], out["download_one_bytes"] = s3.traffic.n, s3.traffic.bytes_out
        others = [p for p in s3.traffic.gets() if "/samples/" in p and "s000000.zarr" not in p]
        assert not others, others[:3]  # a one-sample download reads that sample only
        shutil.rmtree(dest)
        push_s.append(_push_one_change(root, url, s3, f"brain-{n}-{k}", out, repeats))
    out["dataset_one_s"], out["download_one_s"] = statistics.median(ds_s), statistics.median(dl_s)
    out["push_one_s"] = statistics.median(push_s)
    out["dataset_one_min_s"], out["download_one_min_s"], out["push_one_min_s"] = min(ds_s), min(dl_s), min(push_s)
    return out


def _push_one_change(root: Path, url: str, s3: Any, organ: str, out: dict[str, Any], repeats: int) -> float:
    """Edit one sample's metadata, republish it locally, push; the seconds the push took."""
    import hestdata
    from hestdata.store import layout as L
    from hestdata.store.manifest import write_sample_manifest
    from hestdata.store.publish import publish

    path = L.sample_path(root, "s000001")
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"][L.META_KEY]["organ"] = organ
    (path / "zarr.json").unlink()  # hard-linked clones never share the edit
    (path / "zarr.json").write_text(json.dumps(doc, indent=2))
    write_sample_manifest(path, "s000001")
    publish(root, ["s000001"])
    s3.traffic.clear()
    _settle(repeats)
    t0 = time.perf_counter()
    rep = hestdata.push(root, url, storage_options=s3.options)
    seconds = time.perf_counter() - t0
    out["push_one_requests"], out["push_one_uploaded_bytes"] = s3.traffic.n, rep.bytes_uploaded
    out["push_one_read_bytes"] = s3.traffic.bytes_out
    assert rep.samples_changed == ["s000001"], rep.samples_changed
    touched_others = [p for p in s3.traffic.gets() if "/samples/" in p and "s000001.zarr" not in p]
    assert not touched_others, touched_others[:3]
    return seconds


ONE_SAMPLE = ("publish_one_s", "validate_one_s", "open_s", "dataset_one_s", "download_one_s", "push_one_s")


def run(sizes: list[int], work: Path, whole_max: int, repeats: int = 3) -> list[dict[str, Any]]:
    import warnings

    import hestdata.loader  # noqa: F401  (imports paid before anything is timed)
    from benchmarks._loopback import CountingS3

    warnings.filterwarnings("ignore", category=UserWarning)  # the crop's counts are log-normalised: known
    tpl = template(work)
    root = work / "root"
    rows = []
    with CountingS3() as s3:
        warm = work / "warm"  # first use of every path (s3fs, moto, torch) outside the timings
        grow(warm, tpl, 2)
        remote_ops(warm, 2, s3, 1)
        for n in sizes:
            build = grow(root, tpl, n)
            row = local_ops(root, tpl, n, whole_max, repeats)
            row["build_s"] = build
            row.update(remote_ops(root, n, s3, repeats))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    first, last = rows[0], rows[-1]
    lines = [f"{'N':>6} {'files/smp':>9} {'catalog':>9} {'publish':>8} {'pub B':>7} {'val 1':>7} {'val all':>8} "
             f"{'ds all':>7} {'open':>6} {'req':>4} {'open B':>8} {'ds 1':>6} {'req':>4} {'dl 1':>6} {'req':>4} "
             f"{'push 1':>7} {'req':>4}"]
    for r in rows:
        va = f"{r['validate_root_s']:8.2f}" if "validate_root_s" in r else f"{'-':>8}"
        lines.append(f"{r['n']:>6} {r['files_per_sample']:>9} {r['catalog_bytes']:>9} {r['publish_one_s']:8.3f} "
                     f"{r['publish_one_bytes']:>7} {r['validate_one_s']:7.3f} {va} {r['dataset_root_s']:7.2f} "
                     f"{r['open_s']:6.3f} {r['open_requests']:>4} {r['open_bytes']:>8} {r['dataset_one_s']:6.3f} "
                     f"{r['dataset_one_requests']:>4} {r['download_one_s']:6.3f} {r['download_one_requests']:>4} "
                     f"{r['push_one_s']:7.3f} {r['push_one_requests']:>4}")
    lines.append(f"one-sample operations, N={last['n']} / N={first['n']} (goal <= 1.5): median of the repeats, "
                 "and min (the cost without the machine's noise)")
    lines += [f"  {k:<16} median {last[k] / first[k]:.2f}   min "
              f"{last[k.replace('_s', '_min_s')] / first[k.replace('_s', '_min_s')]:.2f}" for k in ONE_SAMPLE]
    whole = [r for r in rows if "validate_root_s" in r]
    if len(whole) > 1:
        lines.append("whole-root validate, seconds per sample: "
                     + ", ".join(f"N={r['n']}: {r['validate_root_s'] / r['n'] * 1000:.1f} ms" for r in whole))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000,10000")
    ap.add_argument("--whole-validate-max", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="folder for the roots (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    a = ap.parse_args(argv)
    sizes = sorted(int(x) for x in a.sizes.split(","))
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        print(f"load average: {os.getloadavg()}", flush=True)
        rows = run(sizes, Path(tmp), a.whole_validate_max, a.repeats)
        print(f"load average: {os.getloadavg()}", flush=True)
    print(report(rows))
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
