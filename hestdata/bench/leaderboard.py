"""``ROOT/leaderboard.parquet``: one row per (run, metric); Markdown and self-contained HTML renderings."""

from __future__ import annotations

import html
import io
import json
import math
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

LEADERBOARD = "leaderboard.parquet"

# the metric each task type is ranked by
PRIMARY = {"expression": "pearson_mean", "retrieval": "img2expr_recall@5", "batch_effect": "batch_balanced_accuracy",
           "classification": "linear_balanced_accuracy", "slide_mil": "abmil_auroc",
           "slide_expression": "pearson_mean", "slide_retrieval": "slide2profile_recall@1",
           "pretrain": "img2gene_recall@5", "slide_pretrain": "slide2profile_recall@1",
           "patch_classification": "linear_balanced_accuracy", "cell_classification": "linear_balanced_accuracy"}


def primary_metric(task_type: str, metrics: list[str]) -> str:
    """The metric a task is ranked by: the type's primary, or for MIL tasks trained with another aggregator its
    ``<aggregator>_auroc`` (``abmil_auroc`` / ``transformer_auroc``), else the first metric."""
    p = PRIMARY.get(task_type)
    if p in metrics:
        return p
    if task_type == "slide_mil":  # the aggregator's per-fold AUROC, C-index (survival) or Pearson r (regression)
        for suffix in ("_auroc", "_c_index", "_pearson"):
            mil = [m for m in metrics if m.endswith(suffix) and not m.startswith("meanpool") and "_pooled_" not in m]
            if mil:
                return mil[0]
    return metrics[0] if metrics else ""


