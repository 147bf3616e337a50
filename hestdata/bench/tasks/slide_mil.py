"""Slide-level MIL (STAMP / Threads / TITAN style): patient bags of patch embeddings, a gated attention-MIL
model (Ilse et al., 2018) or a transformer, beside a mean-pooling baseline, patient-level (stratified) k-fold.
Patients are never split across folds; several slides of one patient form one bag.

Training follows STAMP's recipe: a validation split of each fold's training patients (stratified), early stopping
on the validation AUROC (or loss, C-index, Pearson r for the other heads) with the best checkpoint restored,
bags sampled to ``bag_size`` tiles (512) while training and seen whole when evaluated, batches of bags
(``batch_size``: one optimiser step per batch, the mean of its bags' losses), AdamW under a OneCycle schedule.
STAMP's own numbers (batch 64, max LR 1e-4, 32 epochs, patience 16) suit cohorts of hundreds of patients; the
defaults here (batch 16, max LR 1e-3, 40 epochs, patience 10) let a few dozen patients train, and every one is an
option. Heads: ``classification`` (class-weighted cross-entropy; AUROC, balanced accuracy), ``regression`` (a
continuous target, standardised; Pearson r, MSE) and ``survival`` (Cox partial likelihood over each batch,
Breslow ties; Harrell's C-index), each scored per fold and on the out-of-fold predictions pooled over every
patient with 95 % bootstrap intervals (:mod:`hestdata.bench.tasks.mil_stats`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class MilResult:
    folds: list[dict[str, Any]] = field(default_factory=list)
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # patient -> weights (test folds)
    pooled: dict[str, dict[str, Any]] = field(default_factory=dict)  # aggregator / "meanpool" -> pooled statistics
    oof: dict[str, Any] = field(default_factory=dict)  # patient -> out-of-fold output (probabilities, value, risk)
    head: str = "classification"
    aggregator: str = "abmil"
    labels: dict[str, Any] = field(default_factory=dict)  # patient -> label of the scored patients
    classes: list[str] = field(default_factory=list)
    external: bool = False  # scored on an external cohort (split_of) rather than out of fold

    def mean(self, key: str) -> float:
        return float(np.nanmean([f[key] for f in self.folds]))


def _gated_abmil(d_in: int, n_classes: int, hidden: int = 128, attn: int = 64) -> Any:
    import torch
    from torch import nn

    class GatedABMIL(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encode = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(0.1))
            self.a = nn.Sequential(nn.Linear(hidden, attn), nn.Tanh())
            self.b = nn.Sequential(nn.Linear(hidden, attn), nn.Sigmoid())
            self.c = nn.Linear(attn, 1)
            self.head = nn.Linear(hidden, n_classes)

        def forward(self, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.encode(bag)
            w = torch.softmax(self.c(self.a(h) * self.b(h)).squeeze(-1), dim=0)
            return self.head((w[:, None] * h).sum(0)), w

    return GatedABMIL()


def _transformer_mil(d_in: int, n_classes: int, hidden: int = 128, heads: int = 4, layers: int = 2,
                     dropout: float = 0.1) -> Any:
    """A small pre-norm transformer over patch features with a class token (the transformer MSI pipeline of
    Wagner et al., 2023, scaled to benchmark size). With coordinates, a 2D sinusoidal encoding of each patch's
    position (µm, relative to the bag's centre, in units of 256 µm) is added to its token. ``forward`` returns
    the logits and the class token's attention over the patches in the last layer (mean over heads), which the
    heatmaps show as they show ABMIL's weights."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(2 * hidden, hidden))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.n1(x)
            a, w = self.attn(h, h, h, need_weights=True, average_attn_weights=True)
            x = x + a
            return x + self.mlp(self.n2(x)), w

    class TransformerMIL(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout))
            self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.norm = nn.LayerNorm(hidden)
            self.head = nn.Linear(hidden, n_classes)

        def position(self, coords: torch.Tensor) -> torch.Tensor:
            c = (coords - coords.mean(0)) / 256.0
            k = hidden // 4
            freq = torch.exp(torch.arange(k, dtype=torch.float32) * (-np.log(100.0) / max(k - 1, 1)))
            ang = torch.cat([c[:, :1] * freq, c[:, 1:2] * freq], dim=1)
            return torch.cat([ang.sin(), ang.cos()], dim=1)[:, :hidden]

        def forward(self, bag: torch.Tensor, coords: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.embed(bag)
            if coords is not None:
                h = h + self.position(coords)
            x = torch.cat([self.cls[0], h], dim=0)[None]
            w = torch.zeros(len(bag))
            for blk in self.blocks:
                x, att = blk(x)
                w = att[0, 0, 1:]
            return self.head(self.norm(x[0, 0])), w / w.sum().clamp_min(1e-12)  # over patches (not the token)

    return TransformerMIL()


AGGREGATORS = ("abmil", "transformer")


def _forward(model: Any, aggregator: str, bag: Any, pos: Any) -> Any:
    """(logits, weights over patches) of one bag; the transformer also takes the patch positions."""
    return model(bag, pos) if aggregator == "transformer" else model(bag)


def _auroc(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> float:
    from sklearn.metrics import roc_auc_score

    try:
        if len(classes) == 2:
            return float(roc_auc_score(y == classes[1], proba[:, 1]))
        return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))
    except ValueError:
        return float("nan")


