"""Faults at scale: kill -9 at seeded random moments during convert, download, push, publish (the catalog
rebuild) and register (a cohort on a one-worker Dask cluster), then the next command,
then ``validate`` — counting how often the root was clean, how often the next command had to recover it, and
whether any sample published before the kill was lost (the goal: never).

    python benchmarks/faults.py [--trials 50] [--seed 0] [--ops convert,download,push,publish,register] [--work DIR]

Each trial runs the operation in a fresh process and sends SIGKILL after a delay drawn uniformly from
[0, 1.2 x the operation's measured duration] (so some kills land after the end: those count as "finished").
Then the same command runs again to completion (it recovers what the kill left), and ``validate`` must pass.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, hestdata
from tests.synth import synthetic_sample
op, a, b, sid = sys.argv[1:5]
if op == "convert":
    hestdata.convert(synthetic_sample(sid, n=24), a, patches=["32px_2um"], min_tissue_fraction=0, shard_patches=8,
                     metadata={"patient": sid})
elif op == "download":
    hestdata.download(a, b, workers=4)
elif op == "push":
    hestdata.push(a, b, workers=4)
elif op == "publish":  # the catalog rebuilt from every sample folder (what `hestdata repair` runs)
    from hestdata.store.publish import publish
    publish(a, None, rebuild=True)
elif op == "register":
    from hestdata.cohort.register import register_cohort
    rep = register_cohort(b, a, n_workers=1, allow_outside_inputs=True)
    sys.exit(0 if rep.ok else 3)
"""


def _run(args: list[str], kill_after_s: float | None) -> tuple[bool, float]:
    """Run the child; SIGKILL it after ``kill_after_s`` (None: to the end). Returns (killed, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        p.wait(timeout=kill_after_s)
        if p.returncode:
            raise RuntimeError(f"{args[0]} failed: {p.stderr.read()[-2000:] if p.stderr else ''}")
        return False, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the whole process group: a register's Dask workers too
        p.wait()
        return True, time.perf_counter() - t0


def _samples(root: Path) -> set[str]:
    import hestdata

    try:
        return set(hestdata.open_catalog(root)["id"].to_list())
    except Exception:
        return set()


def _cohort(work: Path) -> Path:
    """A two-sample synthetic Visium cohort descriptor (written once)."""
    import yaml

    from hestdata.demo import make_synthetic_visium

    folder = work / "cohort"
    doc = folder / "c.yaml"
    if doc.exists():
        return doc
    samples = []
    for i, sid in enumerate(["c0", "c1"]):
        outs, img = make_synthetic_visium(folder / sid, seed=i)
        samples.append({"id": sid, "inputs": {"outs": str(outs.relative_to(folder)),
                                              "image": str(img.relative_to(folder))}, "metadata": {"patient": f"P{i}"}})
    doc.write_text(yaml.safe_dump({"name": "faults", "license": "BSD-3-Clause", "citation": "synthetic",
                                   "defaults": {"technology": "visium", "organ": "colon", "species": "Homo sapiens"},
                                   "samples": samples}, sort_keys=False))
    return doc


def trial(op: str, work: Path, i: int, duration_s: float, rng: random.Random, src: Path) -> dict[str, object]:
    """One kill and its recovery; returns what happened."""
    import hestdata

    root = work / f"{op}{i}"
    if op == "convert":
        shutil.copytree(src, root)  # a root already holding published samples
        args = ["convert", str(root), "", f"new{i}"]
        target = root
    elif op == "download":
        args = ["download", str(src), str(root), ""]
        target = root
    elif op == "publish":
        shutil.copytree(src, root)
        args = ["publish", str(root), "", ""]
        target = root
    elif op == "register":
        shutil.copytree(src, root)  # a root already holding published samples; the cohort adds two more
        args = ["register", str(root), str(_cohort(work)), ""]
        target = root
    else:
        remote = work / f"remote{i}"
        args = ["push", str(src), str(remote), ""]
        target = remote
    before = _samples(target)
    killed, _ = _run(args, rng.uniform(0, 1.2 * duration_s))
    _run(args, None) if op != "convert" else None
    if op == "convert":  # the next command: another conversion into the same root recovers what the kill left
        _run(["convert", str(root), "", f"next{i}"], None)
    rep = hestdata.validate(target)
    after = _samples(target)
    return {"op": op, "killed": killed, "valid": rep.ok, "lost": sorted(before - after),
            "violations": rep.violations[:3]}


def main(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ops", default="convert,download,push,publish,register")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    work = args.work or Path(tempfile.mkdtemp(prefix="hestdata-faults-"))
    src = work / "src"
    if not src.exists():
        for k in range(3):
            _run(["convert", str(src), "", f"s{k}"], None)
    rng = random.Random(args.seed)
    counts: dict[str, dict[str, int]] = {}
    for op in args.ops.split(","):
        for rep in range(2):  # the second run is the measure (the first warms the file cache)
            probe = work / f"probe-{op}-{rep}"
            if op == "convert":
                shutil.copytree(src, probe)
                _, dur = _run(["convert", str(probe), "", "probe"], None)
            elif op == "download":
                _, dur = _run(["download", str(src), str(probe), ""], None)
            elif op in ("publish", "register"):
                shutil.copytree(src, probe)
                _, dur = _run([op, str(probe), str(_cohort(work)) if op == "register" else "", ""], None)
            else:
                _, dur = _run(["push", str(src), str(probe), ""], None)
        c = counts.setdefault(op, {"trials": 0, "killed": 0, "valid": 0, "lost_samples": 0})
        for i in range(args.trials):
            r = trial(op, work, i, dur, rng, src)
            c["trials"] += 1
            c["killed"] += int(bool(r["killed"]))
            c["valid"] += int(bool(r["valid"]))
            c["lost_samples"] += len(r["lost"])  # type: ignore[arg-type]
            if not r["valid"] or r["lost"]:
                print(json.dumps(r), flush=True)
        print(f"{op:<9} {c['trials']} trials ({c['killed']} killed mid-run, measured run {dur:.1f} s): "
              f"valid after the next command {c['valid']}/{c['trials']}, published samples lost {c['lost_samples']}",
              flush=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return counts


if __name__ == "__main__":
    main()
