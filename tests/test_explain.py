"""Attribution maps (issue 17): a planted signal is found by the maps, integrated gradients are complete, and
the CLI renders overlays and a mosaic from a real store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hestdata


def _pixel_encoder() -> object:
    """Per-pixel colour features (1x1 conv + ReLU) averaged over the patch: differentiable, position-agnostic."""
    from hestdata.bench.encoders import from_module

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    return from_module(net, "pixel-mlp", input_size=None, mean=None, std=None)


def _patches(n: int, rng: np.random.Generator, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey patches (125 ± 8) with an 8x8 square at a random place whose red channel carries ``signal``."""
    x = np.clip(rng.normal(125, 8, size=(n, 32, 32, 3)), 0, 255)
    region = np.zeros((n, 32, 32), bool)
    for i in range(n):
        r, c = rng.integers(0, 24, size=2)
        x[i, r:r + 8, c:c + 8, 0] = signal[i]
        region[i, r:r + 8, c:c + 8] = True
    return x.astype(np.uint8), region


def test_maps_find_a_planted_signal_and_integrated_gradients_are_complete():
    from sklearn.linear_model import Ridge

    from hestdata.bench.explain import LinearHead, attribution, region_auc

    enc = _pixel_encoder()
    rng = np.random.default_rng(0)
    s_train = rng.uniform(0, 255, 300)
    x, _ = _patches(300, rng, s_train)
    z = enc(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    head = LinearHead.from_sklearn(Ridge(alpha=1e-3).fit(z, s_train), 0, "red")
    assert np.corrcoef(z @ head.weight + head.bias, s_train)[0, 1] > 0.95  # the head reads the signal
    s_test = np.concatenate([rng.uniform(0, 40, 8), rng.uniform(215, 255, 8)])
    xt, region = _patches(16, rng, s_test)
    grey = np.full((32, 32, 3), 125, np.uint8)  # the no-signal baseline
    ig, diag = attribution(enc, head, xt, method="integrated_gradients", steps=48, baseline=grey)
    assert ig.shape == (16, 32, 32)
    aucs = [region_auc(ig[i], region[i]) for i in range(16)]
    assert min(aucs) > 0.9, aucs
    assert np.median(diag["completeness_gap"]) < 0.02, diag["completeness_gap"]
    ixg, _ = attribution(enc, head, xt, method="input_x_gradient")
    assert np.mean([region_auc(ixg[i], region[i]) for i in range(16)]) > 0.5
    # a shuffled region scores at chance: the AUC is not high by construction
    assert abs(np.mean([region_auc(ig[i], np.roll(region[i], 16, axis=(0, 1))) for i in range(16)]) - 0.5) < 0.35
    with pytest.raises(ValueError, match="B-cos"):
        attribution(enc, head, xt, method="bcos")
    with pytest.raises(ValueError, match="method"):
        attribution(enc, head, xt, method="saliency")


def test_bcos_networks_explain_with_their_own_contributions():
    """A network with ``explanation_mode`` (dynamic weights detached, as B-cos networks do) gets W(x)ᵀ ⊙ x: for a
    dynamic-linear model f(x) = W(x)·x the map sums to f(x) exactly."""
    import contextlib

    from hestdata.bench.encoders import from_module
    from hestdata.bench.explain import LinearHead, attribution

    class DynLinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 4) * 0.01)
            self.detach = False

        @contextlib.contextmanager
        def explanation_mode(self):
            self.detach = True
            try:
                yield
            finally:
                self.detach = False

        def forward(self, x):  # (B, 3, H, W) -> (B, 4): weights scaled by the input's own mean intensity
            scale = x.mean(dim=(1, 2, 3), keepdim=True)
            scale = scale.detach() if self.detach else scale
            return torch.einsum("bchw,cd->bd", x * scale, self.w)

    enc = from_module(DynLinear(), "dyn", input_size=None, mean=None, std=None)
    head = LinearHead(np.ones(4), 0.0)
    x = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3)).astype(np.uint8)
    maps, diag = attribution(enc, head, x, method="bcos")
    np.testing.assert_allclose(maps.sum((1, 2)), diag["f"], rtol=1e-4)


def test_explain_cli_writes_overlays_and_a_mosaic(her2st_root, tmp_path):
    from typer.testing import CliRunner

    import hestdata.bench.encoders as E
    from hestdata.cli import app

    enc = _pixel_encoder()
    E.BUILTIN["pixel-mlp-test"] = lambda: enc  # a differentiable encoder by name, for the CLI
    try:
        r = CliRunner().invoke(app, ["bench", "explain", "--root", str(her2st_root), "--encoder", "pixel-mlp-test",
                                     "--sample", "her2st_C3", "--gene", "ERBB2", "--out", str(tmp_path / "maps"),
                                     "--n", "4", "--method", "input_x_gradient"])
    finally:
        del E.BUILTIN["pixel-mlp-test"]
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "maps" / "her2st_C3").glob("patch*.png"))
    assert len(files) == 4 and (tmp_path / "maps" / "her2st_C3" / "mosaic.png").is_file()
    from PIL import Image

    sheet = np.asarray(Image.open(files[0]).convert("RGB"))
    assert sheet.shape[1] > sheet.shape[0] > 300  # the patch and its map side by side, with a colour bar
    r, b = sheet[..., 0].astype(int), sheet[..., 2].astype(int)
    red, blue = r > b + 80, b > r + 80
    assert red.any() and blue.any()  # a diverging map: both signs drawn (at least in its colour bar)
    assert hestdata.open_catalog(her2st_root).height == 3