MIL_THREADS = 1  # one bag of a few thousand features per step: more threads only contend (414 s -> 37 s seen)


@contextlib.contextmanager
def bounded_threads(n: int = MIL_THREADS) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads for the block (restored after): bag-by-bag training of a small
    network is dominated by thread start-up and oversubscription when torch uses every core."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


HEADS = ("classification", "regression", "survival")
MONITORS = ("score", "loss")


def slide_mil_protocol(*args: Any, **kwargs: Any) -> Any:
    """Patient-level cross-validated MIL (and a mean-pool baseline); see :func:`_slide_mil_protocol`.
    Training runs on bounded threads (``MIL_THREADS``)."""
    with bounded_threads():
        return _slide_mil_protocol(*args, **kwargs)


def _cox_loss(risk: Any, time: Any, event: Any) -> Any:
    """Negative Cox partial log-likelihood (Breslow ties) of a batch, per event; None without an event."""
    import torch

    if float(event.sum()) == 0:
        return None
    at_risk = (time[None, :] >= time[:, None]).float()  # row i: who is still at risk at t_i
    log_den = torch.logsumexp(risk[None, :].expand(len(risk), -1).masked_fill(at_risk == 0, float("-inf")), dim=1)
    return -((risk - log_den) * event).sum() / event.sum()


def _splits(patients: list[str], y: np.ndarray, head: str, n_folds: int, seed: int) -> list[tuple[Any, Any]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    if head == "classification":
        classes = sorted(set(y))
        k = int(min(n_folds, min(np.sum(y == c) for c in classes)))
        if k < 2:
            raise ValueError("slide_mil needs at least two patients per class")
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(patients, y))
    k = int(min(n_folds, len(patients)))
    if k < 2:
        raise ValueError("slide_mil needs at least two patients")
    return list(KFold(k, shuffle=True, random_state=seed).split(patients))


def _external(patients: list[str], y: np.ndarray, head: str, split_of: dict[str, str]) -> tuple[Any, Any]:
    """(train, test) indices of an external validation; every patient in one of the two, classes of the test
    cohort present in the training cohort."""
    unknown = sorted({v for v in split_of.values()} - {"train", "test"})
    missing = [p for p in patients if p not in split_of]
    if unknown or missing:
        raise ValueError(f"external validation: every patient is 'train' or 'test' (unknown {unknown}, "
                         f"unassigned {missing[:5]})")
    tr = np.array([i for i, p in enumerate(patients) if split_of[p] == "train"], dtype=np.int64)
    te = np.array([i for i, p in enumerate(patients) if split_of[p] == "test"], dtype=np.int64)
    if len(tr) < 2 or len(te) < 1:
        raise ValueError(f"external validation needs >= 2 training and >= 1 test patients ({len(tr)}, {len(te)})")
    if head == "classification":
        absent = sorted(set(y[te]) - set(y[tr]))
        if absent or len(set(y[tr])) < 2:
            raise ValueError(f"external validation: the training cohort needs every class of the test cohort and "
                             f"at least two (missing {absent})")
    return tr, te


