"""Fine-tuning an image encoder on a classification or expression task (``hestdata bench finetune``), scored
against the same encoder frozen under a linear probe, on the same folds.

The feature-extractor benchmark of Neidlinger et al. shows that hours of fine-tuning on one GPU match the best
frozen extractors; this measures that trade on a root's own task. Per fold of the task's groups (a catalog column:
patients, or the fields of view of a collection converted with ``--group-by image``):

1. the held-out groups are the test set; ``val_fraction`` of the remaining groups (at least one) the validation
   set, the rest the training set — no group is in two of them;
2. the encoder gets a linear head and is trained end to end (``mode: full``), in its last ``N`` blocks
   (``last:N``), through LoRA adapters of rank ``R`` on its linear layers (``lora:R``; the base weights frozen), or
   head only (``head``); the head at ``lr``, the backbone at ``lr x backbone_lr_scale``, adapters at ``lr``;
   AdamW, warm-up then cosine, class-weighted cross-entropy (balanced) or MSE on standardised log1p targets;
   random flips and quarter turns of the uint8 batch when ``augment``;
3. each epoch is scored on the validation set (balanced accuracy, or the mean Pearson r over the genes); the best
   epoch's weights are kept and training stops after ``patience`` epochs without improvement;
4. the kept model is scored on the test set, beside the **frozen linear probe** of the same encoder (standardised
   features, balanced logistic regression or ridge, ``C``/``alpha`` chosen on the same validation set) — the
   gain is fine-tuned minus frozen.

Training streams through :class:`~hestdata.PatchDataset` / :func:`~hestdata.make_loader` (shard-aware shuffle,
workers, DDP ranks under ``torchrun``) and reuses the pretraining trainer: ``OUT/fold<k>/checkpoint.pt`` holds
model, optimiser, schedule, loader position and RNG state, written atomically every epoch (and every
``checkpoint_every`` steps), so a killed run resumes where it stopped; finished folds are skipped on a rerun.
Outputs: ``OUT/result.json`` (per fold and pooled), ``OUT/predictions.csv`` (every test item, both models) and
leaderboard rows for ``<encoder>+finetune[<mode>]`` and ``<encoder>+frozen-linear``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hestdata.bench.encoders import require_ml
from hestdata.errors import InputError

require_ml()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from hestdata.bench.pretrain import (  # noqa: E402
    BEST,
    _atomic_torch_save,
    _autocast,
    _dist,
    _ids_expr,
    _Trainer,
    loader_of,
)


class FinetuneConfig(BaseModel):
    """Fine-tuning configuration (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = Field("random-vit-s16", description="image encoder with a torch module (timm name, built-in, …)")
    mode: str = Field("lora:8", description="full, last:N (the last N blocks), lora:R (adapters of rank R) or head")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0, description="rate of the head and the adapters")
    backbone_lr_scale: float = Field(0.1, gt=0, description="backbone rate relative to lr (full, last:N)")
    weight_decay: float = Field(0.05, ge=0)
    warmup_frac: float = Field(0.1, ge=0, lt=1)
    patience: int = Field(3, ge=1, description="epochs without a better validation score before stopping")
    val_fraction: float = Field(0.25, gt=0, lt=1, description="share of the training groups that validate")
    n_folds: int | None = Field(None, ge=2, description="folds over the groups (default: the task's, else one "
                                                         "per group)")
    folds: list[int] | None = Field(None, description="run only these folds (0-based)")
    augment: bool = Field(True, description="random flips and quarter turns while training")
    n_genes: int = Field(50, ge=1, description="expression: the most variable genes of the training split")
    lora_alpha: float = Field(16.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N steps")
    gather: bool = False  # the trainer's DDP option for contrastive losses; a per-item loss needs no gathering

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        kind, _, n = v.partition(":")
        if kind in ("full", "head") and not n:
            return v
        if kind in ("last", "lora") and n.isdigit() and int(n) >= 1:
            return v
        raise ValueError(f"mode {v!r}: full, head, last:N or lora:R (N, R positive integers)")

    @property
    def hash(self) -> str:
        """sha256 (16 hex) of what changes a fold's result (not which folds run, nor workers or checkpoint cadence)."""
        doc = self.model_dump(exclude={"folds", "num_workers", "checkpoint_every"})
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · B(A(x))`` with ``base`` frozen, A Kaiming-initialised and B zero (Hu et al., 2021):
    the wrapped layer starts as the original one."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(x)) * self.scale


def add_lora(module: nn.Module, rank: int, alpha: float) -> int:
    """Wrap every ``nn.Linear`` inside ``module``'s blocks (attention and MLP; every linear layer when the module
    has no ``blocks``) in :class:`LoRALinear`; returns how many."""
    scope = getattr(module, "blocks", module)
    targets = [(parent, name, child) for parent in scope.modules() for name, child in parent.named_children()
               if isinstance(child, nn.Linear)]
    for parent, name, child in targets:
        setattr(parent, name, LoRALinear(child, rank, alpha))
    return len(targets)


def _last_blocks(module: nn.Module, n: int) -> list[nn.Module]:
    """The last ``n`` blocks to train: a ViT's ``blocks`` (and its final norm), a ResNet's stages, else the last
    ``n`` children that hold parameters."""
    if hasattr(module, "blocks"):
        return [*list(module.blocks)[-n:], *[m for k in ("norm", "fc_norm") if isinstance(m := getattr(module, k, None),
                                                                                         nn.Module)]]
    stages = [getattr(module, f"layer{i}") for i in range(1, 5) if hasattr(module, f"layer{i}")]
    if stages:
        return stages[-n:]
    kids = [c for c in module.children() if any(True for _ in c.parameters())]
    return kids[-n:]


class FinetuneModel(nn.Module):
    """The encoder's module with a linear head, trainable as ``mode`` says; uint8 batches in, logits out."""

    finetune = True  # the trainer saves every weight (adapters and unfrozen blocks change the backbone)

    def __init__(self, enc: Any, mode: str, n_out: int, feature_dim: int, lora_alpha: float = 16.0) -> None:
        super().__init__()
        if not isinstance(enc.module, nn.Module):
            raise InputError(None, f"encoder {enc.name} has no torch module to fine-tune (a fixed function)",
                             "pick a timm name or a built-in network such as random-vit-s16")
        self.enc, self.backbone = enc, enc.module
        self.backbone.requires_grad_(False)
        kind, _, n = mode.partition(":")
        if kind == "full":
            self.backbone.requires_grad_(True)
        elif kind == "last":
            for m in _last_blocks(self.backbone, int(n)):
                m.requires_grad_(True)
        elif kind == "lora":
            if not add_lora(self.backbone, int(n), lora_alpha):
                raise InputError(None, f"encoder {enc.name}: no linear layer to adapt with LoRA", "use full or last:N")
        self.head = nn.Linear(feature_dim, n_out)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.enc.forward(self.enc.preprocess(images)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and quarter turns of a (B, C, H, W) batch (square patches; a tissue or a cell has no
    up)."""
    out = images.clone()
    flip = torch.rand(len(images), generator=gen) < 0.5
    turns = torch.randint(0, 4, (len(images),), generator=gen)
    for i in range(len(images)):
        x = out[i].flip(-1) if flip[i] else out[i]
        out[i] = torch.rot90(x, int(turns[i]), dims=(-2, -1))
    return out


@dataclass
class FoldData:
    """What a fold's trainer needs besides the model: its splits and the targets' encoding."""

    kind: Literal["classification", "expression"]
    classes: list[str] = field(default_factory=list)
    class_weights: np.ndarray | None = None
    genes: list[str] = field(default_factory=list)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None


def _dataset(r: Any, t: Any, ids: list[str], fd: FoldData) -> Any:
    from hestdata.loader import PatchDataset

    if fd.kind == "classification":
        return PatchDataset(r, query=_ids_expr(ids), patch=t.patch, labels=t.label, genes=[])
    return PatchDataset(r, query=_ids_expr(ids), patch=t.patch, genes=fd.genes, targets="log1p")


@lru_cache(maxsize=16)
def _class_map(dataset_classes: tuple[str, ...], classes: tuple[str, ...]) -> torch.Tensor:
    """A dataset's class index -> the run's (-1: a class the run leaves out; the last entry maps unlabelled)."""
    return torch.tensor([classes.index(c) if c in classes else -1 for c in dataset_classes] + [-1])


def _targets(batch: dict[str, Any], ds: Any, fd: FoldData) -> torch.Tensor:
    """The batch's targets: global class indices (-1 unlabelled) or standardised log1p expression."""
    if fd.kind == "classification":
        local = batch["label"].long()
        to_global = _class_map(tuple(ds.classes), tuple(fd.classes))
        return to_global[torch.where(local >= 0, local, torch.full_like(local, len(ds.classes)))]
    y = batch["expression"].float()
    return (y - torch.as_tensor(fd.mean, dtype=torch.float32)) / torch.as_tensor(fd.std, dtype=torch.float32)


class _FinetuneTrainer(_Trainer):
    label = "fine-tuning"

    def __init__(self, model: FinetuneModel, r: Any, t: Any, cfg: FinetuneConfig, fd: FoldData,
                 splits: dict[str, list[str]], out: Path, device: Any) -> None:
        self.fd = fd
        self.val_ds: Any = None
        self.val_name = "val balanced accuracy" if fd.kind == "classification" else "val Pearson r"
        super().__init__(model, r, t, cfg, fd.genes, splits, out, device)

    def _build_loader(self) -> Any:
        self.ds = _dataset(self.r, self.t, self.splits["train"], self.fd)
        return loader_of(self.ds, self.cfg, shuffle=True, batch_size=self.cfg.batch_size, drop_last=True,
                         distributed=self.world > 1)

    def _param_groups(self) -> list[dict[str, Any]]:
        head = list(self.model.head.parameters())
        lora = [p for n, p in self.model.backbone.named_parameters() if p.requires_grad and "lora_" in n]
        back = [p for n, p in self.model.backbone.named_parameters() if p.requires_grad and "lora_" not in n]
        groups = [{"params": head + lora, "lr": self.cfg.lr}]
        if back:
            groups.append({"params": back, "lr": self.cfg.lr * self.cfg.backbone_lr_scale})
        return groups

    def _identity(self) -> dict[str, Any]:
        return {"config_hash": self.cfg.hash, "splits": self.splits, "encoder": self.model.enc.fingerprint,
                "classes": self.fd.classes, "genes": self.fd.genes}

    def _loss(self, batch: dict[str, Any]) -> Any:
        images = batch["image"]
        if self.cfg.augment:  # drawn from (seed, step): a resumed run augments its batches as the whole run did
            images = augment(images, torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step))
        out = self.net(images.to(self.device, non_blocking=True)).float()
        y = _targets(batch, self.ds, self.fd).to(self.device)
        if self.fd.kind == "classification":
            w = torch.as_tensor(self.fd.class_weights, dtype=torch.float32, device=self.device)
            return nn.functional.cross_entropy(out, y, weight=w, ignore_index=-1)
        return nn.functional.mse_loss(out, y)

    def _validate(self, row: dict[str, Any], epoch: int) -> None:
        if self.val_ds is None:  # opened at the first validation, kept for the epochs after it
            self.val_ds = _dataset(self.r, self.t, self.splits["val"], self.fd)
        pred = predict(self.model, self.r, self.t, self.splits["val"], self.fd, self.cfg, self.device,
                       dataset=self.val_ds)
        row["val_score"] = score(pred, self.fd)["primary"]
        if row["val_score"] > self.best[0]:
            self.best = (row["val_score"], epoch)
            _atomic_torch_save({"identity": self.ident, "model": {k: v.detach().cpu() for k, v in
                                                                  self.model.state_dict().items()}, "epoch": epoch},
                               self.out / BEST)

    def _stop(self, epoch: int) -> bool:
        """Patience spent (rank 0 validates; under DDP its decision is broadcast, so every rank stops together)."""
        stop = self.best[1] is not None and epoch - self.best[1] >= self.cfg.patience
        if self.world > 1:
            import torch.distributed as dist

            flag = torch.tensor([int(stop)], device=self.device)
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())
        return stop

    def run(self, max_steps: int | None, echo: Any) -> bool:
        if self.history and self._stop(int(self.history[-1]["epoch"])):
            return True  # stopped early before it was killed: nothing left to train
        return super().run(max_steps, echo)


