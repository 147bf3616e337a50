"""Run a benchmark task on a root with one encoder, and append the result to the leaderboard.

A task is a YAML file (built-in ones live in ``hestdata/bench/tasks/``): ``name``, ``type`` (expression |
retrieval | batch_effect | classification), ``samples`` (a condition on the catalog, hestdata.store.query), ``group_by`` (catalog
column for the folds, e.g. ``patient``), ``patch`` (array name), ``label`` (obs column, classification only)
and ``options`` passed to the protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.bench.encoders import require_ml
from hestdata.bench.genes import gene_option
from hestdata.bench.leaderboard import PRIMARY, append_gene_rows  # noqa: F401  (PRIMARY re-exported)
from hestdata.bench.slide_runner import SLIDE_TASKS
from hestdata.errors import InputError
from hestdata.io import progress
from hestdata.store import layout as L
from hestdata.units import DEFAULT_PATCH

require_ml()

TASK_TYPES = ("expression", "retrieval", "batch_effect", "classification", "patch_classification",
              "cell_classification", "slide_mil", "pretrain", *SLIDE_TASKS)
LABEL_TASKS = ("classification", "patch_classification", "cell_classification")
OBS_GROUP = "obs:"  # group_by obs:<column>: folds by an item-level column (an image collection's path, a slide)


@dataclass
class Task:
    name: str
    type: str
    samples: str
    group_by: str
    patch: str = DEFAULT_PATCH.name
    label: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    labels: str | None = None  # slide_mil: table (CSV/XLSX/Parquet) with PATIENT, a slide column and the label
    patient_column: str = "PATIENT"
    slide_column: str = "FILENAME"
    splits: dict[str, Any] | None = None  # pretrain: {val: [groups], test: [groups]}; the other groups train

    @property
    def config_hash(self) -> str:
        doc = {k: v for k, v in self.__dict__.items() if not (k == "splits" and v is None)}  # as before splits existed
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def builtin_tasks() -> dict[str, Path]:
    folder = resources.files("hestdata").joinpath("bench/tasks")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def load_task(spec: str | Path) -> Task:
    """A built-in task by name, or a task YAML by path; unknown keys and types are errors."""
    import yaml

    path = builtin_tasks().get(str(spec)) or Path(spec)
    if not path.is_file():
        raise InputError(path, f"task not found; built-in tasks: {', '.join(sorted(builtin_tasks()))}")
    doc = yaml.safe_load(path.read_text())
    allowed = {"name", "type", "samples", "group_by", "patch", "label", "options", "labels", "patient_column",
               "slide_column", "splits"}
    if not isinstance(doc, dict) or set(doc) - allowed or not {"name", "type", "samples", "group_by"} <= set(doc):
        raise InputError(path, f"a task needs name, type, samples, group_by (optional patch, label, options); got {doc}")
    if doc["type"] not in TASK_TYPES:
        raise InputError(path, f"unknown task type {doc['type']!r}; one of {TASK_TYPES}")
    if doc["type"] == "pretrain" and not (isinstance(doc.get("splits"), dict) and doc["splits"].get("test")):
        raise InputError(path, "a pretrain task needs 'splits' with a 'test' list of groups (and optionally 'val')")
    if doc.get("splits") is not None and doc["type"] != "pretrain":
        raise InputError(path, f"'splits' is for pretrain tasks; a {doc['type']} task makes its own folds by group_by")
    if doc["type"] in LABEL_TASKS and not doc.get("label"):
        raise InputError(path, f"a {doc['type']} task needs 'label' (an obs column, e.g. from convert --labels)")
    if doc["type"] == "cell_classification" and not str(doc.get("patch", "")).startswith("cells-"):
        raise InputError(path, "a cell_classification task classifies cell crops: its patch is a cells-<geometry> "
                               f"array (e.g. cells-64px_0.5um), not {doc.get('patch')!r}")
    if doc["type"] == "slide_mil":
        if not doc.get("labels") or not doc.get("label"):
            raise InputError(path, "a slide_mil task needs 'labels' (a table) and 'label' (its label column)")
        lp = Path(doc["labels"])
        doc["labels"] = str(lp if lp.is_absolute() else (path.parent / lp).resolve())
    return Task(**doc)


def read_labels(t: Task) -> dict[str, tuple[str, Any]]:
    """slide id (file stem or id) -> (patient, label), from the task's labels table; with a survival head the label
    is (time, event), the event read from the column named by the ``event`` option."""
    import pandas as pd

    p = Path(t.labels or "")
    if not p.is_file():
        raise InputError(p, "labels table not found")
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_excel(p) if p.suffix in (".xlsx", ".xls") \
            else pd.read_csv(p)
    except ImportError as exc:  # pandas needs openpyxl for .xlsx
        raise InputError(p, f"cannot read this table type: {exc}", "pip install openpyxl, or save it as CSV") from exc
    event = t.options.get("event") if t.options.get("head") == "survival" else None
    if t.options.get("head") == "survival" and not event:
        raise InputError(p, "a survival task needs options.event: the labels column saying 1 (event) or 0 (censored)")
    need = {t.patient_column, t.slide_column, str(t.label)} | ({str(event)} if event else set())
    if not need <= set(df.columns):
        raise InputError(p, f"labels table lacks column(s) {sorted(need - set(df.columns))}")
    df = df.dropna(subset=[t.label] + ([event] if event else []))
    labels = list(zip(df[t.label], df[event], strict=True)) if event else list(df[t.label])
    return {Path(str(s)).name.split(".")[0]: (str(pt), lab)
            for s, pt, lab in zip(df[t.slide_column], df[t.patient_column], labels, strict=True)}


def _table(r: Any, sid: str, columns: list[str], patch: str | None = None) -> tuple[Any, list[str], Any]:
    """(X, var names, obs columns) of the table a sample's patch array points into (``tables/expression`` unless
    the array says otherwise: cell crops cut from an H&E point into ``tables/segmented_cells``)."""
    from anndata.io import read_elem

    name = L.TABLE
    if patch is not None:
        from hestdata.loader.samples import table_of

        ref = table_of(r.sample(sid), patch)
        if not ref:
            raise InputError(None, f"sample {sid}: the patches of {patch} belong to no table (slide tiles)")
        name = ref[len("tables/"):]
    g = r.sample(sid).table(name)
    var = read_elem(g["var"])
    obs = read_elem(g["obs"])
    if "X" in g:
        X = read_elem(g["X"])
    else:  # a table of items or cells without variables (anndata writes no X)
        import scipy.sparse as sp

        X = sp.csr_matrix((len(obs), len(var)))
    missing = [c for c in columns if c not in obs.columns]
    if missing:
        raise InputError(None, f"sample {sid}: tables/{name} has no column(s) {missing} (it has {list(obs.columns)})")
    return X, [str(v) for v in var.index], obs[columns] if columns else None


def _patch_rows(r: Any, sid: str, patch: str) -> np.ndarray:
    return np.asarray(r.sample(sid).patch_group(patch)[L.PATCH_OBS_INDEX][:], dtype=np.int64)


def run_benchmark(root: str | os.PathLike[str], encoder: Any, task: str | Path | Task, *, batch_size: int = 64,
                  num_workers: int = 0, device: Any = None, cache_dir: str | Path | None = None,
                  storage_options: dict[str, Any] | None = None, leaderboard: bool = True,
                  patch: str | None = None, echo: Any = None) -> list[dict[str, Any]]:
    """Embed the task's samples (cached), run its protocol, append rows to ``ROOT/leaderboard.parquet``.

    ``patch`` overrides the task's patch array (e.g. to run a built-in task on another geometry)."""

    from hestdata.bench.embed import embed_samples
    from hestdata.bench.encoders import load_encoder
    from hestdata.bench.leaderboard import append_rows, make_rows
    from hestdata.store.root import Root

    t = task if isinstance(task, Task) else load_task(task)
    if t.type == "pretrain":
        raise InputError(None, f"task {t.name} trains encoders: run it with `hestdata bench pretrain` "
                               "(hestdata.bench.pretrain.pretrain)")
    if patch is not None:
        t = Task(**{**t.__dict__, "patch": patch})
    baseline = isinstance(encoder, str) and encoder.lower() == LIBRARY_SIZE
    enc = library_size_encoder() if baseline else load_encoder(encoder)
    r = Root.open(root, storage_options)  # once: every read below is of this catalog version
    ids, groups_of = _task_samples(t, r)
    if baseline:
        if t.type not in ("expression", "retrieval"):
            raise InputError(None, f"the {LIBRARY_SIZE} baseline needs an expression or retrieval task, not {t.type}")
        embs = _library_sizes(t, r, ids)
    else:
        embs = embed_samples(r, enc, ids, patch=t.patch, batch_size=batch_size, num_workers=num_workers,
                             device=device, cache_dir=cache_dir or (r.path / "embeddings" if r.is_local else None),
                             on_sample=(lambda s, hit: echo(f"  {s}: {'cached' if hit else 'embedded'}")) if echo else None)
    emb = np.concatenate([embs[s] for s in ids])
    if t.type == "slide_mil":
        results = _run_slide_mil(t, r, enc, ids, embs, echo)
    elif t.type in SLIDE_TASKS:
        from hestdata.bench.slide_runner import run_slide_task

        with progress.bar(f"{t.name}: {enc.name} folds"):
            results = run_slide_task(t, r, ids, embs, groups_of, enc,
                                     cache_dir or (r.path / "embeddings" if r.is_local else None))
    else:
        groups = np.concatenate([[groups_of[s]] * len(embs[s]) for s in ids])
        batch = np.concatenate([[s] * len(embs[s]) for s in ids])
        counts, genes, labels, libs = None, None, None, None
        if t.type in ("expression", "retrieval") or (t.label and t.type in LABEL_TASKS):
            counts, genes, labels, libs, item_groups = _task_targets(t, r, ids)
            if item_groups is not None:
                groups = item_groups
        figures = (r.path / "figures" / t.name / f"{enc.name}-{enc.fingerprint[:8]}"
                   if r.is_local and t.type in ("patch_classification", "cell_classification") else None)
        with progress.bar(f"{t.name}: {enc.name} folds"):
            results = _run(t, emb, counts, genes, groups, batch, labels, libs, figures)
        if figures is not None and echo:
            echo(f"  confusion matrix: {figures / 'confusion.png'}; predictions: {figures / 'predictions.csv'}")
    per_gene = results.pop("_per_gene", None)
    intervals = results.pop("_ci", {})
    rows = make_rows(t, enc, results, n_items=len(emb), samples=ids, data_version=data_version(r.catalog, ids))
    for row in rows:
        lo, hi = intervals.get(row["metric"], (float("nan"), float("nan")))  # type: ignore[union-attr]
        row["ci_low"], row["ci_high"] = float(lo), float(hi)
    if leaderboard and r.is_local:
        append_rows(r.path, rows)
        if per_gene:
            append_gene_rows(r.path, t, enc, per_gene)
    return rows


