"""Cross-modal pretraining as a benchmark: an image encoder and a gene encoder trained together on a root's
expression–morphology pairs with a CLIP or SigLIP loss (HESCAPE's protocol), then scored on held-out slides.

One run (:func:`pretrain`):

1. the task's samples are split by group (:func:`~hestdata.bench.pretrain_config.split_groups`); the gene panel
   is chosen on the **training** split only (HEST's criterion by default), among the genes every selected
   sample has; a fitted gene encoder (PCA, rank means) is fitted on training rows only;
2. training streams (patch, raw counts) pairs through :class:`~hestdata.PatchDataset` and
   :func:`~hestdata.make_loader` (shard-aware shuffle, workers, DDP ranks), AdamW with a linear warm-up then a
   cosine decay, mixed precision on a GPU; under ``torchrun`` every rank sees its share, the loss the global
   batch (embeddings gathered with gradients, as open_clip does);
3. ``OUT/checkpoint.pt`` (model, optimiser, schedule, loader position, RNG states, history) is written atomically
   at every epoch's end (and every ``checkpoint_every`` steps); a rerun with the same configuration resumes
   from it exactly — the weights after a resumed run equal those of an uninterrupted one;
4. with a ``val`` split, each epoch is scored there (mean recall@5 both ways) and the best epoch kept; the kept
   model is scored on ``test`` (:mod:`~hestdata.bench.pretrain_eval`) and on the downstream expression task
   (ridge from the pretrained image embedding vs the same encoder without pretraining vs library size);
5. ``OUT/result.json``, ``OUT/history.json``, figures (training curves, a retrieval matrix, recall@k with chance
   lines) and leaderboard rows carrying both encoders' fingerprints and the configuration hash.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.bench.encoders import require_ml
from hestdata.bench.pretrain_config import PretrainConfig, split_groups
from hestdata.errors import InputError
from hestdata.io import progress

require_ml()

import torch  # noqa: E402

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class PretrainResult:
    """What a run produced: the test metrics (with chance levels), the downstream figures, the history."""

    out: Path
    config: PretrainConfig
    genes: list[str]
    splits: dict[str, list[str]]
    metrics: dict[str, float] = field(default_factory=dict)
    downstream: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)
    resumed_from_step: int | None = None
    best_epoch: int | None = None
    pairs_per_s: float = float("nan")
    world_size: int = 1
    steps_per_epoch: int = 0


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _ids_expr(ids: list[str]) -> Any:
    import polars as pl

    return pl.col("id").is_in(ids)


def choose_panel(r: Any, t: Any, cfg: PretrainConfig, splits: dict[str, list[str]]) -> tuple[list[str], list[str],
                                                                                              np.ndarray]:
    """(panel genes, their Ensembl ids, raw training counts over the panel): the genes every selected sample has,
    ranked on the training split alone (``hest`` / ``variance``), or the fixed list. At most ``max_fit_rows``
    training rows (drawn at random, seeded) are densified for the choice and for fitted gene encoders."""
    from hestdata.bench.genes import choose_genes, is_fixed
    from hestdata.bench.runner import _task_targets
    from hestdata.bench.tasks.expression import targets

    all_ids = [s for k in ("train", "val", "test") for s in splits[k]]
    shared = set.intersection(*(set(map(str, r.sample(s).table_names()[0])) for s in all_ids))  # var index only
    counts, names, _, _, _ = _task_targets(t, r, splits["train"])
    keep = [i for i, g in enumerate(names) if g in shared]
    names = [names[i] for i in keep]
    slides = np.concatenate([[s] * n for s, n in zip(splits["train"], _patch_counts(r, t, splits["train"]),
                                                      strict=True)])
    rows = np.arange(counts.shape[0])
    if len(rows) > cfg.max_fit_rows:  # a dense (rows x genes) block stays bounded whatever the cohort holds
        rows = np.sort(np.random.default_rng(cfg.seed).choice(len(rows), cfg.max_fit_rows, replace=False))
    c = np.asarray(counts[rows][:, keep].toarray(), dtype=np.float32)
    if is_fixed(cfg.genes):
        chosen = choose_genes(cfg.genes, len(names), c, c, None, names)
    else:
        k = min(cfg.n_genes, len(names))
        chosen = choose_genes(cfg.genes, k, targets(c, "log1p"), c, slides[rows], names)
    panel = [names[i] for i in chosen]
    from anndata.io import read_elem

    v0 = read_elem(r.sample(splits["train"][0]).table()["var"])  # its Ensembl ids, for vocabularies that use them
    col = "gene_ids" if "gene_ids" in v0.columns else "gene_id" if "gene_id" in v0.columns else None
    ens = [str(v0.loc[g, col]) if col else "" for g in panel]
    return panel, ens, c[:, chosen].astype(np.float32)


def _patch_counts(r: Any, t: Any, ids: list[str]) -> list[int]:
    return [int(r.sample(s).patch_count(t.patch)[0]) for s in ids]


def build_model(cfg: PretrainConfig, panel: list[str], gene_ids: list[str], train_counts: np.ndarray, patch_px: int,
                device: Any, image_encoder: Any = None, gene_encoder: Any = None) -> Any:
    """The two towers over ``panel``; a fitted gene encoder is fitted on ``train_counts`` (training rows only)."""
    from hestdata.bench.contrastive import TwoTower, image_dim
    from hestdata.bench.encoders import load_encoder
    from hestdata.bench.gene_encoders import load_gene_encoder

    torch.manual_seed(cfg.seed)
    img = load_encoder(image_encoder if image_encoder is not None else cfg.image_encoder)
    if cfg.image_mode == "finetune" and not isinstance(img.module, torch.nn.Module):
        raise InputError(None, f"image encoder {img.name!r} has no torch module to fine-tune",
                         "use image_mode: frozen, or a timm / module encoder")
    opts = dict(cfg.gene_options)
    spec = gene_encoder if gene_encoder is not None else cfg.gene_encoder
    if isinstance(spec, str) and spec.lower() in ("scgpt", "nicheformer"):
        opts.setdefault("gene_ids", gene_ids)
        opts.setdefault("seed", cfg.seed)
    gene = load_gene_encoder(spec, panel, **opts)
    gene.fit(train_counts)
    img.to(device)
    model = TwoTower(img, gene, image_dim(img, patch_px, device), dim=cfg.dim, loss=cfg.loss,
                     temperature=cfg.temperature, finetune=cfg.image_mode == "finetune")
    return model.to(device)


def _param_groups(model: Any, cfg: PretrainConfig) -> list[dict[str, Any]]:
    back = [p for p in (model.image_backbone.parameters() if model.image_backbone is not None else [])
            if p.requires_grad]
    ids = {id(p) for p in back}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": rest, "lr": cfg.lr}]
    if back:
        groups.append({"params": back, "lr": cfg.lr * cfg.backbone_lr_scale})
    return groups


def cosine_schedule(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    """Multiplier of the peak rate at step s: linear warm-up over ``warmup_frac`` of the steps, then cosine to 0."""
    warm = max(1, int(round(total_steps * warmup_frac))) if warmup_frac > 0 else 0

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        span = max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / span)))

    return f


def _autocast(cfg: PretrainConfig, device: Any) -> tuple[Any, bool]:
    """(autocast context factory, whether fp16 loss scaling is needed)."""
    import contextlib

    dev = torch.device(device).type
    prec = cfg.precision if cfg.precision != "auto" else ("bf16" if dev == "cuda" else "fp32")
    if prec == "fp32":
        return contextlib.nullcontext, False
    dtype = torch.bfloat16 if prec == "bf16" else torch.float16
    return (lambda: torch.autocast(device_type=dev, dtype=dtype)), prec == "fp16" and dev == "cuda"


def _gather(z: Any) -> Any:
    """Every rank's rows, with gradients flowing back to each rank's own (torch.distributed.nn's all_gather)."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z), dim=0)


def _saved_state(model: Any) -> dict[str, Any]:
    """The model's state without a frozen image backbone (it is the encoder's own, fingerprinted weights)."""
    sd = model.state_dict()
    if not model.finetune:
        sd = {k: v for k, v in sd.items() if not k.startswith("image_backbone.")}
    return {k: v.detach().cpu() for k, v in sd.items()}


def _load_model_state(model: Any, sd: dict[str, Any], where: Path) -> None:
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if model.finetune or not k.startswith("image_backbone.")]
    if missing or unexpected:
        raise InputError(where, f"checkpoint does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    from hestdata.store.atomic import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def _identity(cfg: PretrainConfig, panel: list[str], model: Any, splits: dict[str, list[str]]) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: configuration, panel, splits, both encoders."""
    return {"config_hash": cfg.hash, "panel": panel, "splits": splits, "image": model.image.fingerprint,
            "gene_name": model.gene.name}


def _make_loaders(r: Any, t: Any, ids: list[str], panel: list[str], cfg: PretrainConfig, *, shuffle: bool,
                  batch_size: int, drop_last: bool, distributed: bool) -> Any:
    from hestdata.loader import PatchDataset

    ds = PatchDataset(r, query=_ids_expr(ids), genes=panel, patch=t.patch, targets="raw")
    if ds.multiplex:
        raise InputError(None, f"task {t.name}: {t.patch} holds multiplex (fluorescence) patches; image-gene "
                               "pretraining pairs RGB patches (H&E) with expression",
                         "pick the H&E patch array of the samples (e.g. a Xenium run converted with --he-image)")
    return loader_of(ds, cfg, shuffle=shuffle, batch_size=batch_size, drop_last=drop_last, distributed=distributed)


def loader_of(ds: Any, cfg: Any, *, shuffle: bool, batch_size: int, drop_last: bool, distributed: bool) -> Any:
    """``make_loader`` over ``ds`` with the run's workers and seed: this process's share of a DDP run, or (not
    distributed: validation, evaluation) every item in this process."""
    from hestdata.loader import make_loader

    kw = {} if distributed else {"rank": 0, "world_size": 1}
    return make_loader(ds, batch_size=batch_size, num_workers=cfg.num_workers, seed=cfg.seed, shuffle=shuffle,
                       drop_last=drop_last, **kw)


def embed_split(model: Any, r: Any, t: Any, ids: list[str], panel: list[str], cfg: PretrainConfig,
                device: Any) -> dict[str, np.ndarray]:
    """Unit image and gene embeddings of every pair of ``ids`` (in dataset order), the frozen image features
    before projection, raw counts over the panel and each row's sample id."""
    ld = _make_loaders(r, t, ids, panel, cfg, shuffle=False, batch_size=max(64, cfg.batch_size), drop_last=False,
                       distributed=False)
    ac, _ = _autocast(cfg, device)
    out: dict[str, list[Any]] = {"z_img": [], "z_gene": [], "features": [], "counts": [], "sample": []}
    model.eval()
    with torch.inference_mode(), ac():
        for batch in ld:
            feats = model.image_features(batch["image"].to(device))
            out["features"].append(feats.float().cpu().numpy())
            out["z_img"].append(model.project_images(feats).float().cpu().numpy())
            out["z_gene"].append(model.embed_genes(batch["expression"].to(device)).float().cpu().numpy())
            out["counts"].append(batch["expression"].numpy())
            out["sample"].append(np.asarray(batch["sample_id"]))
    return {k: np.concatenate(v) for k, v in out.items()}


def _val_score(m: dict[str, float]) -> float:
    return (m["img2gene_recall@5"] + m["gene2img_recall@5"]) / 2


class _Trainer:
    """One training run's state: model, optimiser, schedule, loader, step, history; saved and restored whole.

    The hooks (``_build_loader``, ``_param_groups``, ``_loss``, ``_validate``, ``_identity``) are image–gene
    pretraining's; fine-tuning (:mod:`hestdata.bench.finetune`) overrides them and keeps the rest: resumption at
    any step, atomic checkpoints, DDP, mixed precision, the schedule."""

    label = "pretraining"
    val_name = "val R@5"

    def __init__(self, model: Any, r: Any, t: Any, cfg: PretrainConfig, panel: list[str],
                 splits: dict[str, list[str]], out: Path, device: Any) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.model, self.r, self.t, self.cfg, self.panel, self.splits = model, r, t, cfg, panel, splits
        self.device, self.ck = device, out / CHECKPOINT
        self.out = out
        self.rank, self.world = _dist()
        self.loader = self._build_loader()
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise InputError(None, f"the training split has fewer pairs ({len(self.loader.dataset)}) than one batch "
                                   f"({cfg.batch_size} per rank)", "lower batch_size or add training samples")
        self.total = self.steps_per_epoch * cfg.epochs
        self.opt = torch.optim.AdamW(self._param_groups(), weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, cosine_schedule(self.total, cfg.warmup_frac))
        self.autocast, use_scaler = _autocast(cfg, device)
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.net = DDP(model) if self.world > 1 else model
        self.ident = self._identity()
        self.history: list[dict[str, Any]] = []
        self.step, self.start_epoch, self.consumed, self.resumed = 0, 0, 0, None
        self.rng: Any = None
        self.losses: list[float] = []
        self.best: tuple[float, int | None] = (-1.0, None)
        self.pairs, self.seconds, self.finished = 0, 0.0, False

    def _build_loader(self) -> Any:
        return _make_loaders(self.r, self.t, self.splits["train"], self.panel, self.cfg, shuffle=True,
                             batch_size=self.cfg.batch_size, drop_last=True, distributed=self.world > 1)

    def _param_groups(self) -> list[dict[str, Any]]:
        return _param_groups(self.model, self.cfg)

    def _identity(self) -> dict[str, Any]:
        return _identity(self.cfg, self.panel, self.model, self.splits)

    def _loss(self, batch: dict[str, Any]) -> Any:
        za, zb = self.net(batch["image"].to(self.device, non_blocking=True), batch["expression"].to(self.device))
        if self.world > 1 and self.cfg.gather:
            za, zb = _gather(za), _gather(zb)
        return self.model.loss(za.float(), zb.float())

    def resume(self, echo: Callable[[str], None] | None) -> None:
        """Take up ``OUT/checkpoint.pt`` where it stopped; a checkpoint of another run is an error."""
        state = torch.load(self.ck, map_location="cpu", weights_only=False)
        if state.get("identity") != self.ident:
            raise InputError(self.ck, "a checkpoint of another run (configuration, gene panel, splits or encoders "
                                      "differ)", "pass another --out, or --fresh to start over")
        _load_model_state(self.model, state["model"], self.ck)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["loader"])
        self.step, self.history, self.rng = int(state["step"]), list(state["history"]), state["rng"]
        self.losses = list(state.get("epoch_losses", []))  # the interrupted epoch's losses so far
        self.best = (float(state["best"][0]), state["best"][1])
        self.start_epoch, self.consumed = self.loader.epoch, self.loader.state_dict()["consumed"]
        self.resumed = self.step
        if echo:
            echo(f"resumed from {self.ck} at step {self.step} (epoch {self.start_epoch}, batch {self.consumed})")

    def save(self, epoch_next: int, consumed_next: int) -> None:
        """Everything a resumed run needs, written atomically (rank 0 only: the ranks hold the same weights)."""
        if self.rank != 0:
            return
        ls = self.loader.state_dict()
        ls["epoch"], ls["consumed"] = epoch_next, consumed_next
        _atomic_torch_save({"identity": self.ident, "model": _saved_state(self.model), "optimizer": self.opt.state_dict(),
                            "scheduler": self.sched.state_dict(),
                            "scaler": self.scaler.state_dict() if self.scaler else None, "loader": ls,
                            "step": self.step, "history": self.history, "best": list(self.best),
                            "epoch_losses": self.losses if consumed_next else [], "rng": torch.get_rng_state(),
                            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                           self.ck)

    def _seed_step_rng(self, epoch: int) -> None:
        """Fetching an epoch's first batch consumed RNG (the DataLoader draws its seed): the steps' RNG (dropout)
        is set here so that it is the same whether the epoch runs whole or resumes mid-way."""
        if self.rng is not None and epoch == self.start_epoch and self.consumed:
            torch.set_rng_state(self.rng)
        else:
            torch.manual_seed(self.cfg.seed * 100_003 + epoch)

    def _update(self, batch: dict[str, Any]) -> float:
        with self.autocast():
            loss = self._loss(batch)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.sched.step()
        self.step += 1
        self.pairs += len(batch["index"])
        return float(loss.detach())

    def _validate(self, row: dict[str, Any], epoch: int) -> None:
        from hestdata.bench.pretrain_eval import retrieval_report

        emb = embed_split(self.model, self.r, self.t, self.splits["val"], self.panel, self.cfg, self.device)
        m = retrieval_report(emb["z_img"], emb["z_gene"], emb["sample"], batch=self.cfg.eval_batch, repeats=2,
                             seed=self.cfg.seed)
        row.update({f"val_{k}": v for k, v in m.items()
                    if k == "n_test" or ("recall@" in k and "batch" not in k and "slide" not in k)})
        row["val_score"] = _val_score(m)
        if row["val_score"] > self.best[0]:
            self.best = (row["val_score"], epoch)
            _atomic_torch_save({"identity": self.ident, "model": _saved_state(self.model), "epoch": epoch},
                               self.out / BEST)

    def run(self, max_steps: int | None, echo: Callable[[str], None] | None) -> bool:
        """Train to the last epoch, or stop after ``max_steps`` with a checkpoint; whether training finished."""
        with progress.bar(self.label, total=self.total) as bar:
            bar(self.step)
            for epoch in range(self.start_epoch, self.cfg.epochs):
                if epoch != self.start_epoch or self.consumed == 0:
                    self.loader.set_epoch(epoch)
                    self.losses = []
                self.model.train()
                t0, first = time.perf_counter(), True
                for batch in self.loader:
                    if first:
                        self._seed_step_rng(epoch)
                        first = False
                    self.losses.append(self._update(batch))
                    bar(1)
                    done = self.loader.state_dict()["consumed"]
                    if done < self.steps_per_epoch and (
                            (self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0)
                            or (max_steps is not None and self.step >= max_steps)):
                        self.save(epoch, done)
                    if max_steps is not None and self.step >= max_steps and done < self.steps_per_epoch:
                        self.seconds += time.perf_counter() - t0
                        return False
                self.seconds += time.perf_counter() - t0
                row = _epoch_row(epoch, self.step, self.losses, self.model, self.sched)
                if self.splits["val"] and self.rank == 0:
                    self._validate(row, epoch)
                self.history.append(row)
                if echo and self.rank == 0:
                    echo(f"  epoch {epoch}: loss {row['train_loss']:.4f}"
                         + (f", {self.val_name} {row['val_score']:.3f}" if "val_score" in row else ""))
                self.save(epoch + 1, 0)
                if self._stop(epoch):
                    if echo and self.rank == 0:
                        echo(f"  stopped early: no better {self.val_name} since epoch {self.best[1]}")
                    break
                if max_steps is not None and self.step >= max_steps and epoch + 1 < self.cfg.epochs:
                    return False
        return True

    def _stop(self, epoch: int) -> bool:
        """Early stopping after ``epoch`` (pretraining runs every epoch and keeps the best)."""
        return False


def train(model: Any, r: Any, t: Any, cfg: PretrainConfig, panel: list[str], splits: dict[str, list[str]], out: Path,
          device: Any, *, resume: bool = True, max_steps: int | None = None, echo: Callable[[str], None] | None = None,
          ) -> _Trainer:
    """Train ``model`` in place (resuming ``OUT/checkpoint.pt`` when ``resume``); the finished trainer."""
    tr = _Trainer(model, r, t, cfg, panel, splits, out, device)
    if resume and tr.ck.is_file():
        tr.resume(echo)
    tr.finished = tr.run(max_steps, echo)
    return tr


def _epoch_row(epoch: int, step: int, losses: list[float], model: Any, sched: Any) -> dict[str, Any]:
    row = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
           "lr": float(sched.get_last_lr()[0])}
    if hasattr(model, "logit_scale"):  # a contrastive model's learnt temperature
        row["temperature"] = float(1.0 / model.logit_scale.detach().exp().clamp(max=100.0))
    return row