def predict(model: FinetuneModel, r: Any, t: Any, ids: list[str], fd: FoldData, cfg: FinetuneConfig,
            device: Any, *, features: bool = False, dataset: Any = None) -> dict[str, np.ndarray]:
    """The model's outputs (or its encoder's features) and the targets of every item of ``ids``, in dataset order
    (``dataset``: that split's dataset, opened once by a caller that predicts on it again)."""
    ds = dataset if dataset is not None else _dataset(r, t, ids, fd)
    ld = loader_of(ds, cfg, shuffle=False, batch_size=max(64, cfg.batch_size), drop_last=False, distributed=False)
    ac, _ = _autocast(cfg, device)
    outs, ys, items = [], [], []
    model.eval()
    with torch.inference_mode(), ac():
        for batch in ld:
            x = batch["image"].to(device)
            outs.append((model.features(x) if features else model(x)).float().cpu().numpy())
            ys.append(_targets(batch, ds, fd).numpy())
            items.append(np.array([f"{s}/{o}" for s, o in zip(batch["sample_id"], batch["obs_id"], strict=True)]))
    model.train()
    return {"out": np.concatenate(outs), "y": np.concatenate(ys), "item": np.concatenate(items)}


def score(pred: dict[str, np.ndarray], fd: FoldData) -> dict[str, float]:
    """Balanced accuracy, weighted F1 and macro AUROC (classification), or mean Pearson r (expression), on the
    labelled items; ``primary`` is the first."""
    from hestdata.bench.metrics import pearson_per_column
    from hestdata.bench.tasks.patch_classification import class_scores

    y, out = pred["y"], pred["out"]
    if fd.kind == "classification":
        keep = y >= 0
        if not keep.any():
            return {"primary": float("nan")}
        p = torch.softmax(torch.as_tensor(out[keep]), dim=1).numpy()
        m = class_scores(np.asarray(fd.classes, dtype=object)[y[keep]], p, list(fd.classes))
        return {"primary": m["balanced_accuracy"], **m}
    r = float(np.mean(np.nan_to_num(pearson_per_column(out, y), nan=0.0)))  # a constant gene or output: r = 0
    return {"primary": r, "pearson_mean": r}


