"""Leaderboard charts (matplotlib): one horizontal bar per encoder with its 95 % interval where the run has one
(± std over folds otherwise), the chance level as a dashed line, the metric's direction in the axis label."""

from __future__ import annotations

import io
import math
from typing import Any

from hestdata.plot.style import pyplot


def score_figure(rows: list[tuple[str, float, float, float, float]], metric: str, task: str,
                 chance: float | None, lower_is_better: bool) -> Any:
    """A figure of ``(encoder, mean, std, ci_low, ci_high)`` rows (non-finite means left out by the caller)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.4))
    names = [r[0] for r in rows]
    means = [r[1] for r in rows]
    lo, hi, ci = [], [], False
    for _, m, s, a, b in rows:
        if math.isfinite(a) and math.isfinite(b):
            lo.append(m - a)
            hi.append(b - m)
            ci = True
        else:
            lo.append(s if math.isfinite(s) else 0.0)
            hi.append(s if math.isfinite(s) else 0.0)
    y = list(range(len(rows)))[::-1]
    ax.barh(y, means, color="#4c78a8", height=0.6, label=metric)
    ax.errorbar(means, y, xerr=[lo, hi], fmt="none", ecolor="black", capsize=3,
                label="95 % interval" if ci else "± std over folds")
    if chance is not None:
        ax.axvline(chance, color="#d62728", linestyle="--", linewidth=1.2, label=f"chance ({chance:g})")
    ax.set_yticks(y, names)
    ax.set_xlabel(f"{metric} ({'lower' if lower_is_better else 'higher'} is better)")
    ax.set_title(task)
    ax.legend(loc="lower right", fontsize="small", framealpha=0.9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def svg(fig: Any) -> str:
    """The figure as an inline ``<svg>`` element (no XML prologue, text kept as text, no date)."""
    plt = pyplot()
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "hestdata"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]
