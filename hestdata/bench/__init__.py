"""Benchmark harness: encoders → cached embeddings → standardized tasks → leaderboard.

Running encoders needs the ``ml`` extra (torch, timm, scikit-learn: ``pip install 'hestdata[ml]'``); the modules
that do (encoders, embedding, the runner) say so in one line when it is missing. Reading results does not: the
leaderboard (:mod:`hestdata.bench.leaderboard`) renders with polars alone, its charts where matplotlib is there.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Encoder", "expression_protocol", "load_encoder"]


def __getattr__(name: str) -> Any:
    if name in ("Encoder", "load_encoder"):
        from hestdata.bench import encoders

        return getattr(encoders, name)
    if name == "expression_protocol":
        from hestdata.bench.tasks.expression import expression_protocol

        return expression_protocol
    raise AttributeError(f"module 'hestdata.bench' has no attribute {name!r}")