def frozen_linear(train: dict[str, np.ndarray], val: dict[str, np.ndarray], test: dict[str, np.ndarray],
                  fd: FoldData) -> np.ndarray:
    """The frozen encoder's linear probe (standardised features; balanced logistic regression or ridge, its
    regularisation chosen on the validation split), refitted on train + validation; test outputs in the model's
    output space (logits or standardised targets)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    from hestdata.bench.tasks.patch_classification import C_GRID

    def rows(d: dict[str, np.ndarray]) -> np.ndarray:
        return d["y"] >= 0 if fd.kind == "classification" else np.ones(len(d["y"]), bool)

    a, b = train, val
    sc = StandardScaler().fit(a["out"][rows(a)])
    if fd.kind == "classification":
        def fit(c: float, x: np.ndarray, y: np.ndarray) -> Any:
            return LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x, y)

        def val_score(m: Any) -> float:
            s = score({"out": _logits(m, sc.transform(b["out"]), len(fd.classes)), "y": b["y"]}, fd)["primary"]
            return -1.0 if s != s else s

        grid = [fit(c, sc.transform(a["out"][rows(a)]), a["y"][rows(a)]) for c in C_GRID]
        best = max(range(len(grid)), key=lambda i: val_score(grid[i]))
        x = np.concatenate([a["out"][rows(a)], b["out"][rows(b)]])
        y = np.concatenate([a["y"][rows(a)], b["y"][rows(b)]])
        sc = StandardScaler().fit(x)
        m = fit(C_GRID[best], sc.transform(x), y)
        return _logits(m, sc.transform(test["out"]), len(fd.classes))
    alphas = (0.1, 1.0, 10.0, 100.0, 1000.0)
    best_alpha = max(alphas, key=lambda al: score({"out": Ridge(alpha=al).fit(sc.transform(a["out"]), a["y"]).predict(
        sc.transform(b["out"])), "y": b["y"]}, fd)["primary"])
    x = np.concatenate([a["out"], b["out"]])
    sc = StandardScaler().fit(x)
    return Ridge(alpha=best_alpha).fit(sc.transform(x), np.concatenate([a["y"], b["y"]])).predict(
        sc.transform(test["out"]))


def _logits(m: Any, x: np.ndarray, n: int) -> np.ndarray:
    """Log-probabilities over all ``n`` classes (a class the fit never saw: -inf, i.e. probability 0)."""
    out = np.full((len(x), n), -np.inf)
    out[:, m.classes_.astype(int)] = np.log(np.clip(m.predict_proba(x), 1e-12, None))
    return out


@dataclass
class FinetuneResult:
    """A run's folds (both models' test scores, best epoch, history), pooled scores and gains; ``finished`` is
    False when ``max_steps`` stopped it (rerun to resume)."""

    folds: list[dict[str, Any]] = field(default_factory=list)
    pooled: dict[str, dict[str, float]] = field(default_factory=dict)  # finetuned / frozen -> metric -> value
    gain: dict[str, float] = field(default_factory=dict)
    finished: bool = True
    out: Path | None = None


def _fold_data(t: Any, cfg: FinetuneConfig, labels: np.ndarray | None, counts: Any, genes: list[str],
               train_rows: np.ndarray, classes: list[str]) -> FoldData:
    if labels is not None:
        y = labels[train_rows]
        n = np.array([np.sum(y == c) for c in classes], dtype=float)
        w = np.where(n > 0, n.sum() / (len(classes) * np.maximum(n, 1)), 0.0)  # balanced, as the frozen probe
        return FoldData("classification", classes=classes, class_weights=w)
    x = np.log1p(np.asarray(counts[train_rows].todense(), dtype=np.float64))
    top = np.argsort(-x.var(axis=0), kind="stable")[: cfg.n_genes]
    top = np.sort(top)
    sd = x[:, top].std(axis=0)
    return FoldData("expression", genes=[genes[j] for j in top], mean=x[:, top].mean(axis=0),
                    std=np.where(sd > 0, sd, 1.0))


def _split_val(groups: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training groups, validation groups): ``fraction`` of them (at least one) validate."""
    uniq = sorted(set(groups))
    if len(uniq) < 2:
        raise InputError(None, f"a fold trains on {len(uniq)} group(s); fine-tuning needs two or more (one validates)")
    k = min(len(uniq) - 1, max(1, int(round(fraction * len(uniq)))))
    val = sorted(np.random.default_rng(seed).permutation(uniq)[:k].tolist())
    return [g for g in uniq if g not in val], val