def data_version(catalog: Any, ids: list[str]) -> str:
    """sha256 over the (id, content digest) of the samples a run used: two runs compare only when it matches."""
    import hashlib

    digests = dict(zip(catalog["id"].to_list(), catalog["sha256"].to_list(), strict=True))
    h = hashlib.sha256()
    for s in sorted(ids):
        h.update(f"{s}\t{digests.get(s)}\n".encode())
    return h.hexdigest()


LIBRARY_SIZE = "library-size"


def library_size_encoder() -> Any:
    """The ``library-size`` baseline: each spot is represented by log1p of its total counts alone (no image).
    Run beside every encoder, it shows how much of a score sequencing depth and cellularity explain."""
    from hestdata.bench.encoders import Encoder

    def no_images(_: Any) -> Any:
        raise RuntimeError("the library-size baseline reads counts, not images")

    return Encoder(LIBRARY_SIZE, no_images, None, None, None, "fp32", None, None, True,
                   {"baseline": "log1p(total counts of the spot)"})


def _library_sizes(t: Task, r: Any, ids: list[str]) -> dict[str, np.ndarray]:
    """(n_patches, 1) log1p library size per sample, in patch order."""
    import scipy.sparse as sp

    out = {}
    for s in ids:
        X, _, _ = _table(r, s, [], t.patch)
        rows = _patch_rows(r, s, t.patch)
        Xs = (X if sp.issparse(X) else sp.csr_matrix(X)).tocsr()
        out[s] = np.log1p(np.asarray(Xs[rows].sum(axis=1), dtype=np.float64)).reshape(-1, 1).astype(np.float32)
    return out