def _versions() -> str:
    out = {}
    for pkg in ("hestdata", "torch", "timm", "scikit-learn", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return json.dumps(out, sort_keys=True)


def make_rows(task: Any, encoder: Any, results: dict[str, list[tuple[str, float]]], *, n_items: int,
              samples: list[str], data_version: str | None = None) -> list[dict[str, Any]]:
    import numpy as np

    date = datetime.now(UTC).replace(microsecond=0).isoformat()
    rows = []
    for metric, folds in results.items():
        vals = [float(v) for _, v in folds]
        finite = [v for v in vals if math.isfinite(v)]
        rows.append({"task": task.name, "task_type": task.type, "encoder": encoder.name,
                     "fingerprint": encoder.fingerprint, "metric": metric, "folds": [str(f) for f, _ in folds],
                     "fold_values": vals, "mean": float(np.mean(finite)) if finite else float("nan"),
                     "std": float(np.std(finite)) if finite else float("nan"), "n_items": int(n_items),
                     "samples": list(samples), "config_hash": task.config_hash, "versions": _versions(), "date": date,
                     "data_version": data_version})
    return rows


def pooled_results(metrics: dict[str, float], *, suffix: str = "", fold: str = "pooled") -> dict[str, Any]:
    """A protocol's single-valued metrics as run results (``{name + suffix: [(fold, value)]}``), with each
    ``<name>_ci_low`` / ``<name>_ci_high`` pair moved into ``"_ci"`` (the interval of ``name + suffix``)."""
    out: dict[str, Any] = {f"{k}{suffix}": [(fold, v)] for k, v in metrics.items()
                           if not k.endswith(("_ci_low", "_ci_high"))}
    out["_ci"] = {f"{k}{suffix}": (metrics[f"{k}_ci_low"], metrics[f"{k}_ci_high"]) for k in metrics
                  if f"{k}_ci_low" in metrics and f"{k}_ci_high" in metrics}
    return out


GENE_LEADERBOARD = "leaderboard_genes.parquet"


def append_gene_rows(root: Path, task: Any, encoder: Any, per_gene: list[tuple[str, str, float]]) -> Path:
    """Per-gene Pearson r of an expression run, one row per (fold, gene), beside the leaderboard (HEST users
    compare encoders gene by gene; a fold mean hides which genes an encoder gets)."""
    import polars as pl

    from hestdata.store import layout as L
    from hestdata.store.atomic import atomic_write_bytes, root_lock

    date = datetime.now(UTC).replace(microsecond=0).isoformat()
    new = pl.DataFrame({"task": task.name, "encoder": encoder.name, "fingerprint": encoder.fingerprint,
                        "fold": [f for f, _, _ in per_gene], "gene": [g for _, g, _ in per_gene],
                        "pearson": [r for _, _, r in per_gene], "date": date})
    path = root / GENE_LEADERBOARD
    with root_lock(root, L.LOCK):
        df = pl.concat([pl.read_parquet(path), new], how="vertical_relaxed") if path.exists() else new
        buf = io.BytesIO()
        df.write_parquet(buf)
        atomic_write_bytes(path, buf.getvalue())
    return path


def append_rows(root: Path, rows: list[dict[str, Any]]) -> Path:
    """Append under the root lock, atomically (read, concatenate, write to a temporary file, rename)."""
    import polars as pl

    from hestdata.store import layout as L
    from hestdata.store.atomic import atomic_write_bytes, root_lock

    path = root / LEADERBOARD
    with root_lock(root, L.LOCK):
        new = pl.DataFrame(rows)
        # diagonal: rows of another kind (a pretraining run's extra fingerprints) add columns, null elsewhere
        df = pl.concat([pl.read_parquet(path), new], how="diagonal_relaxed") if path.exists() else new
        buf = io.BytesIO()
        df.write_parquet(buf)
        atomic_write_bytes(path, buf.getvalue())
    return path


def read(root: str | Path) -> Any:
    import polars as pl

    path = Path(root) / LEADERBOARD
    if not path.is_file():
        from hestdata.errors import StoreError

        raise StoreError(f"{path}: no leaderboard yet (run 'hestdata bench run' first)")
    return pl.read_parquet(path)


def latest(df: Any) -> Any:
    """The most recent row per (task, encoder fingerprint, metric)."""
    import polars as pl

    return df.sort("date").group_by(["task", "fingerprint", "metric"], maintain_order=True).last().sort(
        ["task", "metric", pl.col("mean")], descending=[False, False, True])


def _fmt(m: float, s: float) -> str:
    return "n/a" if not math.isfinite(m) else f"{m:.4f} ± {s:.4f}"


CHANCE = {"pearson_mean": "0 (no correlation)", "auroc": "0.5", "c_index": "0.5", "pearson": "0 (no correlation)",
          "recall@1": "1/n of the held-out set",
          "recall@5": "5/n of the held-out set", "recall@10": "10/n of the held-out set",
          "median_rank": "(n + 1) / 2 of the held-out set"}


def lower_is_better(metric: str) -> bool:
    """Ranks (median rank) and squared errors are better when lower; every other metric here is better when
    higher."""
    return "rank" in metric or metric == "mse" or metric.endswith("_mse")  # incl. mean_profile_mse


def _labels(sub: Any) -> dict[str, str]:
    """Display label per fingerprint: the encoder name, with a short hash when names collide."""
    by_fp = dict(zip(sub["fingerprint"].to_list(), sub["encoder"].to_list(), strict=True))
    names = list(by_fp.values())
    return {fp: (n if names.count(n) == 1 else f"{n} #{fp[:8]}") for fp, n in by_fp.items()}


_MD_SPECIAL = "\\`*{}[]()!|~"


def md_escape(text: Any) -> str:
    """A name as inert Markdown text: HTML characters as entities (a renderer that allows HTML shows them, never
    runs them) and Markdown punctuation backslash-escaped (a name cannot open a link, code, emphasis or a table
    cell); an underscore inside a word (``her2st_expression``) is left as it is, since it emphasises nothing."""
    t = html.escape(str(text), quote=False).replace("\n", " ").replace("\r", " ")
    out = []
    for i, ch in enumerate(t):
        inner = 0 < i < len(t) - 1 and t[i - 1].isalnum() and t[i + 1].isalnum()
        out.append("\\" + ch if ch in _MD_SPECIAL or (ch == "_" and not inner) else ch)
    return "".join(out)


def _task_view(df: Any, task: str, metrics: dict[str, str] | None) -> dict[str, Any]:
    """What both renderings show of one task: the metrics (primary first, with their direction), one row of cells
    per encoder (mean ± std over folds, and the 95 % bootstrap interval over spots within folds where computed),
    the primary metric's per-fold values, its chance level, the data versions and the packages."""
    sub = df.filter(df["task"] == task)
    mets = sorted(set(sub["metric"].to_list()))
    primary = (metrics or {}).get(task) or primary_metric(sub["task_type"][0], mets)
    mets = [primary] + [m for m in mets if m != primary] if primary in mets else mets
    labels = _labels(sub)
    prim = sub.filter(sub["metric"] == mets[0]).sort("mean", descending=not lower_is_better(mets[0]), nulls_last=True)
    rows = []
    for fp in dict.fromkeys(prim["fingerprint"].to_list() + sub["fingerprint"].to_list()):
        cells = []
        for m in mets:
            r = sub.filter((sub["fingerprint"] == fp) & (sub["metric"] == m))
            pooled = bool(r.height) and "folds" in r.columns and len(r["folds"][0]) == 1  # one value: no spread
            cell = (f"{r['mean'][0]:.4f}" if pooled else _fmt(r["mean"][0], r["std"][0])) if r.height else ""
            if r.height and "ci_low" in r.columns and r["ci_low"][0] is not None and math.isfinite(r["ci_low"][0]):
                cell += f" [{r['ci_low'][0]:.3f}, {r['ci_high'][0]:.3f}]"
            cells.append(cell)
        rows.append((fp, labels[fp], cells))
    folds = [(labels[row["fingerprint"]], len(row["folds"]),
              ", ".join(f"{f}={v:.4f}" for f, v in zip(row["folds"], row["fold_values"], strict=True)))
             for row in prim.iter_rows(named=True)]
    chance = CHANCE.get(mets[0].split("_", 1)[-1] if mets[0] not in CHANCE else mets[0])
    versions = sorted({str(v)[:12] for v in sub["data_version"].to_list()}) if "data_version" in sub.columns else []
    pkgs = json.loads(sub.sort("date")["versions"][-1] or "{}") if "versions" in sub.columns and sub.height else {}
    return {"sub": sub, "mets": mets, "primary": primary, "rows": rows, "folds": folds, "chance": chance,
            "versions": versions, "packages": ", ".join(f"{k} {v}" for k, v in sorted(pkgs.items()) if v)}


def _notes(v: dict[str, Any], esc: Any) -> list[str]:
    """The lines under a task's table, with names passed through ``esc``."""
    m = v["mets"][0]
    out = [f"{esc(label)}: {esc(m)} per fold ({n}): {folds}" for label, n, folds in v["folds"]]
    if v["chance"]:
        out.append(f"chance level of {esc(m)}: {v['chance']}")
    if v["versions"]:
        out.append(f"data version(s): {', '.join(v['versions'])}" + (" — rows compare only within one version"
                                                                     if len(v["versions"]) > 1 else ""))
    if v["packages"]:
        out.append(f"packages: {v['packages']}")
    return out


def render_markdown(df: Any, metrics: dict[str, str] | None = None) -> str:
    """One table per task: one row per encoder fingerprint (runs whose names collide get a short hash), one column
    per metric with its direction (↑ higher is better, ↓ lower), rows sorted by the task's primary metric in its
    direction (mean ± std over folds, and the 95 % bootstrap interval over spots within folds where computed);
    then the primary metric's per-fold values, its chance level, data versions and packages. Task and encoder
    names are escaped (:func:`md_escape`)."""
    df = latest(df)
    out = []
    for task in sorted(set(df["task"].to_list())):
        v = _task_view(df, task, metrics)
        out.append(f"### {md_escape(task)}\n")
        out.append("| encoder | " + " | ".join(f"{md_escape(m)} {'↓' if lower_is_better(m) else '↑'}"
                                               for m in v["mets"]) + " |")
        out.append("|---|" + "---|" * len(v["mets"]))
        for _, label, cells in v["rows"]:
            out.append(f"| {md_escape(label)} | " + " | ".join(cells) + " |")
        out.append("")
        out.extend(f"- {line}" for line in _notes(v, md_escape))
        out.append("")
    return "\n".join(out)


def render_html(df: Any, title: str = "hestdata leaderboard", metrics: dict[str, str] | None = None) -> str:
    """A self-contained page showing what :func:`render_markdown` shows (the same cells, intervals, per-fold
    values, chance level, versions), plus an SVG bar chart of the primary metric with ±std error bars and the
    chance line where it is a number."""
    df = latest(df)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
             "td:first-child{text-align:left}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for task in sorted(set(df["task"].to_list())):
        v = _task_view(df, task, metrics)
        parts.append(f"<section class='task' data-task='{e(task)}'><h2>{e(task)}</h2>")
        parts.append("<table><tr><th>encoder</th>" + "".join(
            f"<th>{e(m)} {'↓' if lower_is_better(m) else '↑'}</th>" for m in v["mets"]) + "</tr>")
        for fp, label, cells in v["rows"]:
            parts.append(f"<tr><td title='{e(fp)}'>{e(label)}</td>" + "".join(f"<td>{e(c)}</td>" for c in cells)
                         + "</tr>")
        parts.append("</table><ul class='notes'>" + "".join(f"<li>{line}</li>" for line in _notes(v, e)) + "</ul>")
        parts.append(_svg_bars(v["sub"].filter(v["sub"]["metric"] == v["mets"][0]), v["mets"][0], _chance_value(v)))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _chance_value(v: dict[str, Any]) -> float | None:
    """The chance level as a number where it is one (AUROC 0.5, Pearson 0), for the chart's chance line."""
    try:
        return float(str(v["chance"]).split()[0])
    except (ValueError, IndexError):
        return None


def _svg_bars(sub: Any, metric: str, chance: float | None = None) -> str:
    """The primary metric's chart (:mod:`hestdata.plot.scores`) as inline SVG in a ``<figure>``: bars with their
    95 % interval (± std over folds where a run has none) and the chance line; a note where matplotlib is
    missing (the ``ml`` extra)."""
    labels = _labels(sub)
    cols = ("fingerprint", "mean", "std", "ci_low", "ci_high")
    have = [c for c in cols if c in sub.columns]
    rows = []
    for rec in sub.select(have).iter_rows(named=True):
        m = rec["mean"]
        if m is not None and math.isfinite(m):
            rows.append((labels[rec["fingerprint"]], m, rec.get("std") or float("nan"),
                         _num(rec.get("ci_low")), _num(rec.get("ci_high"))))
    if not rows:
        return ""
    e = html.escape
    from importlib.util import find_spec

    if find_spec("matplotlib") is None:  # reading results needs no extra; the chart needs matplotlib
        chart = "<p>(chart: pip install 'hestdata[ml]' for matplotlib)</p>"
    else:
        from hestdata.plot.scores import score_figure, svg

        chart = svg(score_figure(rows, metric, str(sub["task"][0]), chance, lower_is_better(metric)))
    caption = f"{e(metric)}: bars are means, whiskers 95 % intervals (± std over folds where a run has none)"
    if chance is not None:
        caption += f"; <span class='chance'>dashed red line: chance level {chance:g}</span>"
    return f"<figure class='chart' data-metric='{e(metric)}'>{chart}<figcaption>{caption}</figcaption></figure>"


def _num(v: Any) -> float:
    return float(v) if v is not None else float("nan")
