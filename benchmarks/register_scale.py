"""Registration of a 20-sample cohort on a Dask LocalCluster: wall time with 1 and with 2 worker processes.

    python benchmarks/register_scale.py [--samples 20] [--workers 1 2]

The cohort is the three shared her2st sections (counts, spots, full-resolution H&E JPEG) cycled under distinct
sample ids, each converted with 224 px patches at 0.5 µm/px — the same work per sample as a real ST cohort.
Each worker process converts one sample at a time with ``workers=1`` thread (so the worker processes, not
threads, are what is compared). Every run starts from an empty root; the inputs are read once beforehand so
that every run sees a warm file cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data")) / "st_legacy" / "her2st"
SECTIONS = {"B4": ("B", "BT10737_D2_HE.jpg"), "C2": ("C", "5714_HE_BT_C2.jpg"), "C3": ("C", "5714_HE_BT_D1.jpg")}


def cohort(folder: Path, n: int) -> Path:
    samples = []
    names = sorted(SECTIONS)
    for i in range(n):
        s = names[i % len(names)]
        patient, image = SECTIONS[s]
        samples.append({"id": f"her2st_{s}_{i:02d}", "technology": "st", "options": {"workers": 1},
                        "inputs": {"counts": str(DATA / "ST-cnts" / f"{s}.tsv.gz"),
                                   "spots": str(DATA / "ST-spotfiles" / f"{s}_selection.tsv"),
                                   "image": str(DATA / "ST-imgs" / patient / s / image)},
                        "metadata": {"patient": f"{patient}{i}", "organ": "breast"}})
    doc = {"name": "scale", "license": "see her2st", "citation": "Andersson et al. 2021",
           "defaults": {"patches": ["224px_0.5um"]}, "samples": samples}
    path = folder / "scale.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> None:
    from hestdata.cohort.register import register_cohort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        desc = cohort(Path(tmp), args.samples)
        for f in DATA.rglob("*"):  # warm the file cache so that the first run is not penalised
            if f.is_file():
                f.read_bytes()
        for w in args.workers:
            t0 = time.perf_counter()
            rep = register_cohort(desc, Path(tmp) / f"root{w}", n_workers=w, allow_outside_inputs=True)
            results[w] = time.perf_counter() - t0
            ok = len(rep.ids("converted"))
            print(f"{args.samples} samples, {w} worker process(es): {results[w]:.1f} s, {ok} converted, "
                  f"{results[w] / args.samples:.2f} s/sample", flush=True)
    if len(results) > 1:
        base = min(results)
        for w, s in sorted(results.items()):
            print(f"speed-up {w} vs {base} worker(s): {results[base] / s:.2f}x (cores here: {os.cpu_count()})")


if __name__ == "__main__":
    main()
