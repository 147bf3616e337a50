"""What the her2st expression task measures: each encoder under HEST's targets (log1p of raw counts) and under
library-size normalised targets (CP10k, then log1p), beside the ``library-size`` baseline (no image: log1p of a
spot's total counts) and a 3-number mean-RGB encoder.

    python benchmarks/her2st_confound.py [--encoders color-stats random-vit-s16]

Prints, per encoder and normalisation, Pearson r (mean ± std over the two leave-one-patient-out folds), the
package versions, and how strongly the genes the task selects track sequencing depth.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from her2st_benchmark import DATA, build  # noqa: I001  (same folder)


def mean_rgb(images):  # noqa: ANN001, ANN201  (a 3-number encoder: the mean colour of the patch)
    return images.float().mean(dim=(2, 3))


def depth_correlation(root) -> float:  # noqa: ANN001
    """Median over the 50 most variable genes (log1p) of their Pearson r with log library size, all spots."""
    import scipy.sparse as sp

    import hestdata

    blocks = []
    common = None
    for p in sorted((root / "samples").glob("*.zarr")):
        t = hestdata.open_sample(p).sdata.tables["expression"]
        blocks.append(t)
        common = set(t.var_names) if common is None else common & set(t.var_names)
    genes = sorted(common)
    X = sp.vstack([sp.csr_matrix(t[:, genes].X) for t in blocks]).toarray().astype(np.float64)
    y = np.log1p(X)
    lib = np.log1p(X.sum(1))
    top = np.argsort(-y.var(0))[:50]
    r = [np.corrcoef(y[:, j], lib)[0, 1] for j in top]
    return float(np.median(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=["color-stats", "random-vit-s16"])
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    from hestdata.bench.encoders import from_callable
    from hestdata.bench.leaderboard import _versions
    from hestdata.bench.runner import Task, load_task, run_benchmark

    root = build()
    base = load_task("her2st_expression")
    encoders = ["library-size", from_callable(mean_rgb, "mean-rgb"), *args.encoders]
    print("package versions:", json.loads(_versions()))
    print(f"median r(gene, log library size) over the 50 most variable genes: {depth_correlation(root):.2f}")
    print(f"{'encoder':<16} {'log1p (HEST)':>30} {'cp10k_log1p':>30}")
    for enc in encoders:
        cells = []
        for norm in ("log1p", "cp10k_log1p"):
            t = Task(**{**base.__dict__, "name": f"her2st_expression_{norm}",
                        "options": {**base.options, "normalize": norm}})
            r = run_benchmark(root, enc, t, leaderboard=False)[0]
            cells.append(f"{r['mean']:.3f} ± {r['std']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
        name = enc if isinstance(enc, str) else enc.name
        print(f"{name:<16} {cells[0]:>30} {cells[1]:>30}")


if __name__ == "__main__":
    main()