def _fresh_encoder(spec: Any) -> Any:
    """A new copy of the encoder for each fold and for the frozen probe: a name is loaded again, an
    :class:`~hestdata.bench.encoders.Encoder` or a torch module deep-copied (training changes the copy only)."""
    import copy

    from hestdata.bench.encoders import Encoder, from_module, load_encoder

    if isinstance(spec, str):
        return load_encoder(spec)
    if isinstance(spec, Encoder):
        return copy.deepcopy(spec)
    if isinstance(spec, nn.Module):
        return from_module(copy.deepcopy(spec), type(spec).__name__.lower())
    raise InputError(None, f"cannot fine-tune {type(spec).__name__}: give an encoder name, an Encoder or a torch module")


@dataclass
class _Run:
    """A run's fixed inputs: the task, its samples, rows, labels or counts, folds, and where things go."""

    t: Any
    r: Any
    cfg: FinetuneConfig
    spec: Any  # the encoder: a name, an Encoder or a torch module
    ids: list[str]
    groups: np.ndarray
    first: np.ndarray  # row offset of each sample (and the total)
    labels: np.ndarray | None
    counts: Any
    genes: list[str]
    classes: list[str]
    patch_px: int
    out: Path
    device: Any

    def rows(self, ids: list[str]) -> np.ndarray:
        pos = {s: i for i, s in enumerate(self.ids)}
        return np.concatenate([np.arange(self.first[pos[s]], self.first[pos[s] + 1]) for s in ids])