def downstream_expression(train: dict[str, np.ndarray], test: dict[str, np.ndarray], panel_k: int = 50,
                          seed: int = 1) -> dict[str, float]:
    """Expression prediction on the test split, ridge fitted on the training split (HEST's protocol on one
    split): from the pretrained image embedding, from the same encoder's features without pretraining, and from
    log1p library size over the panel. Mean Pearson r over the panel's genes (the top ``panel_k`` by training
    variance)."""
    from hestdata.bench.genes import top_variable_genes
    from hestdata.bench.metrics import pearson_per_column
    from hestdata.bench.tasks.expression import _fit_predict

    y_tr, y_te = np.log1p(train["counts"].astype(np.float64)), np.log1p(test["counts"].astype(np.float64))
    genes = top_variable_genes(y_tr, min(panel_k, y_tr.shape[1]))
    y_tr, y_te = y_tr[:, genes], y_te[:, genes]
    lib = {k: np.log1p(d["counts"].sum(1, keepdims=True).astype(np.float64)) for k, d in (("tr", train), ("te", test))}
    out = {}
    for name, a, b in (("pretrained", train["z_img"], test["z_img"]),
                       ("frozen", train["features"], test["features"]),
                       ("library_size", lib["tr"], lib["te"])):
        pred, _ = _fit_predict(np.asarray(a, np.float64), y_tr, np.asarray(b, np.float64), 256, None, seed)
        out[f"expr_{name}_pearson_mean"] = float(np.nanmean(pearson_per_column(pred, y_te)))
    return out