def _validation(train_p: list[str], y_of: dict[str, Any], head: str, fraction: float, seed: int
                ) -> tuple[list[str], list[str]]:
    """(fit, validation) patients of one fold's training patients; no validation below 5 patients."""
    if fraction <= 0 or len(train_p) < 5:
        return train_p, []
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    n_val = max(1, int(round(fraction * len(train_p))))
    yy = np.array([str(y_of[p]) for p in train_p])
    counts = {c: int((yy == c).sum()) for c in set(yy)}
    if head == "classification" and min(counts.values()) >= 2 and n_val >= len(counts):
        split = StratifiedShuffleSplit(1, test_size=n_val, random_state=seed).split(train_p, yy)
    else:
        split = ShuffleSplit(1, test_size=n_val, random_state=seed).split(train_p)
    fit, val = next(split)
    return [train_p[i] for i in fit], [train_p[i] for i in val]


def _slide_mil_protocol(bags: dict[str, np.ndarray], labels: dict[str, Any], *, n_folds: int = 5, seed: int = 1,
                        epochs: int = 40, lr: float = 1e-3, hidden: int = 128, aggregator: str = "abmil",
                        coords: dict[str, np.ndarray] | None = None, head: str = "classification",
                        events: dict[str, Any] | None = None, bag_size: int = 512, batch_size: int = 16,
                        val_fraction: float = 0.2, patience: int = 10, monitor: str = "score",
                        weight_decay: float = 1e-2, n_boot: int = 1000,
                        split_of: dict[str, str] | None = None) -> MilResult:
    """Per fold: train the aggregator (gated ABMIL or a transformer, ``aggregator``) with STAMP's recipe (module
    docstring) and the mean-pool baseline on the training patients; score the held-out patients. Fold metrics are
    ``<aggregator>_<metric>`` and ``meanpool_<metric>``; ``res.pooled`` holds the pooled out-of-fold statistics
    of both. ``labels``: a class (classification), a number (regression) or a survival time (survival, with
    ``events``: patient -> 1 if the event was observed, 0 if censored). ``coords`` (patient -> (n, 2) µm, aligned
    with the bag) give the transformer its positional encoding. ``split_of`` (patient -> ``"train"`` or
    ``"test"``) replaces the folds by one external validation (STAMP's deploy): the model is trained on the
    ``train`` patients (with its own validation split) and scored, unchanged, on the ``test`` patients; the pooled
    statistics are then those of the external cohort."""
    from hestdata.bench.tasks import mil_stats

    if head not in HEADS:
        raise ValueError(f"unknown MIL head {head!r}; choose one of {HEADS}")
    if aggregator not in AGGREGATORS:
        raise ValueError(f"unknown MIL aggregator {aggregator!r}; choose one of {AGGREGATORS}")
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}")
    patients = sorted(bags)
    if head == "classification":
        y = np.array([str(labels[p]) for p in patients])
        classes = sorted(set(y))
        if len(classes) < 2:
            raise ValueError("slide_mil needs at least two label classes")
    else:
        try:
            y = np.array([float(labels[p]) for p in patients])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a {head} head needs numeric labels: {exc}") from exc
        classes = []
        if not np.isfinite(y).all():
            raise ValueError(f"a {head} head needs finite labels")
    ev = np.array([float((events or {}).get(p, np.nan)) for p in patients])
    if head == "survival" and (events is None or not np.isin(ev, (0.0, 1.0)).all()):
        raise ValueError("a survival head needs events: 1 (observed) or 0 (censored) for every patient")
    y_of = dict(zip(patients, y, strict=True))
    ev_of = dict(zip(patients, ev, strict=True))
    n_out = len(classes) if head == "classification" else 1
    cidx = {c: i for i, c in enumerate(classes)}
    res = MilResult()
    oof: dict[str, dict[str, Any]] = {"model": {}, "meanpool": {}}
    ctx = dict(patients=patients, y=y, y_of=y_of, ev=ev, ev_of=ev_of, classes=classes, cidx=cidx, head=head,
               aggregator=aggregator, seed=seed, bags=bags, coords=coords, n_out=n_out, epochs=epochs, lr=lr,
               hidden=hidden, bag_size=bag_size, batch_size=batch_size, val_fraction=val_fraction,
               patience=patience, monitor=monitor, weight_decay=weight_decay)
    splits = _splits(patients, y, head, n_folds, seed) if split_of is None else [_external(patients, y, head,
                                                                                            split_of)]
    for fold, (tr, te) in enumerate(splits):
        row, out_a, out_b, attn = _run_fold(fold, tr, te, ctx)
        for i, p in enumerate(row["test_patients"]):
            oof["model"][p], oof["meanpool"][p] = out_a[i], out_b[i]
        res.folds.append(row)
        res.attention.update(attn)
    order = [p for p in patients if p in oof["model"]]
    yo = np.array([y_of[p] for p in order])
    for name, key in ((aggregator, "model"), ("meanpool", "meanpool")):
        o = np.array([oof[key][p] for p in order])
        if head == "classification":
            res.pooled[name] = mil_stats.pooled_classification(yo, o, classes, n_boot=n_boot, seed=seed)
        elif head == "regression":
            res.pooled[name] = mil_stats.pooled_regression(yo, o, n_boot=n_boot, seed=seed)
        else:
            res.pooled[name] = mil_stats.pooled_survival(yo, np.array([ev_of[p] for p in order]), o, n_boot=n_boot,
                                                         seed=seed)
    res.oof = {p: oof["model"][p] for p in order}
    res.head, res.aggregator, res.classes, res.external = head, aggregator, list(classes), split_of is not None
    res.labels = {p: y_of[p] for p in order}
    return res


