"""Fine-tuning (issue 29, deliverable 4): a planted class learnt and scored beside the frozen linear probe, groups
never in two splits, LoRA leaving the base weights untouched, last-N freezing the rest, and a killed run resumed to
the same weights as an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import hestdata  # noqa: E402
from hestdata.bench.encoders import from_module  # noqa: E402
from hestdata.bench.runner import Task  # noqa: E402


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 8))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six patients of 32 px tiles whose class is a colour cast under noise (a planted signal)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("tiles")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(6):
        for i in range(12):
            label = ["warm", "cool"][i % 2]
            a = rng.normal(128, 40, (32, 32, 3))
            a[:, :, 0 if label == "warm" else 2] += 45
            f = f"p{p}_{i}.png"
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f)
            rows.append({"path": f, "label": label, "patient": f"P{p}"})
    pd.DataFrame(rows).to_csv(d / "manifest.csv", index=False)
    hestdata.convert_images(d, d / "root", manifest=d / "manifest.csv", patches=["32px"])
    return d / "root"


def _task() -> Task:
    return Task(name="tint", type="patch_classification", samples="technology == 'images'", group_by="patient",
                patch="32px", label="label", options={"n_folds": 2})


def _run(root: Path, out: Path, **kw: object):
    from hestdata.bench.finetune import finetune

    cfg = {"epochs": 3, "batch_size": 8, "lr": 0.05, "patience": 5, "augment": True, **kw.pop("cfg", {})}
    return finetune(root, _task(), out, config=cfg, encoder=from_module(_tiny(), "tiny", input_size=32),
                    device=kw.pop("device", "cpu"), **kw)


def test_planted_class_learnt_and_scored_beside_the_frozen_probe(root, tmp_path):
    res = _run(root, tmp_path / "run", cfg={"mode": "full", "epochs": 6})
    assert res.finished and len(res.folds) == 2
    for f in res.folds:
        assert f["n_train"] + f["n_val"] + f["n_test_items"] // 12 == 6 and f["n_val"] >= 1
        assert f["finetuned"]["balanced_accuracy"] > 0.8, f
        assert 0 <= f["frozen"]["balanced_accuracy"] <= 1 and f["gain"] == pytest.approx(
            f["finetuned"]["primary"] - f["frozen"]["primary"])
    doc = json.loads((tmp_path / "run" / "result.json").read_text())
    assert doc["pooled"]["chance"]["balanced_accuracy"] == 0.5
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(pred) == 72 and set(pred["fold"]) == {0, 1}
    tested = pred.groupby("fold")["item"].apply(lambda s: {i.split("/")[0] for i in s})
    assert not tested[0] & tested[1]  # a patient is tested in one fold only
    lb = pd.read_parquet(root / "leaderboard.parquet")
    assert {"tiny+finetune[full]", "tiny+frozen-linear"} <= set(lb["encoder"])


def test_lora_keeps_base_weights_and_last_n_freezes_the_rest(root, tmp_path):
    from hestdata.bench.finetune import FinetuneModel, LoRALinear

    enc = from_module(_tiny(), "tiny", input_size=32)
    before = {k: v.clone() for k, v in enc.module.state_dict().items()}
    m = FinetuneModel(enc, "lora:2", 2, 8)
    assert isinstance(m.backbone[6], LoRALinear)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.6.lora_a.weight", "backbone.6.lora_b.weight", "head.weight", "head.bias"}
    x = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    out0 = m(x)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        m(x).sum().backward()
        opt.step()
    after = m.backbone.state_dict()
    for k, v in before.items():  # conv and the wrapped linear's own weights unchanged
        key = k.replace("6.", "6.base.") if k.startswith("6.") else k
        assert torch.equal(after[key], v), k
    assert not torch.equal(m(x), out0)
    last = FinetuneModel(from_module(_tiny(), "tiny", input_size=32), "last:1", 2, 8)
    assert {n for n, p in last.named_parameters() if p.requires_grad} == {"backbone.6.weight", "backbone.6.bias",
                                                                        "head.weight", "head.bias"}
    with pytest.raises(ValueError, match="mode"):
        from hestdata.bench.finetune import FinetuneConfig

        FinetuneConfig(mode="lora")


def test_a_killed_run_resumes_to_the_same_weights(root, tmp_path):
    whole = _run(root, tmp_path / "whole", cfg={"mode": "lora:2", "folds": [0]}, leaderboard=False)
    assert whole.finished
    part = _run(root, tmp_path / "part", cfg={"mode": "lora:2", "folds": [0]}, leaderboard=False, max_steps=4)
    assert not part.finished and (tmp_path / "part" / "fold0" / "checkpoint.pt").is_file()
    again = _run(root, tmp_path / "part", cfg={"mode": "lora:2", "folds": [0]}, leaderboard=False)
    assert again.finished
    a = torch.load(tmp_path / "whole" / "fold0" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "part" / "fold0" / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert again.folds[0]["finetuned"] == whole.folds[0]["finetuned"]
    with pytest.raises(hestdata.InputError, match="another run"):
        _run(root, tmp_path / "part", cfg={"mode": "lora:4", "folds": [0], "epochs": 4}, leaderboard=False,
             max_steps=1)


def test_cli_stops_with_a_checkpoint_and_names_bad_modes(root, tmp_path):
    from typer.testing import CliRunner

    from hestdata.cli import app

    yaml = tmp_path / "task.yaml"
    yaml.write_text("name: tint\ntype: patch_classification\nsamples: \"technology == 'images'\"\ngroup_by: patient\n"
                    "patch: 32px\nlabel: label\noptions: {n_folds: 2}\n")
    args = ["bench", "finetune", "--root", str(root), "--task", str(yaml), "--out", str(tmp_path / "o"),
            "--encoder", "random-vit-s16", "--device", "cpu", "--batch-size", "4", "--fold", "0"]
    out = CliRunner().invoke(app, [*args, "--mode", "lora", "--max-steps", "1"])
    assert out.exit_code == 1 and out.output.startswith("error:") and "lora:R" in out.output, out.output
    out = CliRunner().invoke(app, [*args, "--mode", "head", "--max-steps", "1"])
    assert out.exit_code == 0 and "stopped after 1 steps" in out.output, out.output
    assert (tmp_path / "o" / "fold0" / "checkpoint.pt").is_file()


def test_expression_task_trains_a_regression_head_on_real_sections(her2st_root, tmp_path):
    """On the her2st sections (one fold: a section held out, one validating): the head regresses the training
    split's most variable genes, standardised, and both models are scored by mean Pearson r."""
    from hestdata.bench.finetune import finetune

    t = Task(name="her2st_expr", type="expression", samples="cohort = 'her2st'", group_by="id", patch="224px_0.5um",
             options={})
    res = finetune(her2st_root, t, tmp_path / "run", config={"mode": "head", "epochs": 1, "batch_size": 16,
                                                              "n_genes": 8, "folds": [0], "augment": False},
                   encoder=from_module(_tiny(), "tiny", input_size=32), device="cpu", leaderboard=False)
    (fold,) = res.folds
    assert res.finished and fold["n_train"] == 1 and fold["n_val"] == 1
    for which in ("finetuned", "frozen"):
        assert -1 <= fold[which]["pearson_mean"] <= 1
    assert res.pooled["finetuned"]["fold_mean"] == pytest.approx(fold["finetuned"]["pearson_mean"])
    assert "balanced_accuracy" not in res.gain


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_lora_on_the_gpu_with_mixed_precision(root, tmp_path, precision):
    """On CUDA: batches decoded by nvJPEG, autocast at bf16 or fp16 with loss scaling; the planted class is learnt
    and only the adapters and the head change."""
    res = _run(root, tmp_path / precision, cfg={"mode": "lora:2", "epochs": 6, "precision": precision, "folds": [0]},
               leaderboard=False, device="cuda")
    saved = torch.load(tmp_path / precision / "fold0" / "checkpoint.pt", weights_only=False)
    assert (saved["scaler"] is not None) == (precision == "fp16")
    assert res.folds[0]["finetuned"]["balanced_accuracy"] > 0.8, res.folds[0]