def downstream_alteration(r: Any, column: str, parts: list[dict[str, np.ndarray]], groups_of: dict[str, str],
                          seed: int) -> dict[str, float]:
    """HESCAPE's alteration task: each slide's mean pretrained image embedding vs the same encoder's mean
    features without pretraining, balanced logistic regression over patient folds (pooled AUROC / AP, 95 %
    intervals), every slide of the task (the labels were never seen in pretraining)."""
    from hestdata.bench.tasks.slide_pretrain import alteration_probe

    emb: dict[str, dict[str, np.ndarray]] = {"pretrained": {}, "frozen": {}}
    for d in parts:
        for s in np.unique(d["sample"]):
            rows = d["sample"] == s
            emb["pretrained"][str(s)] = d["z_img"][rows].mean(0)
            emb["frozen"][str(s)] = d["features"][rows].mean(0)
    labels = {s: r.metadata(s).alterations.get(column) for s in emb["pretrained"]}
    if all(v is None for v in labels.values()):
        raise InputError(None, f"no slide of the task has the alteration {column!r} (tables/slide_alterations)")
    return alteration_probe(emb, labels, groups_of, seed=seed)


class PairEncoder:
    """The pair of encoders a pretraining run trained, as the leaderboard names it: ``image+gene``, fingerprint
    over both fingerprints and the configuration."""

    def __init__(self, model: Any, cfg: PretrainConfig) -> None:
        import hashlib

        self.name = f"{model.image.name}+{model.gene.name}"
        self.image_fingerprint, self.gene_fingerprint = model.image.fingerprint, model.gene.fingerprint
        self.fingerprint = hashlib.sha256(f"{self.image_fingerprint}|{self.gene_fingerprint}|{cfg.hash}"
                                          .encode()).hexdigest()


