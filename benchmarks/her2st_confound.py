"""What the her2st expression task measures: each encoder under both gene criteria — HEST's (detected in >= 10 %
of every training slide's spots, then seurat-flavour HVGs) and the 50 highest-variance log1p genes — and both
targets — HEST's log1p of raw counts and library-size normalised CP10k-log1p — beside the ``library-size``
baseline (no image: log1p of a spot's total counts) and a 3-number mean-RGB encoder.

    python benchmarks/her2st_confound.py [--encoders color-stats random-vit-s16] [--root DIR] [--cache-dir DIR]

Prints, per encoder, criterion and normalisation, Pearson r (mean ± std over the two leave-one-patient-out
folds, the per-fold values, the 95 % spot-bootstrap interval), how strongly each criterion's genes track
sequencing depth on each fold's training spots, how many genes the two criteria share, and the package versions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.her2st_benchmark import DATA, ROOT, build  # noqa: E402

CRITERIA = ("hest", "variance")
NORMS = ("log1p", "cp10k_log1p")


def mean_rgb(images):  # noqa: ANN001, ANN201  (a 3-number encoder: the mean colour of the patch)
    return images.float().mean(dim=(2, 3))


def gene_report(root: Path) -> list[str]:
    """Per fold and criterion: the median r(gene, log library size) of the chosen genes on the training spots,
    and the overlap of the two criteria's gene sets."""
    import polars as pl

    from hestdata.bench.genes import choose_genes
    from hestdata.bench.runner import _patch_rows, _task_targets, load_task
    from hestdata.bench.tasks.expression import _folds, targets
    from hestdata.store.root import Root

    r = Root.open(root)
    t = load_task("her2st_expression")
    cat = r.select(t.samples).catalog.sort("id")
    ids = cat["id"].to_list()
    counts, genes, _, libs, _ = _task_targets(t, r, ids)
    c = counts.toarray()
    n_rows = [len(_patch_rows(r, s, t.patch)) for s in ids]
    slides = np.repeat(ids, n_rows)
    patient = dict(zip(ids, cat.select(pl.col("patient").cast(pl.String))["patient"].to_list(), strict=True))
    groups = np.array([patient[s] for s in slides])
    y = targets(c, "log1p")
    loglib = np.log1p(libs)
    out = []
    for tr, _, held in _folds(groups, None):
        chosen = {k: choose_genes(k, 50, y[tr], c[tr], slides[tr], genes) for k in CRITERIA}
        med = {k: float(np.median([np.corrcoef(y[tr, j], loglib[tr])[0, 1] for j in v])) for k, v in chosen.items()}
        shared = len(set(chosen["hest"]) & set(chosen["variance"]))
        out.append(f"fold held out {held}: median r(gene, log library size) on the training spots: hest "
                   f"{med['hest']:.2f}, variance {med['variance']:.2f}; genes shared by the two criteria: {shared}/50")
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the study; returns encoder -> "criterion/normalisation" -> mean Pearson r (what it printed)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="*", default=["color-stats", "random-vit-s16"],
                    help="image encoders beside the two baselines (none: the baselines only)")
    ap.add_argument("--root", type=Path, default=ROOT, help="a root holding the three sections (built if absent)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default ROOT/embeddings)")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    from hestdata.bench.encoders import from_callable
    from hestdata.bench.leaderboard import _versions
    from hestdata.bench.runner import Task, load_task, run_benchmark

    root = build(args.root)
    base = load_task("her2st_expression")
    encoders = ["library-size", from_callable(mean_rgb, "mean-rgb"), *args.encoders]
    print("package versions:", json.loads(_versions()))
    for line in gene_report(root):
        print(line)
    head = [f"{c} / {n}" for c in CRITERIA for n in NORMS]
    print(f"{'encoder':<15}" + "".join(f"{h:>44}" for h in head))
    table: dict[str, dict[str, float]] = {}
    for enc in encoders:
        cells = []
        name = enc if isinstance(enc, str) else enc.name
        for crit in CRITERIA:
            for norm in NORMS:
                t = Task(**{**base.__dict__, "name": f"her2st_expression_{crit}_{norm}",
                            "options": {**base.options, "genes": crit, "normalize": norm}})
                r = run_benchmark(root, enc, t, leaderboard=False, cache_dir=args.cache_dir)[0]
                folds = "/".join(f"{v:.3f}" for v in r["fold_values"])
                cells.append(f"{r['mean']:.3f} ± {r['std']:.3f} ({folds}) [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
                table.setdefault(name, {})[f"{crit}/{norm}"] = float(r["mean"])
        print(f"{name:<15}" + "".join(f"{c:>44}" for c in cells))
    return table


if __name__ == "__main__":
    main()