def _task_samples(t: Task, r: Any) -> tuple[list[str], dict[str, str]]:
    """The task's sample ids (catalog filter, with the patch array) and each one's fold group."""
    import polars as pl

    from hestdata.errors import HestdataError

    try:
        cat = r.select(t.samples).catalog
    except HestdataError as exc:
        raise InputError(None, f"task {t.name}: bad samples filter {t.samples!r}: {exc}") from exc
    cat = cat.filter(pl.col("patch_arrays").list.contains(t.patch)).sort("id")
    if cat.height == 0:
        raise InputError(None, f"task {t.name}: no sample in {r.url} matches {t.samples!r} with patches {t.patch}")
    ids = cat["id"].to_list()
    if t.group_by.startswith(OBS_GROUP):  # an item-level group (an obs column): read with the labels
        if t.type not in ("patch_classification", "cell_classification"):
            raise InputError(None, f"task {t.name}: group_by {t.group_by!r} (an obs column) is for patch and cell "
                                   f"classification; a {t.type} task folds by a catalog column")
        return ids, dict.fromkeys(ids, "")
    if t.group_by not in cat.columns:
        raise InputError(None, f"task {t.name}: group_by {t.group_by!r} is not a catalog column (or obs:<column> "
                               "for an obs column of the items)")
    if cat[t.group_by].null_count():
        raise InputError(None, f"task {t.name}: some samples have no {t.group_by}")
    return ids, dict(zip(ids, cat[t.group_by].cast(pl.String).to_list(), strict=True))