def _prepare(root: Any, task: Any, out: Path, cfg: FinetuneConfig, spec: Any, device: Any) -> _Run:
    from hestdata.bench.runner import OBS_GROUP, Task, _patch_rows, _task_samples, _task_targets, load_task
    from hestdata.bench.tasks.patch_classification import kept_labels
    from hestdata.store.root import Root
    from hestdata.units import patch_array_name

    t = task if isinstance(task, Task) else load_task(task)
    if t.type not in ("patch_classification", "cell_classification", "classification", "expression"):
        raise InputError(None, f"task {t.name} is {t.type}; fine-tuning takes a classification or expression task")
    if t.group_by.startswith(OBS_GROUP):
        raise InputError(None, f"task {t.name}: fine-tuning splits samples by a catalog column, not {t.group_by}",
                         "convert the collection with --group-by image (one sample per field of view) or patient, "
                         "and fold by id or patient")
    r = Root.open(root)
    ids, groups_of = _task_samples(t, r)
    counts, genes, labels, _, _ = _task_targets(t, r, ids)
    first = np.concatenate([[0], np.cumsum([len(_patch_rows(r, s, t.patch)) for s in ids])])
    classes: list[str] = []
    if t.type != "expression":  # classes rarer than min_class_items are left out, as the frozen protocol does
        lab = np.asarray(labels, dtype=object)
        _, have, _ = kept_labels(lab, int(t.options.get("min_class_items", 0)))
        classes = sorted(set(lab[have].astype(str).tolist()))
        labels = np.array([str(v) if ok else None for v, ok in zip(lab, have, strict=True)], dtype=object)
    return _Run(t, r, cfg, spec, ids, np.array([groups_of[s] for s in ids]), first, labels, counts, genes, classes,
                patch_array_name(t.patch)[1].patch_size_px, out, device)