def _run_fold(fold: int, tr: np.ndarray, te: np.ndarray, c: dict[str, Any]) -> tuple[dict[str, Any], Any, Any,
                                                                               dict[str, np.ndarray]]:
    """Train and score one fold (``c``: the protocol's inputs and options); returns (fold row, model outputs and
    baseline outputs of the test patients, attention)."""

    import torch

    from hestdata.bench.tasks import mil_stats

    patients, y_of, ev_of, classes, cidx, head, aggregator, seed, bags, coords, n_out = (c[k] for k in (
        "patients", "y_of", "ev_of", "classes", "cidx", "head", "aggregator", "seed", "bags", "coords", "n_out"))
    epochs, lr, hidden, bag_size, batch_size, val_fraction, patience, monitor, weight_decay = (c[k] for k in (
        "epochs", "lr", "hidden", "bag_size", "batch_size", "val_fraction", "patience", "monitor", "weight_decay"))

    def target(ps: list[str]) -> Any:
        if head == "classification":
            return torch.tensor([cidx[y_of[p]] for p in ps])
        return torch.tensor([y_of[p] for p in ps], dtype=torch.float32)

    train_p, test_p = [patients[i] for i in tr], [patients[i] for i in te]
    fit_p, val_p = _validation(train_p, y_of, head, val_fraction, seed + fold)
    allx = np.concatenate([bags[p] for p in fit_p])
    mu, sd = allx.mean(0), allx.std(0) + 1e-6
    y_mu, y_sd = (float(np.mean([y_of[p] for p in fit_p])), float(np.std([y_of[p] for p in fit_p]) + 1e-8)) \
        if head == "regression" else (0.0, 1.0)
    torch.manual_seed(seed + fold)
    gen = np.random.default_rng(seed + fold)
    model = (_transformer_mil(allx.shape[1], n_out, hidden) if aggregator == "transformer"
             else _gated_abmil(allx.shape[1], n_out, hidden))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    bs = max(1, min(batch_size, len(fit_p)))
    steps = int(np.ceil(len(fit_p) / bs))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.3)
    warmup = int(np.ceil(0.3 * epochs))
    if head == "classification":
        counts = np.bincount([cidx[y_of[p]] for p in fit_p], minlength=n_out).astype(np.float32)
        weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / n_out)
    tbags = {p: torch.tensor((bags[p] - mu) / sd, dtype=torch.float32) for p in patients}
    tpos = {p: torch.tensor(coords[p], dtype=torch.float32) for p in patients} if coords else {}

    def out_of(p: str, sample: bool) -> Any:
        b, pos = tbags[p], tpos.get(p)
        if sample and len(b) > bag_size:  # STAMP: a random bag_size tiles per bag and step
            keep = torch.from_numpy(np.sort(gen.choice(len(b), bag_size, replace=False)))
            b, pos = b[keep], (pos[keep] if pos is not None else None)
        return _forward(model, aggregator, b, pos)[0]

    def loss_of(ps: list[str], outs: Any) -> Any:
        if head == "classification":
            return torch.nn.functional.cross_entropy(outs, target(ps), weight=weight)
        if head == "regression":
            return torch.nn.functional.mse_loss(outs[:, 0], (target(ps) - y_mu) / y_sd)
        return _cox_loss(outs[:, 0], target(ps), torch.tensor([ev_of[p] for p in ps], dtype=torch.float32))

    def score_of(ps: list[str], outs: Any) -> float:
        o = outs.numpy()
        if head == "classification":
            return _auroc(np.array([y_of[p] for p in ps]), torch.softmax(outs, 1).numpy(), classes)
        if head == "regression":
            t = np.array([y_of[p] for p in ps])
            return float(np.corrcoef(t, o[:, 0])[0, 1]) if t.std() > 0 and o[:, 0].std() > 0 else float("nan")
        return mil_stats.concordance_index(np.array([y_of[p] for p in ps]), np.array([ev_of[p] for p in ps]),
                                           o[:, 0])

    ran, best_epoch = _train_epochs(model, opt, sched, fit_p, val_p, bs, out_of, loss_of, score_of, gen,
                                    epochs, warmup, patience, monitor)
    model.eval()
    attn = {}
    with torch.no_grad():
        outs = []
        for p in test_p:
            o, w = _forward(model, aggregator, tbags[p], tpos.get(p))
            outs.append(o)
            attn[p] = w.numpy()
        to = torch.stack(outs)
    row, out_a, out_b = _fold_metrics(c, fold, tr, te, to, bags, mu, sd, (y_mu, y_sd))
    row.update({"validation_patients": val_p, "epochs_run": ran, "best_epoch": best_epoch})
    return row, out_a, out_b, attn