def _task_targets(t: Task, r: Any, ids: list[str]
                  ) -> tuple[Any, list[str], np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Counts of the genes every sample has (rows in patch order), the labels if the task has any, and each
    row's library size over its sample's **whole** table (what CP10k divides by, and the library-size baseline
    uses)."""
    import scipy.sparse as sp

    obs_group = t.group_by[len(OBS_GROUP):] if t.group_by.startswith(OBS_GROUP) else None
    cols = list(dict.fromkeys(([t.label] if t.label else []) + ([obs_group] if obs_group else [])))
    tables = {s: _table(r, s, cols, t.patch) for s in ids}
    shared = set(tables[ids[0]][1]).intersection(*(tables[s][1] for s in ids[1:]))
    common = [g for g in tables[ids[0]][1] if g in shared]  # linear in the number of genes
    blocks, labs, libs, grp = [], [], [], []
    for s in ids:
        X, var, obs = tables[s]
        rows = _patch_rows(r, s, t.patch)
        pos = {g: i for i, g in enumerate(var)}
        Xs = (X if sp.issparse(X) else sp.csr_matrix(X)).tocsr()[rows]
        blocks.append(Xs[:, [pos[g] for g in common]])
        libs.append(np.asarray(Xs.sum(axis=1), dtype=np.float64).ravel())
        if t.label:
            labs.append(np.asarray(obs[t.label])[rows])
        if obs_group:
            col = obs[obs_group]
            if col.isna().any():
                raise InputError(None, f"task {t.name}: sample {s}: {int(col.isna().sum())} item(s) have no "
                                       f"{obs_group} (group_by {t.group_by})")
            grp.append(np.array([f"{s}/{v}" for v in col.astype(str)], dtype=object)[rows])
    return (sp.vstack(blocks).tocsr(), common, np.concatenate(labs) if labs else None, np.concatenate(libs),
            np.concatenate(grp) if grp else None)


def _run_slide_mil(t: Task, r: Any, enc: Any, ids: list[str], embs: dict[str, np.ndarray],
                   echo: Any) -> dict[str, Any]:
    """Patient bags of slide embeddings -> the aggregator and mean-pool folds with STAMP's recipe, pooled
    statistics and curves (and held-out attention maps)."""
    from hestdata.bench.tasks.slide_mil import slide_mil_protocol

    lab = read_labels(t)
    missing = [s for s in ids if s not in lab]
    bags: dict[str, list[np.ndarray]] = {}
    y: dict[str, Any] = {}
    for s in ids:
        if s in lab:
            pt, label = lab[s]
            if pt in y and y[pt] != label:
                first = next(o for o in ids if o in lab and lab[o][0] == pt)
                raise InputError(Path(t.labels or ""), f"patient {pt!r} has slides with different {t.label!r} labels: "
                                 f"{first} is {y[pt]!r}, {s} is {label!r} (a patient-level task needs one label "
                                 "per patient)")
            bags.setdefault(pt, []).append(embs[s])
            y[pt] = label
    opts = dict(t.options)
    opts.pop("event", None)
    want_maps = bool(opts.pop("heatmaps", True))
    if "deploy" in opts:
        opts["split_of"] = _deploy_split(t, r, ids, lab, opts.pop("deploy"))
    agg = str(opts.get("aggregator", "abmil"))
    head = str(opts.get("head", "classification"))
    if head == "survival":
        opts["events"] = {p: v[1] for p, v in y.items()}
        y = {p: v[0] for p, v in y.items()}
    if agg == "transformer" and "coords" not in opts:  # positions of the patches, aligned with the bags
        pos: dict[str, list[np.ndarray]] = {}
        for s in ids:
            if s in lab:
                pos.setdefault(lab[s][0], []).append(_patch_centres(r, s, t.patch))
        opts["coords"] = {p: np.concatenate(c) for p, c in pos.items()}
    res = slide_mil_protocol({p: np.concatenate(b) for p, b in bags.items()}, y, **opts)
    if want_maps and r.is_local:
        _attention_maps(r, t, enc, ids, lab, embs, res.attention, echo)
    if echo and missing:
        echo(f"  {len(missing)} slide(s) without a label were left out: {missing[:5]}")
    return mil_results(res, t, enc, r, echo)


def _deploy_split(t: Task, r: Any, ids: list[str], lab: dict[str, tuple[str, Any]], deploy: Any) -> dict[str, str]:
    """patient -> "train" / "test" from the task's ``deploy: {column: COL, train: VALUE, test: VALUE}`` (a catalog
    column such as ``cohort`` or a site): STAMP's train-on-one-cohort, deploy-on-another. A patient with slides in
    both cohorts, or in neither, is an error."""
    if not isinstance(deploy, dict) or not {"column", "train", "test"} <= set(deploy):
        raise InputError(None, f"task {t.name}: deploy needs column, train and test (e.g. {{column: cohort, "
                               "train: A, test: B}})")
    col = str(deploy["column"])
    cat = r.catalog
    if col not in cat.columns:
        raise InputError(None, f"task {t.name}: deploy column {col!r} is not a catalog column")
    value = dict(zip(cat["id"].to_list(), cat[col].cast(str).to_list(), strict=True))
    side = {str(deploy["train"]): "train", str(deploy["test"]): "test"}
    out: dict[str, str] = {}
    for s in ids:
        if s not in lab:
            continue
        pt, got = lab[s][0], side.get(value.get(s))
        if got is None:
            raise InputError(None, f"task {t.name}: slide {s} has {col} = {value.get(s)!r}, neither "
                                   f"{deploy['train']!r} nor {deploy['test']!r}; narrow 'samples'")
        if out.setdefault(pt, got) != got:
            raise InputError(None, f"task {t.name}: patient {pt!r} has slides in both cohorts")
    return out


MIL_METRICS = {"classification": ("auroc", "balanced_accuracy"), "regression": ("pearson", "mse"),
               "survival": ("c_index",)}
MIL_POOLED = {"classification": ("auroc", "ap", "f1"), "regression": ("pearson",), "survival": ("c_index",)}


def mil_results(res: Any, t: Task, enc: Any, r: Any, echo: Any) -> dict[str, Any]:
    """Leaderboard metrics of a MIL run: per fold, and pooled out of fold (``<name>_pooled_<metric>`` with its 95 %
    bootstrap interval); for a classification head on a local root, the pooled ROC/PR figure and tables under
    ``ROOT/figures/<task>/<encoder>-<fp8>/``."""
    out: dict[str, Any] = {}
    ci: dict[str, tuple[float, float]] = {}
    for name in (res.aggregator, "meanpool"):
        for m in MIL_METRICS[res.head]:
            out[f"{name}_{m}"] = [(str(f["fold"]), f[f"{name}_{m}"]) for f in res.folds]
        for m in MIL_POOLED[res.head]:
            st = res.pooled[name]
            out[f"{name}_pooled_{m}"] = [("pooled", st[m])]
            ci[f"{name}_pooled_{m}"] = st[f"{m}_ci"]
    out["_ci"] = ci
    if res.head == "classification" and r.is_local:
        from hestdata.bench.tasks.mil_stats import save_curves

        folder = r.path / "figures" / t.name / f"{enc.name}-{enc.fingerprint[:8]}"
        how = "external cohort" if res.external else "out-of-fold"
        save_curves(res.pooled[res.aggregator], folder, f"{t.name}: {enc.name} ({res.aggregator}), {how}")
        _write_predictions(res, folder / "predictions.csv")
        if echo:
            echo(f"  ROC/PR curves: {folder / 'roc_pr.png'}; per-patient predictions: {folder / 'predictions.csv'}")
    return out


def _write_predictions(res: Any, path: Path) -> None:
    """One row per scored patient: label, predicted class, each class's probability (written atomically)."""
    import csv
    import io

    from hestdata.store.atomic import atomic_write_bytes

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["patient", "label", "predicted", *[f"p_{c}" for c in res.classes]])
    for p, proba in res.oof.items():
        w.writerow([p, res.labels.get(p), res.classes[int(np.argmax(proba))], *[f"{v:.6g}" for v in proba]])
    atomic_write_bytes(path, buf.getvalue().encode())