def _finished_fold(run: _Run, k: int, name: str) -> dict[str, Any] | None:
    done = run.out / f"fold{k}" / "result.json"
    if not done.is_file():
        return None
    fold = json.loads(done.read_text())
    if fold.get("config_hash") != run.cfg.hash or fold.get("test_groups") != name:
        raise InputError(done, "a finished fold of another run (configuration or folds differ)",
                         "pass another --out, or --fresh to start over")
    return fold


def _train_fold(run: _Run, k: int, name: str, tr: np.ndarray, te: np.ndarray, max_steps: int | None,
                echo: Any) -> dict[str, Any] | bool:
    """Train, then score one fold (both models); False when ``max_steps`` stopped it, True on a rank other than 0
    (rank 0 scores)."""
    from hestdata.bench.contrastive import image_dim
    from hestdata.store.atomic import atomic_write_bytes

    cfg, dev, groups = run.cfg, run.device, run.groups
    train_g, val_g = _split_val([groups[i] for i in tr], cfg.val_fraction, cfg.seed + k)
    train_set, val_set = set(train_g), set(val_g)
    splits = {"train": [s for s, g in zip(run.ids, groups, strict=True) if g in train_set],
              "val": [s for s, g in zip(run.ids, groups, strict=True) if g in val_set],
              "test": [run.ids[i] for i in te]}
    fd = _fold_data(run.t, cfg, run.labels, run.counts, run.genes, run.rows(splits["train"]), run.classes)
    torch.manual_seed(cfg.seed)
    enc = _fresh_encoder(run.spec).to(dev)
    n_out = len(run.classes) if fd.kind == "classification" else len(fd.genes)
    model = FinetuneModel(enc, cfg.mode, n_out, image_dim(enc, run.patch_px, dev), cfg.lora_alpha).to(dev)
    folder = run.out / f"fold{k}"
    trainer = _FinetuneTrainer(model, run.r, run.t, cfg, fd, splits, folder, dev)
    if trainer.ck.is_file():
        trainer.resume(echo)
    if echo and _dist()[0] == 0:
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        echo(f"fold {k} ({name}): train {len(splits['train'])} samples, validate {len(splits['val'])}, test "
             f"{len(splits['test'])}; trainable {n_train:,} of {sum(p.numel() for p in model.parameters()):,} "
             f"parameters ({cfg.mode})")
    if not trainer.run(max_steps, echo):
        return False
    if _dist()[0] != 0:
        return True
    if (folder / BEST).is_file():
        model.load_state_dict(torch.load(folder / BEST, map_location="cpu", weights_only=False)["model"])
    ft = predict(model, run.r, run.t, splits["test"], fd, cfg, dev)
    frozen = _fresh_encoder(run.spec).to(dev)
    fz = FinetuneModel(frozen, "head", n_out, image_dim(frozen, run.patch_px, dev))
    feats = {s: predict(fz, run.r, run.t, splits[s], fd, cfg, dev, features=True) for s in ("train", "val", "test")}
    fr = {"out": frozen_linear(feats["train"], feats["val"], feats["test"], fd), "y": ft["y"], "item": ft["item"]}
    s_ft, s_fr = score(ft, fd), score(fr, fd)
    fold = {"fold": k, "config_hash": cfg.hash, "test_groups": name, "n_train": len(splits["train"]),
            "n_val": len(splits["val"]), "n_test_items": int(len(ft["y"])), "best_epoch": trainer.best[1],
            "history": trainer.history, "finetuned": s_ft, "frozen": s_fr, "gain": s_ft["primary"] - s_fr["primary"],
            "_predictions": _prediction_rows(k, ft, fr, fd)}
    atomic_write_bytes(folder / "result.json", json.dumps(fold, default=float).encode())
    if echo:
        echo(f"  fold {k}: fine-tuned {s_ft['primary']:.3f}, frozen linear {s_fr['primary']:.3f} "
             f"(gain {fold['gain']:+.3f}); best epoch {trainer.best[1]}")
    return fold