def _train_epochs(model: Any, opt: Any, sched: Any, fit_p: list[str], val_p: list[str], bs: int, out_of: Any,
                  loss_of: Any, score_of: Any, gen: Any, epochs: int, warmup: int, patience: int,
                  monitor: str) -> tuple[int, int]:
    """STAMP's loop: batches of sampled bags, one OneCycle step per batch; after each epoch the validation score
    (or loss), the best checkpoint kept, stopped ``patience`` epochs after the last improvement (counted once
    the warm-up is over), the best restored. Returns (epochs run, best epoch)."""
    import copy

    import torch

    best: tuple[float, float] = (-np.inf, -np.inf)
    best_state, best_epoch, since, ran = copy.deepcopy(model.state_dict()), 0, 0, 0
    for epoch in range(epochs):
        model.train()
        order = list(gen.permutation(fit_p))
        for s0 in range(0, len(order), bs):
            ps = order[s0:s0 + bs]
            loss = loss_of(ps, torch.stack([out_of(p, True) for p in ps]))
            opt.zero_grad()
            if loss is not None:
                loss.backward()
                opt.step()
            sched.step()
        ran = epoch + 1
        if not val_p:
            continue
        model.eval()
        with torch.no_grad():
            vo = torch.stack([out_of(p, False) for p in val_p])
            vl = loss_of(val_p, vo)
            vs = score_of(val_p, vo)
        vloss = float(vl) if vl is not None else np.inf
        key = (-vloss, 0.0) if monitor == "loss" else (vs if np.isfinite(vs) else -np.inf, -vloss)
        if key > best:
            best, best_state, best_epoch, since = key, copy.deepcopy(model.state_dict()), epoch + 1, 0
        elif epoch + 1 > warmup:  # patience counts once the OneCycle warm-up (its first 30 %) is over
            since += 1
            if since >= patience:
                break
    if val_p:
        model.load_state_dict(best_state)  # the best validation checkpoint
    else:
        best_epoch = ran
    return ran, best_epoch


