"""Benchmark harness: encoders → cached embeddings → standardized tasks → leaderboard (imports torch, timm and
scikit-learn: ``pip install 'hestdata[ml]'``)."""

from hestdata.errors import require_extra

for _module in ("torch", "timm", "sklearn"):
    require_extra(_module, "ml", "the benchmark harness (hestdata.bench)")

from hestdata.bench.encoders import Encoder, load_encoder  # noqa: E402  (after the extra check)
from hestdata.bench.tasks.expression import expression_protocol  # noqa: E402

__all__ = ["Encoder", "expression_protocol", "load_encoder"]