def _patch_centres(r: Any, sample_id: str, patch: str) -> np.ndarray:
    """(n, 2) µm centres of a sample's patch array, in patch order (the order of its embeddings)."""
    return np.asarray(r.sample(sample_id).patch_group(patch)[L.PATCH_CENTERS][:], dtype=np.float64)


def _item_attention(r: Any, patch: str, bags: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Each item's held-out attention (sample, item id, the item's labels, weight), written atomically."""
    import pandas as pd

    from hestdata.store.atomic import atomic_write_bytes

    frames = []
    for s, w in bags:
        smp = r.sample(s)
        obs = smp.read_table(L.ITEMS_TABLE).obs
        rows = _patch_rows(r, s, patch)
        f = obs.iloc[rows].drop(columns=[c for c in ("path", "image_width_px", "image_height_px") if c in obs])
        frames.append(f.assign(sample=s, attention=np.asarray(w, dtype=float)).reset_index())
    df = pd.concat(frames, ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, df[["sample", *[c for c in df.columns if c != "sample"]]].to_csv(index=False).encode())


def _attention_maps(r: Any, t: Task, enc: Any, ids: list[str], lab: dict[str, tuple[str, Any]],
                    embs: dict[str, np.ndarray], attention: dict[str, np.ndarray], echo: Any) -> None:
    """Held-out attention of each slide as a heatmap: ROOT/heatmaps/<task>/<encoder>-<fp8>/<slide>.png (an image
    collection's bags, which have no spatial frame: ``attention.csv`` there, one row per item)."""
    from hestdata.bench.heatmap import render_heatmap

    out = r.path / "heatmaps" / t.name / f"{enc.name}-{enc.fingerprint[:8]}"
    offsets: dict[str, int] = {}
    items: list[tuple[str, np.ndarray]] = []
    for s in ids:  # bags were concatenated in this order per patient
        if s not in lab:
            continue
        patient = lab[s][0]
        if patient not in attention:
            continue
        a = offsets.get(patient, 0)
        w = attention[patient][a:a + len(embs[s])]
        offsets[patient] = a + len(embs[s])
        if len(w) and r.sample(s).variant == "images":  # no spatial frame: each item's weight in a table
            items.append((s, w))
        elif len(w):
            render_heatmap(r.sample(s), t.patch, w, out / f"{s}.png", what="attention (held out)",
                           title=f"{s}: {t.name}, {enc.name} attention over {len(w)} patches")
    if items:
        _item_attention(r, t.patch, items, out / "attention.csv")
    if echo:
        echo(f"  attention heatmaps: {out}")


def _run(t: Task, emb: np.ndarray, counts: Any, genes: Any, groups: np.ndarray, batch: np.ndarray,
         labels: Any, libs: np.ndarray | None = None, figures: Path | None = None
         ) -> dict[str, list[tuple[str, float]]]:
    """metric -> [(fold label, value)] for the task (``batch``: the sample of each row; ``libs``: each row's
    library size over its whole table; ``figures``: where patch and cell classification write their confusion
    matrix and out-of-fold predictions)."""
    o = gene_option(t.options)
    if t.type == "expression":
        from hestdata.bench.tasks.expression import expression_protocol

        res = expression_protocol(emb, counts, groups, genes=genes, slides=batch, library_size=libs, **o)
        per_gene = [(f.test_group, str(gname), float(r)) for f in res.folds for gname, r in zip(f.genes, f.pearson,
                                                                                               strict=True)]
        from hestdata.bench.tasks.expression import bootstrap_interval

        return {"pearson_mean": [(f.test_group, f.mean) for f in res.folds], "_per_gene": per_gene,  # type: ignore[dict-item]
                "_ci": {"pearson_mean": bootstrap_interval(res, seed=int(o.get("seed", 1)))}}
    if t.type == "retrieval":
        from hestdata.bench.tasks.retrieval import retrieval_protocol

        res = retrieval_protocol(emb, counts, groups, library_size=libs, **o)
        keys = [k for k in res.folds[0] if k not in ("test_group", "n_test")]
        return {k: [(f["test_group"], f[k]) for f in res.folds] for k in keys}
    if t.type == "batch_effect":
        from hestdata.bench.tasks.probes import batch_effect

        m = batch_effect(emb, batch, labels, **o)
        return {k: [("all", v)] for k, v in m.items()}
    if t.type in ("patch_classification", "cell_classification"):  # the same probes; cells: a cells-* array
        return _patch_classification(emb, labels, groups, o, figures, f"{t.name}: {t.label}")
    from hestdata.bench.tasks.probes import classification

    out: dict[str, list[tuple[str, float]]] = {}
    for row in classification(emb, labels, groups, **o):
        for k in ("macro_f1", "balanced_accuracy", "auroc"):
            out.setdefault(f"{row['probe']}_{k}", []).append((row["test_group"], row[k]))
    return out


def _classification_outputs(res: Any, folder: Path, title: str) -> None:
    """The linear probe's pooled out-of-fold confusion matrix and a table of every labelled item's prediction."""
    import pandas as pd

    from hestdata.plot.confusion import confusion_figure
    from hestdata.store.atomic import atomic_write_bytes

    proba = res.oof_proba["linear"]
    pred = np.asarray(res.classes, dtype=object)[proba.argmax(axis=1)]
    confusion_figure(res.y, pred, res.classes, f"{title} — linear probe, out of fold", folder / "confusion.png")
    df = pd.DataFrame({"group": res.groups, "label": res.y, "predicted": pred,
                       **{f"p_{c}": proba[:, j] for j, c in enumerate(res.classes)}})
    atomic_write_bytes(folder / "predictions.csv", df.to_csv(index=False).encode())


def _patch_classification(emb: np.ndarray, labels: Any, groups: np.ndarray, o: dict[str, Any],
                          figures: Path | None = None, title: str = "") -> dict[str, Any]:
    """Per-fold metrics of every probe (``<probe>_<metric>``, few-shot ``fewshot<n>_…``) and the pooled out-of-fold
    ones (``<probe>_<metric>_pooled``) with their 95 % bootstrap intervals; with ``figures``, the linear probe's
    confusion matrix (``confusion.png``) and every item's out-of-fold prediction (``predictions.csv``)."""
    from hestdata.bench.tasks.patch_classification import patch_classification_protocol

    if "shots" in o:
        o = {**o, "shots": tuple(int(v) for v in o["shots"])}
    res = patch_classification_protocol(emb, labels, groups, **o)
    if figures is not None:
        _classification_outputs(res, figures, title)
    from hestdata.bench.leaderboard import pooled_results

    keys = [k for k in res.folds[0] if k not in ("test_group", "n_test", "C")]
    out: dict[str, Any] = {k: [(f["test_group"], f.get(k, float("nan"))) for f in res.folds] for k in keys}
    return {**out, **pooled_results(res.pooled, suffix="_pooled")}
