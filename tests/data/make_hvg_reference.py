"""Writes tests/data/hvg_seurat_reference.json: HEST's gene choice computed by scanpy itself on the shared her2st
count tables, the reference `tests/test_bench_protocols.py` holds hestdata's own implementation to.

Run once in an environment with scanpy (not a hestdata dependency):
    python -m venv /tmp/scv && /tmp/scv/bin/pip install scanpy
    /tmp/scv/bin/python tests/data/make_hvg_reference.py
It follows HEST's `get_k_genes(criteria="var", min_cells_pct=0.10)`: per slide `filter_genes(min_cells=ceil(10 %))`,
names intersected (sorted), BLANK/Control dropped, the stacked float32 counts log1p'd, then
`highly_variable_genes(n_top_genes=50)` (seurat flavour), the first 50 in name order.
"""

import json
import math
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data" / "st_legacy" / "her2st" / "ST-cnts"
SETS = {"B4+C2+C3": ["B4", "C2", "C3"], "C2+C3": ["C2", "C3"], "B4": ["B4"]}


def tables() -> dict[str, pd.DataFrame]:
    out = {}
    for s in ("B4", "C2", "C3"):
        df = pd.read_csv(DATA / f"{s}.tsv.gz", sep="\t", index_col=0)
        out[s] = df.T.groupby(level=0).sum().T  # a name repeated in the header: HEST's var_names would be unique
    return out


def hest_k_genes(dfs: list[pd.DataFrame], k: int = 50, min_cells_pct: float = 0.10) -> tuple[list[str], dict]:
    common = None
    for df in dfs:
        a = sc.AnnData(df.astype(np.float32))
        sc.pp.filter_genes(a, min_cells=math.ceil(min_cells_pct * a.n_obs))
        cur = np.array(a.var_names)
        common = cur if common is None else np.intersect1d(common, cur)
    common = [g for g in common if "BLANK" not in g and "Control" not in g]
    st = sc.AnnData(pd.concat([df[common] for df in dfs]).astype(np.float32).values)
    st.var_names = common
    sc.pp.log1p(st)
    sc.pp.highly_variable_genes(st, n_top_genes=k)
    chosen = st.var_names[st.var["highly_variable"]][:k].tolist()
    disp = {g: float(v) for g, v in zip(common, st.var["dispersions_norm"], strict=True) if np.isfinite(v)}
    return chosen, disp


def main() -> None:
    t = tables()
    doc = {"scanpy": version("scanpy"), "k": 50, "min_cells_pct": 0.10, "sets": {}}
    for name, members in SETS.items():
        chosen, disp = hest_k_genes([t[m] for m in members])
        top = sorted(disp, key=lambda g: -disp[g])[:200]
        doc["sets"][name] = {"slides": members, "genes": chosen, "n_candidates": len(disp),
                             "dispersions_norm_top200": {g: disp[g] for g in top}}
    (HERE / "hvg_seurat_reference.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