def pretrain(root: str | os.PathLike[str], task: Any, out: str | os.PathLike[str], *, device: Any = None,
             resume: bool = True, max_steps: int | None = None, image_encoder: Any = None, gene_encoder: Any = None,
             leaderboard: bool = True, figures: bool = True, echo: Callable[[str], None] | None = None,
             storage_options: dict[str, Any] | None = None, **overrides: Any) -> PretrainResult:
    """Train an image and a gene encoder together on ``task``'s training split, score them on its test split.

    ``task``: a ``type: pretrain`` task (name, YAML path or :class:`~hestdata.bench.runner.Task`); ``overrides``
    replace its options (:class:`PretrainConfig` fields, e.g. ``epochs=5``); ``image_encoder`` /
    ``gene_encoder`` may be objects (an :class:`~hestdata.bench.encoders.Encoder`, a module, a
    :class:`~hestdata.bench.gene_encoders.GeneEncoder`) instead of the configured names. ``max_steps`` stops
    after that many optimiser steps with a checkpoint written (the run resumes from it). ``resume=False`` starts
    over even where ``OUT/checkpoint.pt`` exists."""
    from hestdata.bench.pretrain_eval import retrieval_report
    from hestdata.bench.runner import Task, _task_samples, load_task
    from hestdata.store.root import Root
    from hestdata.units import patch_array_name

    t = task if isinstance(task, Task) else load_task(task)
    if t.type != "pretrain":
        raise InputError(None, f"task {t.name} is a {t.type} task, not pretrain")
    from hestdata.bench.pretrain_config import validated

    cfg = validated(PretrainConfig, {**t.options, **overrides}, f"task {t.name}: bad pretraining options")
    out = Path(out)
    if not resume and (out / CHECKPOINT).exists():
        (out / CHECKPOINT).unlink()
    rank, _ = _dist()
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    r = Root.open(root, storage_options)
    ids, groups_of = _task_samples(t, r)
    splits = split_groups(groups_of, t.splits, where=t.name)
    panel, gene_ids, train_counts = choose_panel(r, t, cfg, splits)
    patch_px = int(patch_array_name(t.patch)[1].patch_size_px)
    model = build_model(cfg, panel, gene_ids, train_counts, patch_px, device, image_encoder, gene_encoder)
    tr = train(model, r, t, cfg, panel, splits, out, device, resume=resume, max_steps=max_steps, echo=echo)
    res = PretrainResult(out, cfg, panel, splits, history=tr.history, resumed_from_step=tr.resumed,
                         pairs_per_s=tr.pairs / max(tr.seconds, 1e-9), world_size=tr.world,
                         steps_per_epoch=tr.steps_per_epoch,
                         fingerprints={"image": model.image.fingerprint, "gene": model.gene.fingerprint})
    if rank != 0 or not tr.finished:
        return res
    if tr.best[1] is not None and (out / BEST).is_file():
        _load_model_state(model, torch.load(out / BEST, map_location="cpu", weights_only=False)["model"], out / BEST)
        res.best_epoch = tr.best[1]
    test = embed_split(model, r, t, splits["test"], panel, cfg, device)
    res.metrics = retrieval_report(test["z_img"], test["z_gene"], test["sample"], batch=cfg.eval_batch,
                                   repeats=cfg.eval_repeats, seed=cfg.seed)
    trn = embed_split(model, r, t, splits["train"], panel, cfg, device)
    res.downstream = downstream_expression(trn, test, seed=cfg.seed)
    if cfg.alteration:
        val = embed_split(model, r, t, splits["val"], panel, cfg, device) if splits["val"] else None
        res.downstream.update(downstream_alteration(r, cfg.alteration, [trn, test, *([val] if val else [])],
                                                    groups_of, cfg.seed))
    _write_outputs(res, model, t, r, test, leaderboard and r.is_local, figures, echo)
    return res