def _fold_metrics(c: dict[str, Any], fold: int, tr: np.ndarray, te: np.ndarray, to: Any, bags: dict[str, Any],
                  mu: np.ndarray, sd: np.ndarray, y_scale: tuple[float, float]) -> tuple[dict[str, Any], Any, Any]:
    """A fold's metrics for the trained model's test outputs ``to`` and the mean-pool baseline fitted here;
    returns (row, model outputs, baseline outputs) of the test patients."""
    import torch

    from hestdata.bench.tasks import mil_stats

    patients, y, ev, classes, cidx, head, aggregator, seed, n_out = (
        c[k] for k in ("patients", "y", "ev", "classes", "cidx", "head", "aggregator", "seed", "n_out"))
    train_p, test_p = [patients[i] for i in tr], [patients[i] for i in te]
    y_mu, y_sd = y_scale
    mean_tr = np.stack([((bags[p] - mu) / sd).mean(0) for p in train_p])
    mean_te = np.stack([((bags[p] - mu) / sd).mean(0) for p in test_p])
    row: dict[str, Any] = {"fold": fold, "test_patients": test_p}
    if head == "classification":
        proba_a = torch.softmax(to, 1).numpy()
        yt = y[te]
        from sklearn.linear_model import LogisticRegression

        from hestdata.bench.metrics import balanced_accuracy

        lr_model = LogisticRegression(max_iter=2000, class_weight="balanced").fit(mean_tr, y[tr])
        proba_b = np.zeros((len(test_p), n_out))
        proba_b[:, [cidx[c] for c in lr_model.classes_]] = lr_model.predict_proba(mean_te)
        row.update({f"{aggregator}_auroc": _auroc(yt, proba_a, classes),
                    f"{aggregator}_balanced_accuracy": balanced_accuracy(yt, np.array(classes)[proba_a.argmax(1)]),
                    "meanpool_auroc": _auroc(yt, proba_b, classes),
                    "meanpool_balanced_accuracy": balanced_accuracy(yt, np.array(classes)[proba_b.argmax(1)])})
        out_a, out_b = proba_a, proba_b
    elif head == "regression":
        from sklearn.linear_model import Ridge

        out_a = to.numpy()[:, 0] * y_sd + y_mu
        out_b = Ridge(alpha=1.0).fit(mean_tr, y[tr]).predict(mean_te)
        for name, o in ((aggregator, out_a), ("meanpool", out_b)):
            st = mil_stats.pooled_regression(y[te], o, n_boot=0)
            row.update({f"{name}_pearson": st["pearson"], f"{name}_mse": st["mse"]})
    else:
        out_a = to.numpy()[:, 0]
        out_b = _linear_cox(mean_tr, y[tr], ev[tr], mean_te, seed + fold)
        for name, o in ((aggregator, out_a), ("meanpool", out_b)):
            row[f"{name}_c_index"] = mil_stats.concordance_index(y[te], ev[te], o)
    return row, out_a, out_b


def _linear_cox(x_tr: np.ndarray, t_tr: np.ndarray, e_tr: np.ndarray, x_te: np.ndarray, seed: int) -> np.ndarray:
    """The mean-pool baseline of a survival head: a linear Cox model (L2 1e-2) fitted by Adam, full batch."""
    import torch

    torch.manual_seed(seed)
    x = torch.tensor(x_tr, dtype=torch.float32)
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-2)
    t, e = torch.tensor(t_tr, dtype=torch.float32), torch.tensor(e_tr, dtype=torch.float32)
    for _ in range(300):
        loss = _cox_loss(x @ w, t, e)
        if loss is None:
            break
        loss = loss + 1e-2 * (w * w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (torch.tensor(x_te, dtype=torch.float32) @ w).detach().numpy()
