"""The worked example: HEST-Benchmark expression and HESCAPE-style retrieval on the shared her2st sections
(real H&E + raw counts; patients B and C, so two leave-one-patient-out folds), for every encoder available
offline (the weight-free baselines), with the leaderboard printed as Markdown. The slide-level tasks run on the
same sections' pseudo-bulk profiles.

    python benchmarks/her2st_benchmark.py [--encoders color-stats random-vit-s16]
    python benchmarks/her2st_benchmark.py --tasks her2st_slide_expression her2st_slide_retrieval
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data")) / "st_legacy" / "her2st"
ROOT = REPO / "benchmarks" / "out" / "her2st_root"
SECTIONS = {"B4": ("B/B4/BT10737_D2_HE.jpg", "B"), "C2": ("C/C2/5714_HE_BT_C2.jpg", "C"),
            "C3": ("C/C3/5714_HE_BT_D1.jpg", "C")}


def build(root: Path = ROOT) -> Path:
    """The three sections converted into ``root`` (a root that already holds them is used as it is)."""
    import hestdata
    from hestdata.store import layout as L

    if L.local_format(root) is not None:
        cat = hestdata.open_catalog(root)
        if "profile" in cat.columns and cat["profile"].null_count() == 0 and cat.height >= len(SECTIONS):
            return root
        import shutil

        shutil.rmtree(root)  # written before slide profiles existed, or partial: rebuild
    for sec, (img, patient) in SECTIONS.items():
        s = hestdata.read_st(DATA / "ST-cnts" / f"{sec}.tsv.gz", spots=DATA / "ST-spotfiles" / f"{sec}_selection.tsv",
                             image=DATA / "ST-imgs" / img, sample_id=f"her2st_{sec}")
        hestdata.convert(s, root, metadata={"cohort": "her2st", "patient": patient, "organ": "breast",
                                            "citation": "Andersson et al., Nat Commun 12, 6012 (2021)"})
    return root


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the tasks; returns "encoder / task" -> metric -> mean (what it printed)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=["color-stats", "random-vit-s16"])
    ap.add_argument("--tasks", nargs="+", default=["her2st_expression", "her2st_retrieval"],
                    help="also her2st_slide_expression her2st_slide_retrieval (pseudo-bulk profiles)")
    ap.add_argument("--root", type=Path, default=ROOT, help="a root holding the three sections (built if absent)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default ROOT/embeddings)")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    import hestdata
    from hestdata.bench.leaderboard import read, render_markdown

    root = build(args.root)
    (root / "leaderboard.parquet").unlink(missing_ok=True)
    out: dict[str, dict[str, float]] = {}
    for enc in args.encoders:
        for task in args.tasks:
            t = time.perf_counter()
            rows = hestdata.run_benchmark(root, enc, task, cache_dir=args.cache_dir)
            out[f"{enc} / {task}"] = {r["metric"]: float(r["mean"]) for r in rows}
            print(f"{enc} / {task}: {time.perf_counter() - t:.1f} s")
            for r in rows:
                print(f"   {r['metric']}: {r['mean']:.4f} ± {r['std']:.4f}  "
                      + ", ".join(f"{f}={v:.4f}" for f, v in zip(r["folds"], r["fold_values"], strict=True)))
    print()
    print(render_markdown(read(root)))
    return out


if __name__ == "__main__":
    main()