def _write_outputs(res: PretrainResult, model: Any, t: Any, r: Any, test: dict[str, np.ndarray], leaderboard: bool,
                   figures: bool, echo: Callable[[str], None] | None) -> None:
    from hestdata.bench.leaderboard import append_rows, make_rows, pooled_results
    from hestdata.bench.runner import Task, data_version
    from hestdata.store.atomic import atomic_write_bytes

    doc = {"task": t.name, "config": res.config.model_dump(), "config_hash": res.config.hash, "genes": res.genes,
           "splits": res.splits, "fingerprints": res.fingerprints, "best_epoch": res.best_epoch,
           "metrics": res.metrics, "downstream": res.downstream, "train_pairs_per_s": res.pairs_per_s,
           "world_size": res.world_size, "steps_per_epoch": res.steps_per_epoch,
           "global_batch": res.config.batch_size * res.world_size}
    res.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(res.out / "result.json", json.dumps(doc, indent=1, default=float).encode())
    atomic_write_bytes(res.out / "history.json", json.dumps(res.history, indent=1, default=float).encode())
    if figures:
        from hestdata.plot.pretrain import pretrain_figures

        for p in pretrain_figures(res, test, t.name):
            if echo:
                echo(f"  figure: {p}")
    if leaderboard:
        enc = PairEncoder(model, res.config)
        results = pooled_results({k: v for k, v in {**res.metrics, **res.downstream}.items()
                                  if not k.startswith(("chance", "n_")) and "median_rank" not in k}, fold="test")
        intervals = results.pop("_ci")
        task = Task(**{**t.__dict__, "options": {**t.options, **res.config.model_dump()}})
        ids = sorted(s for v in res.splits.values() for s in v)
        rows = make_rows(task, enc, results, n_items=int(res.metrics["n_test"]), samples=ids,
                         data_version=data_version(r.catalog, ids))
        for row in rows:
            row["ci_low"], row["ci_high"] = map(float, intervals.get(row["metric"], (float("nan"), float("nan"))))
            row["image_fingerprint"], row["gene_fingerprint"] = enc.image_fingerprint, enc.gene_fingerprint
            row["pretrain_config_hash"] = res.config.hash
        append_rows(r.path, rows)
