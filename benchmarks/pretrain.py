"""Cross-modal pretraining on the shared her2st sections (issue 28): the held-out numbers, and the trainer's
throughput against a bare training loop over the same pairs held in memory.

    python benchmarks/pretrain.py [--encoder random-vit-s16] [--epochs 10] [--throughput-encoder color-stats]

1. **Run**: the built-in ``her2st_pretrain`` task (patient C's C2 + C3 train, patient B's B4 is held out whole)
   with the given image encoder, the MLP gene encoder, HESCAPE's defaults; prints recall@k both ways (whole
   held-out set, in batches of 64, other-slide), chance levels and the downstream expression figures, and
   writes the run folder (figures included) under ``benchmarks/out/pretrain/``.
2. **Throughput** (pairs/s, one process, CPU): the same model and optimiser trained for the same steps (a)
   by :mod:`hestdata.bench.pretrain` streaming from the store (loader, decode, schedule, checkpoint each epoch) and
   (b) by a bare loop over batches already decoded into memory; the ratio a / b, each the best of ``--repeats``,
   alternating, with the machine's load beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.her2st_benchmark import ROOT, build  # noqa: E402


def run(root: Path, encoder: str, epochs: int, out: Path) -> dict:
    from hestdata.bench.pretrain import pretrain

    t0 = time.perf_counter()
    res = pretrain(root, "her2st_pretrain", out, image_encoder=encoder, epochs=epochs, resume=False,
                   echo=lambda s: print(s, flush=True))
    m, d = res.metrics, res.downstream
    print(f"\nher2st_pretrain, {encoder} + mlp, {epochs} epochs, {time.perf_counter() - t0:.0f} s; "
          f"train {res.splits['train']}, test {res.splits['test']}, {len(res.genes)} genes (HEST criterion on train)")
    for k in (1, 5, 10):
        print(f"  R@{k}: whole set i->g {m[f'img2gene_recall@{k}']:.3f} g->i {m[f'gene2img_recall@{k}']:.3f} "
              f"(chance {m[f'chance_recall@{k}']:.3f}); batches of 64 i->g {m[f'batch_img2gene_recall@{k}']:.3f} "
              f"g->i {m[f'batch_gene2img_recall@{k}']:.3f} (chance {m[f'chance_batch_recall@{k}']:.3f})")
    print("  expression (Pearson, B4, ridge fitted on C2+C3): " + ", ".join(f"{k} {v:.3f}" for k, v in d.items()))
    return {"metrics": m, "downstream": d}


def _bare(root: Path, encoder: str, steps: int, batch: int) -> float:
    """pairs/s of a loop over decoded in-memory batches with the same model, loss and optimiser."""
    import numpy as np
    import torch

    from hestdata.bench.pretrain import build_model, choose_panel
    from hestdata.bench.pretrain_config import PretrainConfig, split_groups
    from hestdata.bench.runner import _task_samples, load_task
    from hestdata.loader import PatchDataset
    from hestdata.store.root import Root

    t = load_task("her2st_pretrain")
    cfg = PretrainConfig(**{**t.options, "image_encoder": encoder})
    r = Root.open(root)
    ids, groups = _task_samples(t, r)
    splits = split_groups(groups, t.splits)
    panel, gids, counts = choose_panel(r, t, cfg, splits)
    model = build_model(cfg, panel, gids, counts, 224, torch.device("cpu"))
    import polars as pl

    ds = PatchDataset(r, query=pl.col("id").is_in(splits["train"]), genes=panel, targets="raw", decode="cpu")
    items = [ds[i] for i in range(len(ds))]
    imgs = torch.stack([torch.as_tensor(np.asarray(it["image"])) for it in items])
    expr = torch.stack([torch.as_tensor(np.asarray(it["expression"])) for it in items])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    g = torch.Generator().manual_seed(0)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randperm(len(imgs), generator=g)[:batch]
        za, zb = model(imgs[idx], expr[idx])
        loss = model.loss(za, zb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def throughput(root: Path, encoder: str, epochs: int, repeats: int, out: Path) -> dict:
    from hestdata.bench.pretrain import pretrain

    ours, bare = [], []
    for i in range(repeats):
        res = pretrain(root, "her2st_pretrain", out / f"tp{i}", image_encoder=encoder, epochs=epochs, resume=False,
                       leaderboard=False, figures=False)
        steps = res.steps_per_epoch * epochs
        ours.append(res.pairs_per_s)
        bare.append(_bare(root, encoder, steps, res.config.batch_size))
        print(f"  repeat {i}: hestdata {ours[-1]:.0f} pairs/s, bare in-memory loop {bare[-1]:.0f} pairs/s "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    ratio = max(ours) / max(bare)
    print(f"throughput ({encoder}, frozen, batch 64, CPU, best of {repeats}): hestdata {max(ours):.0f} pairs/s, "
          f"bare {max(bare):.0f} pairs/s, ratio {ratio:.2f}x (goal >= 0.9x)")
    return {"ours": ours, "bare": bare, "ratio": ratio}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--encoder", default="random-vit-s16")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--throughput-encoder", nargs="*", default=["color-stats"])
    ap.add_argument("--throughput-epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "pretrain")
    ap.add_argument("--skip-run", action="store_true")
    a = ap.parse_args(argv)
    root = build(a.root)
    doc = {} if a.skip_run else {"run": run(root, a.encoder, a.epochs, a.out / a.encoder)}
    for enc in a.throughput_encoder:
        doc[f"throughput_{enc}"] = throughput(root, enc, a.throughput_epochs, a.repeats, a.out)
    print(json.dumps(doc, default=float)[:2000])
    return doc


if __name__ == "__main__":
    main()
