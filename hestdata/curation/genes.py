"""Gene-symbol unification with the shipped human + mouse table (Ensembl 100, HGNC / MGI symbols).

Rules, in order, for each gene-expression feature: an approved symbol stays; an Ensembl id (as name or in
``gene_id``) maps to its symbol; a previous symbol, then an alias, maps to the approved symbol when that is
unambiguous; then a unique case-insensitive match; anything else keeps its name and is counted as unmapped.
The original name is always kept in ``var['original_name']``. Two features landing on one symbol are never
dropped: the second gets the suffix ``_<gene_id or original name>`` and is counted. The same feature (name
and id) listed twice is an input error.

The table (``hestdata/data/genes.tsv.gz``, built by ``schemas/build_genes.py``) is streamed once per call and
only rows that concern the query are kept: no table-sized structure stays in memory during a conversion.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from hestdata.errors import InputError
from hestdata.metadata import GeneQC

_ENSEMBL = re.compile(r"^ENS(MUS)?G\d{11}(\.\d+)?$")
SPECIES_KEYS = {"Homo sapiens": "human", "Mus musculus": "mouse"}


def gene_table() -> pd.DataFrame:
    """The whole shipped table: species, gene_id, symbol, previous, aliases, biotype (for inspection)."""
    with resources.files("hestdata").joinpath("data/genes.tsv.gz").open("rb") as fh:
        return pd.read_csv(fh, sep="\t", compression="gzip", dtype=str, keep_default_na=False)


@dataclass
class _Hits:
    approved: set[str] = field(default_factory=set)
    by_id: dict[str, str] = field(default_factory=dict)
    previous: dict[str, set[str]] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=dict)
    upper: dict[str, set[str]] = field(default_factory=dict)
    ids: dict[str, set[str]] = field(default_factory=dict)  # approved symbol -> primary-assembly Ensembl ids
    other_ids: dict[str, set[str]] = field(default_factory=dict)  # ... on patches / alternative haplotypes


def _scan(names: set[str], ids: set[str]) -> dict[str, _Hits]:
    """One pass over the table collecting, per species, every row relevant to ``names`` / ``ids``."""
    upper_q = {n.upper() for n in names}
    hits = {"human": _Hits(), "mouse": _Hits()}
    with resources.files("hestdata").joinpath("data/genes.tsv.gz").open("rb") as raw:
        reader = csv.reader(io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8"), delimiter="\t")
        next(reader)
        for species, gid, sym, prev, alias, _bt, primary in reader:
            h = hits[species]
            hit = False
            if sym in names:
                h.approved.add(sym)
                hit = True
            if gid in ids:
                h.by_id[gid] = sym
                hit = True
            su = sym.upper()
            if su in upper_q:
                h.upper.setdefault(su, set()).add(sym)
                hit = True
            if prev:
                for v in prev.split("|"):
                    if v in names:
                        h.previous.setdefault(v, set()).add(sym)
                        hit = True
            if alias:
                for v in alias.split("|"):
                    if v in names:
                        h.aliases.setdefault(v, set()).add(sym)
                        hit = True
            if hit:
                (h.ids if primary == "1" else h.other_ids).setdefault(sym, set()).add(gid)
    return hits


def _unique(groups: dict[str, set[str]], exclude: set[str]) -> dict[str, str]:
    return {k: next(iter(v)) for k, v in groups.items() if len(v) == 1 and k not in exclude}


def _species_from_ids(names: list[str], gene_ids: list[str]) -> str | None:
    ids = [g for g in list(gene_ids) + list(names) if g and _ENSEMBL.match(g)]
    if not ids:
        return None
    return "Mus musculus" if sum(g.startswith("ENSMUSG") for g in ids) > len(ids) / 2 else "Homo sapiens"


def _species_from_hits(hits: dict[str, _Hits], n_names: int) -> str:
    h, m = len(hits["human"].approved), len(hits["mouse"].approved)
    if max(h, m) < max(3, 0.2 * n_names):
        return "unknown"
    return "Homo sapiens" if h >= m else "Mus musculus"


def infer_species(names: list[str], gene_ids: list[str]) -> str:
    """'Homo sapiens', 'Mus musculus' or 'unknown', from Ensembl id prefixes, else symbol overlap."""
    return _species_from_ids(names, gene_ids) or _species_from_hits(_scan(set(names), set()), len(set(names)))


def _gene_id(source_id: str, name: str, symbol: str, how: str, h: _Hits) -> str:
    """The feature's Ensembl id: the source's own, else the id an Ensembl-id name carries, else the table's id of
    the approved symbol it mapped to (its primary-assembly id; ambiguous symbols get none)."""
    if source_id:
        return source_id
    if _ENSEMBL.match(name):
        return name.split(".")[0]
    if how in ("kept", "unmapped"):
        return ""
    found = h.ids.get(symbol) or h.other_ids.get(symbol, set())
    return next(iter(found)) if len(found) == 1 else ""


def unify_genes(var: pd.DataFrame, species: str | None, source: Path | str) -> tuple[pd.DataFrame, GeneQC, str]:
    """Return a new var frame indexed by unified symbols (originals kept), the counts, and the species.

    With ``species=None`` the species is inferred (Ensembl id prefixes, else symbol overlap) from the same
    single pass over the table.
    """
    names = [str(n) for n in var.index]
    ids = [str(g) for g in var["gene_id"]] if "gene_id" in var else [""] * len(names)
    ftypes = [str(f) for f in var["feature_type"]] if "feature_type" in var else ["Gene Expression"] * len(names)
    pairs = pd.Series(list(zip(names, ids, strict=True)))
    if pairs.duplicated().any():
        dup = pairs[pairs.duplicated()].iloc[0]
        raise InputError(source, f"duplicate feature {dup[0]!r} (gene id {dup[1] or 'none'}) appears more than once",
                         "each feature must appear once")
    bare = {n.split(".")[0] for n in names if _ENSEMBL.match(n)} | {g.split(".")[0] for g in ids if g}
    species = species or _species_from_ids(names, ids)
    hits = _scan(set(names), bare) if species in (None, *SPECIES_KEYS) else None
    if species is None:
        species = _species_from_hits(hits, len(set(names)))  # type: ignore[arg-type]
    key = SPECIES_KEYS.get(species)
    h = hits[key] if key and hits else _Hits()
    previous, aliases = _unique(h.previous, h.approved), _unique(h.aliases, h.approved)
    upper = _unique(h.upper, set())
    out, how = [], []
    for name, gid, ft in zip(names, ids, ftypes, strict=True):
        name_id = name.split(".")[0] if _ENSEMBL.match(name) else ""
        bare_id = gid.split(".")[0] if gid else ""
        if key is None or ft != "Gene Expression":
            sym, how_ = name, "kept"
        elif name in h.approved:
            sym, how_ = name, "approved"
        elif name_id in h.by_id:
            sym, how_ = h.by_id[name_id], "ensembl_id"
        elif bare_id in h.by_id:
            sym, how_ = h.by_id[bare_id], "ensembl_id"
        elif name in previous:
            sym, how_ = previous[name], "previous_symbol"
        elif name in aliases:
            sym, how_ = aliases[name], "alias"
        elif name.upper() in upper:
            sym, how_ = upper[name.upper()], "case"
        else:
            sym, how_ = name, "unmapped"
        out.append(sym)
        how.append(how_)
    seen: set[str] = set()
    n_dup = 0
    final_by_i: dict[int, str] = {}
    for i in sorted(range(len(out)), key=lambda i: (how[i] != "approved", i)):  # approved names keep the symbol
        s = out[i]
        if s in seen:
            n_dup += 1
            s, k = f"{out[i]}_{ids[i] or names[i]}", 2
            while s in seen:
                s, k = f"{out[i]}_{ids[i] or names[i]}_{k}", k + 1
        seen.add(s)
        final_by_i[i] = s
    final = [final_by_i[i] for i in range(len(out))]
    gene_ids = [_gene_id(gid, name, sym, how_, h) for gid, name, sym, how_ in zip(ids, names, out, how, strict=True)]
    new = pd.DataFrame({"original_name": names, "gene_id": gene_ids, "feature_type": ftypes, "mapped_by": how},
                       index=pd.Index(final))
    qc = GeneQC(n_features=len(names), n_renamed=sum(f != n for f, n in zip(final, names, strict=True)),
                n_unmapped=how.count("unmapped"), n_duplicates_resolved=n_dup,
                n_with_gene_id=sum(bool(g) for g in gene_ids))
    return new, qc, species