def _leaderboard(run: _Run, res: FinetuneResult) -> None:
    """Rows for ``<encoder>+finetune[<mode>]`` and ``<encoder>+frozen-linear``, per fold."""
    from types import SimpleNamespace

    from hestdata.bench.leaderboard import append_rows, make_rows
    from hestdata.bench.runner import data_version

    fp = _fresh_encoder(run.spec).fingerprint
    for which, label in (("finetuned", f"{run.cfg.encoder}+finetune[{run.cfg.mode}]"),
                         ("frozen", f"{run.cfg.encoder}+frozen-linear")):
        results = {m: [(str(f["test_groups"]), f[which][m]) for f in res.folds]
                   for m in res.folds[0][which] if m != "primary"}
        enc_like = SimpleNamespace(name=label, fingerprint=hashlib.sha256(f"{fp}{run.cfg.hash}{which}".encode())
                                   .hexdigest())
        append_rows(run.r.path, make_rows(run.t, enc_like, results, n_items=int(run.first[-1]), samples=run.ids,
                                          data_version=data_version(run.r.catalog, run.ids)))


def finetune(root: str | os.PathLike[str], task: Any, out: str | os.PathLike[str], *,
             config: FinetuneConfig | dict[str, Any] | None = None, device: Any = None,
             max_steps: int | None = None, leaderboard: bool = True, echo: Any = None, encoder: Any = None,
             **overrides: Any) -> FinetuneResult:
    """Fine-tune ``config.encoder`` (or ``encoder``: an Encoder or a torch module, copied afresh for every fold) on
    ``task``'s folds and score it against its frozen linear probe (module docstring); resumes ``OUT`` where a
    killed run stopped."""
    from hestdata.bench.pretrain_config import validated
    from hestdata.bench.tasks.expression import _folds

    base = config.model_dump() if isinstance(config, FinetuneConfig) else dict(config or {})
    cfg = validated(FinetuneConfig, {**base, **overrides}, "bad fine-tuning options")
    if encoder is not None:
        cfg = FinetuneConfig.model_validate({**cfg.model_dump(), "encoder": _fresh_encoder(encoder).name})
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run = _prepare(root, task, Path(out), cfg, encoder if encoder is not None else cfg.encoder, dev)
    n_folds = cfg.n_folds or run.t.options.get("n_folds")
    res = FinetuneResult(out=run.out)
    preds: list[dict[str, Any]] = []
    for k, (tr, te, name) in enumerate(_folds(run.groups, int(n_folds) if n_folds else None)):
        if cfg.folds is not None and k not in cfg.folds:
            continue
        fold = _finished_fold(run, k, name) or _train_fold(run, k, name, tr, te, max_steps, echo)
        if fold is False:  # max_steps: a checkpoint to resume from
            res.finished = False
            return res
        if fold is True:  # trained on a rank other than 0
            continue
        preds.extend(fold.pop("_predictions", []))
        res.folds.append(fold)
    if _dist()[0] != 0 or not res.folds:
        return res
    _pool(res, preds, "classification" if run.t.type != "expression" else "expression", run.classes)
    _write_run(res, preds, run.out, cfg)
    if leaderboard and run.r.is_local:
        _leaderboard(run, res)
    return res


