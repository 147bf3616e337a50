"""Cross-modal pretraining (issue 28): gene encoders, losses, retrieval metrics on degenerate inputs and against
a brute-force implementation, the planted image–gene link recovered (and not when the pairing is shuffled),
exact resumption, splits that never share a group, leaderboard rows with both fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

import torch  # noqa: E402

from hestdata.bench.contrastive import clip_loss, siglip_loss  # noqa: E402
from hestdata.bench.pretrain_config import split_groups  # noqa: E402
from hestdata.bench.pretrain_eval import in_batch_recall, retrieval_report  # noqa: E402
from hestdata.errors import InputError  # noqa: E402

TASK = """name: planted_pretrain
type: pretrain
samples: "cohort = 'planted'"
group_by: patient
patch: 32px_2um
splits: {val: [P3], test: [P4]}
options: {image_encoder: color-stats, gene_encoder: mlp, genes: variance, n_genes: 10, epochs: 6, lr: 0.003,
          batch_size: 32, eval_repeats: 3}
"""


def _root(base: Path, shuffle: bool) -> Path:
    import hestdata
    from tests.synth import planted_sample

    root = base / ("shuffled" if shuffle else "planted")
    for i in range(5):
        s = planted_sample(f"pl{i}", seed=i, shuffle_pairs=shuffle)
        alt = base / f"alt{i}.csv"  # a slide-level label for HESCAPE's alteration task: ERBB2-high slides
        alt.write_text(f"ERBB2_high\n{int(i % 2 == 0)}\n")
        s.slide_inputs["alterations"] = alt
        hestdata.convert(s, root, patches=["32px_2um"], min_tissue_fraction=0, progress=False,
                         metadata={"patient": f"P{i}", "cohort": "planted"})
    return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("pretrain")
    task = base / "task.yaml"
    task.write_text(TASK)
    return _root(base, False), _root(base, True), task


def brute_recall(sim: np.ndarray, k: int) -> float:
    """Recall@k without ties, by sorting each row (the independent check of metrics.recall_at_k)."""
    order = np.argsort(-sim, axis=1, kind="stable")
    return float(np.mean([i in order[i, :k] for i in range(len(sim))]))


def test_losses_on_known_inputs():
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    scale = torch.tensor(np.log(1 / 0.07))
    same = torch.nn.functional.normalize(torch.ones(8, 16), dim=1)
    assert float(clip_loss(same, same, scale)) == pytest.approx(np.log(8), rel=1e-5)  # all tied: log B
    assert float(clip_loss(z, z, scale)) < float(clip_loss(z, z[torch.randperm(8)], scale))
    bias = torch.tensor(-10.0)
    assert float(siglip_loss(z, z, scale, bias)) < float(siglip_loss(z, -z, scale, bias))
    # siglip by hand on 2 pairs: -sum log sigmoid(label * logit) / B
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = np.exp(np.log(1 / 0.07)) * (a @ a.T).numpy() - 10
    want = -np.sum(np.log(1 / (1 + np.exp(-(2 * np.eye(2) - 1) * logits)))) / 2
    assert float(siglip_loss(a, a, scale, bias)) == pytest.approx(want, rel=1e-5)


def test_retrieval_report_degenerate_and_independent():
    rng = np.random.default_rng(0)
    n = 128
    slides = np.repeat(["s1", "s2"], n // 2)
    a = rng.normal(size=(n, 8))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    perfect = retrieval_report(a, a, slides, repeats=2)
    assert perfect["img2gene_recall@1"] == perfect["gene2img_recall@1"] == 1.0
    assert perfect["batch_img2gene_recall@5"] == 1.0 and perfect["otherslides_img2gene_recall@1"] == 1.0
    const = np.ones((n, 8)) / np.sqrt(8)
    c = retrieval_report(const, const, slides, repeats=2)
    for k in (1, 5, 10):  # every score tied: chance, whole set and in batches
        assert c[f"img2gene_recall@{k}"] == pytest.approx(k / n)
        assert c[f"batch_img2gene_recall@{k}"] == pytest.approx(k / 64)
        assert c[f"chance_batch_recall@{k}"] == pytest.approx(k / 64)
        assert c[f"withinslide_img2gene_recall@{k}"] == pytest.approx(k / (n // 2))
    assert c["img2gene_top1_same_slide"] == pytest.approx(0.5) == c["chance_top1_same_slide"]
    b = rng.normal(size=(n, 8))
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    noisy = a + 0.8 * b
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    sim = noisy @ a.T
    r = retrieval_report(noisy, a, slides, repeats=1)
    for k in (1, 5, 10):
        assert r[f"img2gene_recall@{k}"] == pytest.approx(brute_recall(sim, k))
        assert r[f"gene2img_recall@{k}"] == pytest.approx(brute_recall(sim.T, k))
    shuffled = retrieval_report(a, a[rng.permutation(n)], slides, repeats=5)
    assert shuffled["img2gene_recall@10"] < 0.25 and shuffled["batch_img2gene_recall@5"] < 0.25
    # HESCAPE's in-batch recall by hand: one batch of 64 = recall over that sub-matrix
    one = in_batch_recall(noisy[:64], a[:64], 64, 1, 0)
    assert one["batch_img2gene_recall@5"] == pytest.approx(brute_recall(sim[:64, :64], 5))


def test_blockwise_recall_equals_the_whole_matrix_with_ties(monkeypatch):
    """The report computes recall in row blocks (no n x n matrix): equal to metrics.recall_at_k on the whole
    matrix, with ties (embeddings rounded to one decimal) and with the same-slide distractors masked out."""
    from hestdata.bench import pretrain_eval
    from hestdata.bench.metrics import recall_at_k

    monkeypatch.setattr(pretrain_eval, "BLOCK_ROWS", 7)
    rng = np.random.default_rng(2)
    a, b = np.round(rng.normal(size=(50, 3)), 1), np.round(rng.normal(size=(50, 3)), 1)
    slides = np.array(["x", "y", "z", "x", "y"] * 10)
    r = retrieval_report(a, b, slides, batch=64)
    sim = a @ b.T
    for name, m in (("img2gene", sim), ("gene2img", sim.T)):
        want = recall_at_k(m)
        for k in ("recall@1", "recall@5", "recall@10", "median_rank"):
            assert r[f"{name}_{k}"] == pytest.approx(want[k])
        same = slides[:, None] == slides[None, :]
        other = recall_at_k(np.where(same & ~np.eye(50, dtype=bool), -np.inf, m))
        assert r[f"otherslides_{name}_recall@5"] == pytest.approx(other["recall@5"])


def test_splits_never_share_a_group():
    groups = {"a1": "A", "a2": "A", "b1": "B", "c1": "C", "d1": "D"}
    s = split_groups(groups, {"val": ["B"], "test": ["C", "D"]})
    assert s == {"train": ["a1", "a2"], "val": ["b1"], "test": ["c1", "d1"]}
    for bad, msg in (({"val": ["B"]}, "'test'"), ({"test": ["B"], "val": ["B"]}, "both"),
                     ({"test": ["Z"]}, "no selected sample"), ({"test": ["A", "B", "C", "D"]}, "no group is left"),
                     ({"test": ["A"], "train": ["B"]}, "unknown split")):
        with pytest.raises(InputError, match=msg):
            split_groups(groups, bad)


def test_gene_encoders_fit_on_training_rows_and_report_missing(tmp_path):
    from hestdata.bench.gene_encoders import available, load_gene_encoder

    genes = ["ERBB2", "ESR1", "PGR", "MKI67"]
    x = torch.as_tensor(np.random.default_rng(0).poisson(5, size=(20, 4)), dtype=torch.float32)
    ident = load_gene_encoder("identity", genes)
    assert torch.allclose(ident(x), torch.log1p(x))
    cp = load_gene_encoder("identity", genes, normalize="cp10k_log1p")
    assert torch.allclose(cp(x), torch.log1p(x * 1e4 / x.sum(1, keepdim=True)))
    p = load_gene_encoder("pca", genes, n_components=3)
    before = p.fingerprint
    p.fit(x[:10].numpy())
    assert p.fingerprint != before  # what the fit learned is part of the fingerprint
    from sklearn.decomposition import PCA

    ref = PCA(3).fit(torch.log1p(x[:10]).numpy())
    got = p(x[10:]).detach().numpy()
    want = ref.transform(torch.log1p(x[10:]).numpy())
    assert np.allclose(np.abs(got), np.abs(want), atol=1e-4)  # PCA's signs are arbitrary
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"<pad>": 0, "<cls>": 1, "ERBB2": 2, "ENSG00000091831": 3}))
    sc = load_gene_encoder("scgpt", genes, random_init=True, vocab=vocab,
                           gene_ids=["", "ENSG00000091831", "", ""])  # ESR1 found by its Ensembl id
    assert sc.extra["n_missing"] == 2 and sc.extra["missing"] == ["PGR", "MKI67"]
    assert sc(x).shape == (20, sc.out_dim)
    with pytest.raises(InputError, match="needs its weights"):
        load_gene_encoder("scgpt", genes)
    with pytest.raises(InputError, match="unknown gene encoder"):
        load_gene_encoder("nope", genes)
    assert {"identity", "pca", "mlp", "scgpt", "nicheformer"} <= set(available())


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=False)["model"]


def test_planted_link_recovered_shuffled_at_chance(roots, tmp_path):
    import polars as pl

    from hestdata.bench.pretrain import pretrain

    planted, shuffled, task = roots
    res = pretrain(planted, task, tmp_path / "run", alteration="ERBB2_high")
    m = res.metrics
    d = res.downstream
    for name in ("pretrained", "frozen"):  # five slides, five patient folds: the probe runs, pooled with intervals
        assert 0 <= d[f"alteration_{name}_auroc"] <= 1 and d[f"alteration_{name}_auroc_ci_low"] <= \
            d[f"alteration_{name}_auroc_ci_high"]
    assert m["n_test"] == 64 and m["chance_recall@5"] == pytest.approx(5 / 64)
    assert m["img2gene_recall@5"] > 0.35 and m["gene2img_recall@5"] > 0.35, m
    assert set(res.splits["test"]) == {"pl4"} and set(res.splits["val"]) == {"pl3"}
    assert not set(res.splits["train"]) & {"pl3", "pl4"}
    # the gene panel was chosen among the genes (10 here); the downstream task saw the test split only as test
    assert res.downstream["expr_pretrained_pearson_mean"] > res.downstream["expr_library_size_pearson_mean"]
    for f in ("curves.png", "retrieval_matrix.png", "recall.png"):
        assert (tmp_path / "run" / "figures" / f).stat().st_size > 5000
    lb = pl.read_parquet(planted / "leaderboard.parquet")
    row = lb.filter(pl.col("metric") == "img2gene_recall@5").row(0, named=True)
    assert row["encoder"] == "color-stats+mlp" and row["task_type"] == "pretrain"
    assert row["image_fingerprint"] == res.fingerprints["image"] and row["gene_fingerprint"] == res.fingerprints["gene"]
    assert row["pretrain_config_hash"] == res.config.hash
    ctl = pretrain(shuffled, task, tmp_path / "ctl", leaderboard=False, figures=False).metrics
    assert ctl["img2gene_recall@5"] < 0.2 and ctl["gene2img_recall@5"] < 0.2, ctl


def test_resume_is_exact(roots, tmp_path):
    from hestdata.bench.pretrain import pretrain

    planted, _, task = roots
    kw = {"epochs": 3, "leaderboard": False, "figures": False}
    whole = pretrain(planted, task, tmp_path / "whole", **kw)
    part = pretrain(planted, task, tmp_path / "cut", max_steps=8, **kw)  # 6 steps an epoch: killed mid-epoch 2
    assert not part.metrics and part.history[-1]["epoch"] == 0
    again = pretrain(planted, task, tmp_path / "cut", **kw)
    assert again.resumed_from_step == 8
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in whole.history] == [h["train_loss"] for h in again.history]
    assert whole.metrics == again.metrics
    with pytest.raises(InputError, match="another run"):
        pretrain(planted, task, tmp_path / "cut", **{**kw, "lr": 0.01})


def test_ddp_on_two_cpu_processes(roots, tmp_path):
    """torchrun with 2 processes on gloo: each rank trains on its half of every epoch (the DDP-aware loader), the
    loss sees the global batch, rank 0 writes the checkpoint and the result."""
    import os
    import socket
    import subprocess
    import sys

    planted, _, task = roots
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "hestdata.cli", "bench", "pretrain", "--root", str(planted), "--task",
           str(task), "--out", str(out), "--epochs", "2", "--batch-size", "16", "--no-figures"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HESTDATA_QUIET": "1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    doc = json.loads((out / "result.json").read_text())
    assert doc["world_size"] == 2 and doc["global_batch"] == 32
    assert doc["steps_per_epoch"] == 192 // 32  # 3 training slides x 64 pairs, split over two ranks of 16
    assert doc["metrics"]["img2gene_recall@5"] > doc["metrics"]["chance_recall@5"]
    assert p.stdout.count("held out:") == 1  # rank 0 reports


def test_bad_pretraining_inputs_fail_in_one_line(roots, tmp_path):
    from typer.testing import CliRunner

    from hestdata.cli import app

    planted, _, task = roots
    runner = CliRunner()

    def one_line(args: list[str], *want: str) -> None:
        r = runner.invoke(app, ["bench", "pretrain", "--root", str(planted), "--out", str(tmp_path / "o"), *args])
        lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.output
        assert "Traceback" not in r.output and all(w in lines[0] for w in want), lines[0]

    bad = tmp_path / "bad.yaml"
    bad.write_text(TASK.replace("lr: 0.003", "lr: 0.003, learning_rate: 1"))
    one_line(["--task", str(bad)], "learning_rate")
    bad.write_text(TASK.replace("test: [P4]", "test: [P9]"))
    one_line(["--task", str(bad)], "P9", "no selected sample")
    bad.write_text(TASK.replace("splits: {val: [P3], test: [P4]}\n", ""))
    one_line(["--task", str(bad)], "splits")
    one_line(["--task", "her2st_expression"], "not pretrain")
    one_line(["--task", str(task), "--gene-encoder", "scgpt"], "needs its weights", "--gene-random-init")
    one_line(["--task", str(task), "--finetune"], "color-stats", "no torch module")
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def _planted_slides(seed: int = 0, n: int = 30):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 4))
    w, b = rng.normal(size=(4, 16)), rng.normal(0, 0.6, size=(4, 40))
    bags = {}
    for i in range(n):
        x = rng.normal(size=(int(rng.integers(20, 40)), 16))
        x[: len(x) // 2] += v[i] @ w  # half the patches carry the slide's state
        bags[f"s{i}"] = x.astype(np.float32)
    profiles = rng.poisson(np.exp(3 + v @ b)).astype(np.float64)
    slides = [f"s{i}" for i in range(n)]
    groups = np.array([f"p{i // 2}" for i in range(n)])  # two slides a patient
    labels = {s: bool(v[i, 0] > 0) for i, s in enumerate(slides)}
    return bags, profiles, slides, groups, [f"G{j}" for j in range(40)], labels


def test_slide_alignment_recovers_a_planted_profile_link():
    from hestdata.bench.tasks.slide_pretrain import slide_pretrain_protocol

    bags, profiles, slides, groups, genes, labels = _planted_slides()
    kw = {"epochs": 60, "n_folds": 5, "n_boot": 200, "n_genes": 40}
    res = slide_pretrain_protocol(bags, profiles, slides, groups, genes, labels=labels, **kw)
    m = res.metrics
    assert m["chance_recall@1"] == pytest.approx(1 / 6)  # 5 folds of 6 held-out slides
    assert m["slide2profile_recall@1"] > 3 * m["chance_recall@1"] and m["profile2slide_recall@1"] > 0.4, m
    assert m["alteration_aligned_auroc"] > 0.8, m
    for f in res.folds:  # whole patients held out
        held = {groups[slides.index(s)] for s in f["test_slides"]}
        rest = {groups[i] for i, s in enumerate(slides) if s not in f["test_slides"]}
        assert not held & rest
    rng = np.random.default_rng(1)
    ctl = slide_pretrain_protocol(bags, profiles[rng.permutation(len(slides))], slides, groups, genes,
                                  aggregator="mean", **kw).metrics
    assert ctl["slide2profile_recall@1"] < 0.4 and ctl["profile2slide_recall@1"] < 0.4, ctl
    tr = slide_pretrain_protocol(bags, profiles, slides, groups, genes, aggregator="transformer",
                                 **{**kw, "epochs": 2, "n_folds": 2})  # the transformer tower runs (shapes, folds)
    assert tr.metrics["n_slides"] == 30 and 0 <= tr.metrics["slide2profile_recall@1"] <= 1


def test_frozen_backbone_stays_and_finetuned_backbone_moves(roots, tmp_path):
    """image_mode frozen: the encoder's weights are untouched (and not saved: they are the fingerprinted
    encoder's own); finetune: they train, at backbone_lr_scale x lr, and the checkpoint holds them. SigLIP too."""
    from hestdata.bench.encoders import from_module
    from hestdata.bench.pretrain import pretrain

    planted, _, task = roots

    def tiny():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten())
        return from_module(net, "tiny-cnn", input_size=None)

    kw = {"epochs": 2, "leaderboard": False, "figures": False, "loss": "siglip"}
    frozen = tiny()
    before = {k: v.clone() for k, v in frozen.module.state_dict().items()}
    pretrain(planted, task, tmp_path / "frozen", image_encoder=frozen, **kw)
    assert all(torch.equal(before[k], v) for k, v in frozen.module.state_dict().items())
    saved = torch.load(tmp_path / "frozen" / "checkpoint.pt", weights_only=False)
    assert not any(k.startswith("image_backbone.") for k in saved["model"]) and "logit_bias" in saved["model"]
    tuned = tiny()
    res = pretrain(planted, task, tmp_path / "tuned", image_encoder=tuned, image_mode="finetune", **kw)
    assert any(not torch.equal(before[k], v) for k, v in tuned.module.state_dict().items())
    saved = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=False)
    assert any(k.startswith("image_backbone.") for k in saved["model"])
    groups = saved["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["initial_lr"] == pytest.approx(groups[0]["initial_lr"] * 0.1)
    assert np.isfinite(res.metrics["img2gene_recall@5"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_the_gpu(roots, tmp_path, precision):
    """On CUDA: patches decoded by nvJPEG in one batch, autocast at bf16 (the default) or fp16 with loss scaling;
    the planted link is still found."""
    from hestdata.bench.pretrain import pretrain

    planted, _, task = roots
    res = pretrain(planted, task, tmp_path / precision, device="cuda", precision=precision, leaderboard=False,
                   figures=False)
    saved = torch.load(tmp_path / precision / "checkpoint.pt", weights_only=False)
    assert (saved["scaler"] is not None) == (precision == "fp16")
    assert res.metrics["img2gene_recall@5"] > 0.35, res.metrics


def test_scgpt_checkpoint_folder_loads_by_key_name_and_nicheformer_fits_on_training_rows(tmp_path):
    """The checkpoint route: a scGPT-layout folder (vocab.json, args.json, best_model.pt with flash-attention's
    fused Wqkv names and a decoder the encoder does not use) loads into the architecture by key name; a checkpoint
    of another size is refused naming the file; Nicheformer's rank means come from the training rows only."""
    from hestdata.bench.gene_encoders import load_gene_encoder
    from hestdata.bench.gene_transformer import GeneTransformer

    genes = ["ERBB2", "ESR1", "PGR", "MKI67"]
    vocab = {"<pad>": 0, "<cls>": 1, "<eoc>": 2, "ERBB2": 3, "ESR1": 4, "PGR": 5, "MKI67": 6, "ACTB": 7}
    torch.manual_seed(5)
    ref = GeneTransformer(np.array([3, 4, 5, 6]), 8, style="scgpt", pad_id=0, cls_id=1, d_model=32, nhead=2,
                          d_hid=64, nlayers=1, max_tokens=4)
    sd = {k.replace("self_attn.in_proj_weight", "self_attn.Wqkv.weight")
           .replace("self_attn.in_proj_bias", "self_attn.Wqkv.bias"): v
          for k, v in ref.state_dict().items() if k not in ("token_of_column", "gene_mean")}
    sd["decoder.fc.0.weight"] = torch.zeros(3, 3)  # scGPT's expression decoder: not part of the encoder
    folder = tmp_path / "scgpt"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "args.json").write_text(json.dumps({"embsize": 32, "nheads": 2, "d_hid": 64, "nlayers": 1}))
    torch.save(sd, folder / "best_model.pt")
    enc = load_gene_encoder("scgpt", genes, checkpoint=folder, max_tokens=4)
    got = enc.module.state_dict()
    assert torch.equal(got["transformer_encoder.layers.0.self_attn.in_proj_weight"],
                       ref.state_dict()["transformer_encoder.layers.0.self_attn.in_proj_weight"])
    assert enc.extra["arch"]["unused_keys"] == 1 and enc.extra["n_missing"] == 0 and not enc.extra["random_init"]
    x = torch.as_tensor(np.random.default_rng(0).poisson(4, size=(6, 4)), dtype=torch.float32)
    ref.eval()
    enc.module.eval()
    assert torch.allclose(enc(x), ref(enc.preprocess(x)), atol=1e-5)  # the same function as the saved model
    (folder / "args.json").write_text(json.dumps({"embsize": 48, "nheads": 2, "d_hid": 64, "nlayers": 1}))
    with pytest.raises(InputError, match="best_model.pt.*other shapes.*args.json"):
        load_gene_encoder("scgpt", genes, checkpoint=folder, max_tokens=4)
    nf = load_gene_encoder("nicheformer", genes, random_init=True, max_tokens=4)
    train = np.array([[1, 2, 3, 4], [3, 2, 1, 0]], dtype=np.float32)
    nf.fit(train)
    want = np.log1p(train * 1e4 / train.sum(1, keepdims=True)).mean(0)  # its default normalisation: CP10k log1p
    assert np.allclose(nf.module.gene_mean.numpy(), want, atol=1e-5)


def test_leaderboard_takes_rows_of_both_kinds(tmp_path):
    """A pretraining run's rows (with both encoders' fingerprints) append to a leaderboard that frozen-encoder runs
    wrote, and the other way round; the page renders both tasks."""
    import polars as pl

    from hestdata.bench.leaderboard import append_rows, read, render_markdown

    base = {"task": "t1", "task_type": "expression", "encoder": "e", "fingerprint": "f" * 64, "metric": "pearson_mean",
            "folds": ["A"], "fold_values": [0.1], "mean": 0.1, "std": 0.0, "n_items": 3, "samples": ["s"],
            "config_hash": "c", "versions": "{\"hestdata\": \"x\"}", "date": "2026-12-06", "data_version": "d",
            "ci_low": float("nan"), "ci_high": float("nan")}
    append_rows(tmp_path, [base])
    append_rows(tmp_path, [{**base, "task": "t2", "task_type": "pretrain", "metric": "img2gene_recall@5",
                            "image_fingerprint": "i", "gene_fingerprint": "g", "pretrain_config_hash": "p"}])
    append_rows(tmp_path, [base])
    df = pl.read_parquet(tmp_path / "leaderboard.parquet")
    assert df.height == 3 and df["gene_fingerprint"].to_list() == [None, "g", None]
    md = render_markdown(read(tmp_path))
    assert "### t1" in md and "### t2" in md
