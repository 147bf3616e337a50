"""Benchmark harness: encoders → cached embeddings → standardized tasks → leaderboard (imports torch)."""

from hestdata.bench.encoders import Encoder, load_encoder
from hestdata.bench.tasks.expression import expression_protocol

__all__ = ["Encoder", "expression_protocol", "load_encoder"]
