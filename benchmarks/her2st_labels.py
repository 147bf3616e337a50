"""Region-label classification on the shared her2st sections (issue 29): H&E patches of B4, C2 and C3 classified
into their spots' expression-cluster annotations, leave-one-patient-out, for the weight-free encoders.

    python benchmarks/her2st_labels.py [--encoders color-stats random-vit-s16]

The cluster ids of ``ST-cluster/lbl/<S>-cluster-annotation.tsv.gz`` are per patient (cluster 1 of patient B is not
cluster 1 of C); ``ST-cluster/motivation.csv`` names each (patient, cluster), e.g. "cancer 1", "immune : B/plasma
cells". The names are mapped to a coarse class shared by both patients: the text before the first " :" or digit
(``cancer``, ``immune``, ``breast glands``, …); only the classes both patients have are kept (``cancer`` and
``immune``; the rest, ``unknown`` included, are masked like ``undetermined``), so a held-out patient is never
scored on a class its training patient lacks. **The labels come from expression clusters**: the task asks
what an image encoder sees of the expression clusters, not of pathology. motivation.csv is malformed CSV (commas
inside unquoted fields): each line is split on its first two commas and cut at ",Marker genes".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data")) / "st_legacy"
SHARED_CLASSES = ("cancer", "immune")  # the coarse classes both patients have (B: also breast glands; both: unknown)
SECTIONS = {"B4": ("B/B4/BT10737_D2_HE.jpg", "B"), "C2": ("C/C2/5714_HE_BT_C2.jpg", "C"),
            "C3": ("C/C3/5714_HE_BT_D1.jpg", "C")}


def cluster_names(path: Path) -> dict[tuple[str, str], str]:
    """(patient, cluster id) -> coarse class from the malformed motivation.csv."""
    out = {}
    for line in path.read_text().splitlines()[1:]:
        parts = line.split(",", 2)
        if len(parts) < 3:
            continue
        name = parts[2].split(",Marker genes")[0].split(",,")[0].strip().strip(",")
        coarse = re.split(r" :|\s\d", name)[0].strip().lower() or "unknown"
        out[(parts[0].strip(), parts[1].strip())] = coarse
    return out


def labelled_root(root: Path, work: Path) -> Path:
    """B4, C2, C3 converted with their clusters' coarse names as the ``label`` column."""
    import pandas as pd

    import hestdata

    names = cluster_names(SHARED / "her2st_annotated" / "ST-cluster" / "motivation.csv")
    for sec, (img, patient) in SECTIONS.items():
        t = pd.read_csv(SHARED / "her2st_annotated" / "ST-cluster" / "lbl" / f"{sec}-cluster-annotation.tsv.gz",
                        sep="\t")
        coarse = [names.get((patient, str(c)), "unknown") for c in t["label"]]
        t["label"] = [c if c in SHARED_CLASSES else "undetermined" for c in coarse]  # masked, counted
        lab = work / f"{sec}_labels.tsv"
        t[["x", "y", "label"]].to_csv(lab, sep="\t", index=False)
        base = SHARED / "her2st"
        s = hestdata.read_st(base / "ST-cnts" / f"{sec}.tsv.gz", spots=base / "ST-spotfiles" / f"{sec}_selection.tsv",
                             image=base / "ST-imgs" / img, sample_id=f"her2st_{sec}")
        s.slide_inputs["labels"] = lab
        hestdata.convert(s, root, metadata={"cohort": "her2st", "patient": patient}, progress=False)
    return root


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=["color-stats", "random-vit-s16"])
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args(argv)
    import hestdata
    from hestdata.bench.runner import run_benchmark

    work = a.work or Path(tempfile.mkdtemp())
    root = labelled_root(work / "root", work)
    for sid in ("her2st_B4", "her2st_C2", "her2st_C3"):
        q = hestdata.read_metadata(root / "samples" / f"{sid}.zarr").qc.labels
        print(f"{sid}: {q.n_spots_labelled} spots labelled, {q.n_rows_unmatched} unmatched rows; {q.columns['label']}")
    task = work / "task.yaml"
    task.write_text("name: her2st_cluster_classes\ntype: patch_classification\nsamples: \"cohort = 'her2st'\"\n"
                    "group_by: patient\nlabel: label\npatch: 224px_0.5um\noptions: {shots: [1, 4, 16], shot_seeds: 5}\n")
    out = {}
    for enc in a.encoders:
        t0 = time.perf_counter()
        rows = {r["metric"]: r for r in run_benchmark(root, enc, task, cache_dir=work / "cache")}
        out[enc] = {k: (r["mean"], r.get("ci_low"), r.get("ci_high")) for k, r in rows.items()}
        pooled = rows["linear_balanced_accuracy_pooled"]
        print(f"{enc} ({time.perf_counter() - t0:.0f} s): linear balanced accuracy pooled {pooled['mean']:.3f} "
              f"[{pooled['ci_low']:.3f}, {pooled['ci_high']:.3f}], folds "
              + ", ".join(f"{f}={v:.3f}" for f, v in zip(rows["linear_balanced_accuracy"]["folds"],
                                                         rows["linear_balanced_accuracy"]["fold_values"], strict=True))
              + f"; knn {rows['knn_balanced_accuracy_pooled']['mean']:.3f}; macro AUROC linear "
              f"{rows['linear_macro_auroc_pooled']['mean']:.3f}; few-shot 1/4/16: "
              + "/".join(f"{rows[f'fewshot{n}_balanced_accuracy']['mean']:.3f}" for n in (1, 4, 16))
              + f"; chance {rows['chance_balanced_accuracy_pooled']['mean']:.3f}")
    print(json.dumps(out, default=float)[:3000])
    return out


if __name__ == "__main__":
    main()
