"""What a cross-modal pretraining run is: its configuration (HESCAPE's defaults) and its whole-slide splits.

A pretraining task is a task YAML of ``type: pretrain`` (:mod:`hestdata.bench.runner`): ``samples`` (a catalog
condition), ``group_by`` (the catalog column the splits name: ``patient`` for patient-level splits, ``id`` for
slide-level ones), ``patch`` and ``splits`` — ``{val: [...], test: [...]}`` groups; every other group trains.
No group is in two splits, so no slide (and, with ``group_by: patient``, no patient) is seen both in training and
evaluation. ``options`` are :class:`PretrainConfig` fields; a key it does not know is an error.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hestdata.errors import InputError


class PretrainConfig(BaseModel):
    """Training configuration; the defaults are HESCAPE's (projection 128, batch 64, CLIP loss, temperature
    0.07 learnable, AdamW with a cosine schedule, mixed precision on a GPU)."""

    model_config = ConfigDict(extra="forbid")

    image_encoder: str = Field("random-vit-s16", description="image encoder (any name `bench list` shows)")
    image_mode: Literal["frozen", "finetune"] = Field(
        "frozen", description="frozen backbone + trained projection, or the backbone fine-tuned too")
    gene_encoder: str = Field("mlp", description="gene encoder: identity, pca, mlp, scgpt, nicheformer or an entry point")
    gene_options: dict[str, Any] = Field(default_factory=dict, description="passed to the gene encoder's factory")
    genes: str | list[str] = Field("hest", description="panel: 'hest' or 'variance' chosen on the training split, "
                                                       "or a fixed list")
    n_genes: int = Field(50, ge=2, description="panel size when chosen on the training split")
    dim: int = Field(128, ge=2, description="shared embedding width")
    loss: Literal["clip", "siglip"] = "clip"
    temperature: float = Field(0.07, gt=0, description="initial temperature (learnable)")
    batch_size: int = Field(64, ge=2)
    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0, description="peak learning rate of the projections and gene encoder")
    backbone_lr_scale: float = Field(0.1, gt=0, description="image backbone's rate relative to lr when fine-tuning")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_frac: float = Field(0.05, ge=0, lt=1, description="linear warm-up, as a fraction of all steps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU")
    seed: int = 0
    num_workers: int = Field(0, ge=0, description="loader workers per process")
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N steps (0: at each epoch's end)")
    gather: bool = Field(True, description="under DDP, the loss sees every rank's batch (one global batch)")
    eval_batch: int = Field(64, ge=2, description="HESCAPE's in-batch recall batch size")
    eval_repeats: int = Field(20, ge=1, description="random batchings averaged for the in-batch recall")
    max_fit_rows: int = Field(20_000, ge=100, description="training rows (a seeded draw) that choose the gene panel "
                                                          "and fit PCA / rank means")
    alteration: str | None = Field(None, description="a tables/slide_alterations column predicted from the mean "
                                                     "pretrained image embedding of each slide (patient folds)")

    @property
    def hash(self) -> str:
        """sha256 (16 hex) of the configuration: keys a run's outputs and its leaderboard rows."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True, default=str).encode()).hexdigest()[:16]


SPLITS = ("train", "val", "test")


def split_groups(groups_of: dict[str, str], splits: dict[str, Any] | None, where: Any = None) -> dict[str, list[str]]:
    """Sample ids per split from ``{val: [...], test: [...]}`` (group names); the rest train.

    Errors name what is wrong: an unknown split name, a group in two splits, a named group no sample has, an
    empty training or test split."""
    if not isinstance(splits, dict) or not splits.get("test"):
        raise InputError(where, "a pretrain task needs 'splits' with a 'test' list of groups (and optionally 'val')")
    unknown = set(splits) - {"val", "test"}
    if unknown:
        raise InputError(where, f"unknown split(s) {sorted(unknown)}: name 'val' and 'test'; every other group trains")
    named = {k: [str(g) for g in (v if isinstance(v, list) else [v])] for k, v in splits.items() if v}
    have = set(groups_of.values())
    for k, gs in named.items():
        missing = [g for g in gs if g not in have]
        if missing:
            raise InputError(where, f"split {k!r} names group(s) {missing} that no selected sample has; groups: "
                                    f"{sorted(have)[:20]}")
    both = set(named.get("val", [])) & set(named.get("test", []))
    if both:
        raise InputError(where, f"group(s) {sorted(both)} are in both 'val' and 'test'")
    split_of = {g: k for k, gs in named.items() for g in gs}
    out: dict[str, list[str]] = {k: [] for k in SPLITS}
    for sid in sorted(groups_of):
        out[split_of.get(groups_of[sid], "train")].append(sid)
    if not out["train"]:
        raise InputError(where, "no group is left to train on: 'val' and 'test' take every group")
    return out


def validated(model: type[BaseModel], values: dict[str, Any], what: str) -> Any:
    """``model`` built from ``values``, or an :class:`~hestdata.errors.InputError` in one line naming each bad
    field (``what`` says whose options they are)."""
    from pydantic import ValidationError

    from hestdata.errors import InputError

    try:
        return model(**values)
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                        for e in exc.errors())
        raise InputError(None, f"{what}: {why}") from None