def _prediction_rows(k: int, ft: dict[str, np.ndarray], fr: dict[str, np.ndarray], fd: FoldData
                     ) -> list[dict[str, Any]]:
    if fd.kind == "classification":
        c = np.asarray(fd.classes)
        return [{"fold": k, "item": it, "label": c[y] if y >= 0 else None, "finetuned": c[a], "frozen": c[b]}
                for it, y, a, b in zip(ft["item"], ft["y"], ft["out"].argmax(1), fr["out"].argmax(1), strict=True)]
    return [{"fold": k, "item": it} for it in ft["item"]]


def _pool(res: FinetuneResult, preds: list[dict[str, Any]], kind: str, classes: list[str]) -> None:
    """Pooled test scores over the folds (classification: every labelled item's prediction), the fold means
    otherwise, and the gains."""
    from hestdata.bench.metrics import balanced_accuracy, weighted_f1

    for which in ("finetuned", "frozen"):
        vals = [f[which]["primary"] for f in res.folds]
        res.pooled[which] = {"fold_mean": float(np.nanmean(vals)), "fold_std": float(np.nanstd(vals))}
        if kind == "classification":
            lab = [p for p in preds if p["label"] is not None]
            y = np.array([p["label"] for p in lab], dtype=str)
            yp = np.array([p[which] for p in lab], dtype=str)
            res.pooled[which].update({"balanced_accuracy": balanced_accuracy(y, yp), "weighted_f1": weighted_f1(y, yp)})
    res.gain = {"fold_mean": res.pooled["finetuned"]["fold_mean"] - res.pooled["frozen"]["fold_mean"]}
    if kind == "classification":
        res.gain["balanced_accuracy"] = (res.pooled["finetuned"]["balanced_accuracy"]
                                         - res.pooled["frozen"]["balanced_accuracy"])
        res.pooled["chance"] = {"balanced_accuracy": 1.0 / max(1, len(classes))}


def _write_run(res: FinetuneResult, preds: list[dict[str, Any]], out: Path, cfg: FinetuneConfig) -> None:
    import pandas as pd

    from hestdata.store.atomic import atomic_write_bytes

    doc = {"config": cfg.model_dump(), "config_hash": cfg.hash, "folds": res.folds, "pooled": res.pooled,
           "gain": res.gain}
    atomic_write_bytes(out / "result.json", json.dumps(doc, indent=1, default=float).encode())
    if preds:
        atomic_write_bytes(out / "predictions.csv", pd.DataFrame(preds).to_csv(index=False).encode())
