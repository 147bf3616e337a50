"""Attribution maps: *where* an encoder plus a fitted head looks in a patch.

The explained quantity is a scalar per patch, ``f(x) = head(encoder(x))``: one gene of a fitted expression ridge
(``w·z + b`` for that gene) or one class of a linear probe. Maps are per pixel (summed over colour channels):

* ``input_x_gradient`` — ``x ⊙ ∂f/∂x`` (Shrikumar et al., 2017), one backward pass;
* ``integrated_gradients`` — ``(x − x₀) ⊙ mean_α ∂f/∂x(x₀ + α(x − x₀))`` over ``steps`` points of the straight path
  from a baseline ``x₀`` (black by default; Sundararajan et al., 2017); completeness — the map sums to
  ``f(x) − f(x₀)`` up to the Riemann error — is checked and reported;
* ``bcos`` — for B-cos networks (Böhle et al.) the model's own contribution map ``W(x)ᵀ ⊙ x``: input × gradient
  computed in the network's *explanation mode* (dynamic weights detached), used when the encoder's module has
  ``explanation_mode()``.

Gradients are taken with respect to the uint8 patch as floats in [0, 255] through the encoder's own
preprocessing, so maps are in the pixel frame of the stored patch. :func:`overlay` renders a map on its patch,
:func:`mosaic` lays patches and maps out by position as a slide-level picture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("input_x_gradient", "integrated_gradients", "bcos")


@dataclass
class LinearHead:
    """``f(z) = z · weight + bias`` — one output of a fitted ridge (gene) or linear probe (class)."""

    weight: np.ndarray  # (D,)
    bias: float = 0.0
    name: str = "output"

    @classmethod
    def from_sklearn(cls, model: Any, output: int = 0, name: str | None = None) -> LinearHead:
        """From a fitted scikit-learn linear model (``Ridge``, ``LogisticRegression``, …): row ``output``."""
        coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
        icpt = np.atleast_1d(np.asarray(getattr(model, "intercept_", 0.0), dtype=np.float64))
        return cls(coef[output], float(icpt[output] if len(icpt) > output else icpt[0]), name or f"output {output}")


def _scalar_fn(encoder: Any, head: LinearHead) -> Callable[[Any], Any]:
    import torch

    w = torch.tensor(head.weight, dtype=torch.float32)

    def f(x: Any) -> Any:  # x: (B, 3, H, W) float in [0, 255]
        z = encoder.forward(encoder.preprocess(x.clone()))  # preprocess may work in place
        return z.float() @ w.to(z.device) + head.bias

    return f


def _gradient(f: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
    import torch

    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = f(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def attribution(encoder: Any, head: LinearHead, patches: np.ndarray, *, method: str = "integrated_gradients",
                steps: int = 32, baseline: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """(B, H, W) float32 maps for uint8 patches (B, H, W, 3), and diagnostics (``f`` per patch; for integrated
    gradients the completeness gap ``|Σ map − (f(x) − f(x₀))|`` relative to ``|f(x) − f(x₀)|``)."""
    import torch

    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {METHODS}")
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float()
    f = _scalar_fn(encoder, head)
    diag: dict[str, Any] = {}
    if method in ("input_x_gradient", "bcos"):
        mode = contextlib.nullcontext()
        if method == "bcos":
            module = getattr(encoder, "module", None)
            if module is None or not hasattr(module, "explanation_mode"):
                raise ValueError(f"encoder {getattr(encoder, 'name', encoder)!r} is not a B-cos network "
                                 "(its module has no explanation_mode())")
            mode = module.explanation_mode()
        with mode:
            out, grad = _gradient(f, x)
        maps = (x * grad).sum(1)
        diag["f"] = out.numpy()
    else:
        x0 = torch.zeros_like(x) if baseline is None else torch.from_numpy(
            np.broadcast_to(baseline, patches.shape).copy()).permute(0, 3, 1, 2).float()
        total = torch.zeros_like(x)
        for a in (np.arange(steps) + 0.5) / steps:  # midpoint rule
            _, g = _gradient(f, x0 + float(a) * (x - x0))
            total += g
        maps = ((x - x0) * total / steps).sum(1)
        with torch.no_grad():
            fx, f0 = f(x), f(x0)
        diff = (fx - f0).numpy()
        gap = np.abs(maps.sum((1, 2)).numpy() - diff) / np.maximum(np.abs(diff), 1e-12)
        diag.update({"f": fx.numpy(), "f_baseline": f0.numpy(), "completeness_gap": gap})
    return maps.detach().numpy().astype(np.float32), diag


def region_auc(maps: np.ndarray, region: np.ndarray) -> float:
    """AUROC of |map| separating the pixels of ``region`` (bool, same shape) from the others: how well a map
    points at a region (1 = every region pixel outranks every other)."""
    from scipy.stats import rankdata

    s = np.abs(np.asarray(maps, np.float64)).ravel()
    y = np.asarray(region, bool).ravel()
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("the region must contain some pixels and leave some out")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def fit_head(root: str | Path, encoder: Any, sample_ids: list[str], patch: str, *, gene: str | None = None,
             label: str | None = None, exclude: str | None = None, alpha: float = 1.0) -> LinearHead:
    """A head fitted on the embeddings of ``sample_ids`` (``exclude`` left out when others remain, so the explained
    slide is held out): a ridge to log1p(counts) of ``gene``, or a logistic probe for the first class of the
    obs column ``label`` vs the rest."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression, Ridge

    from hestdata.bench.embed import embed_samples
    from hestdata.bench.runner import _patch_rows, _table
    from hestdata.store.root import Root

    if (gene is None) == (label is None):
        raise ValueError("explain needs exactly one of gene= or label=")
    train = [s for s in sample_ids if s != exclude] or list(sample_ids)
    r = Root.open(root)
    embs = embed_samples(r, encoder, train, patch=patch)
    xs, ys = [], []
    for s in train:
        X, var, obs = _table(r, s, [label] if label else [])
        rows = _patch_rows(r, s, patch)
        if gene is not None:
            if gene not in var:
                raise ValueError(f"{s}: gene {gene!r} not in the expression table")
            col = (X.tocsc() if sp.issparse(X) else np.asarray(X))[:, var.index(gene)]
            ys.append(np.log1p(np.asarray(col.toarray() if sp.issparse(col) else col, np.float64).ravel()[rows]))
        else:
            ys.append(np.asarray(obs[label].astype(str))[rows])
        xs.append(embs[s])
    x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys)
    if gene is not None:
        return LinearHead.from_sklearn(Ridge(alpha=alpha).fit(x, y), 0, gene)
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise ValueError(f"label {label!r} has a single class in the training slides")
    target = classes[-1]
    probe = LogisticRegression(max_iter=2000).fit(x, y == target)
    return LinearHead.from_sklearn(probe, 0, f"{label}={target}")


def explain_sample(root: str | Path, encoder: Any, sample_id: str, patch: str, out: str | Path, *,
                   head: LinearHead, method: str = "integrated_gradients", n: int = 16, steps: int = 32
                   ) -> list[Path]:
    """Maps for the ``n`` patches of ``sample_id`` with the highest head output (all patches if ``n`` ≤ 0):
    one overlay PNG per patch, a side-by-side sheet and a slide mosaic at the patches' positions."""
    from hestdata.bench.embed import embed_samples
    from hestdata.store import layout as L
    from hestdata.store.root import Root

    r = Root.open(root)
    g = r.sample(sample_id).patch_group(patch)
    emb = embed_samples(r, encoder, [sample_id], patch=patch)[sample_id]
    score = emb.astype(np.float64) @ head.weight + head.bias
    pick = np.argsort(-score)[: n] if n > 0 else np.arange(len(score))
    pick = np.sort(pick)
    from hestdata.store.sample import read_rows

    imgs = read_rows(g[L.PATCH_IMAGES], pick)
    maps, _ = attribution(encoder, head, imgs, method=method, steps=steps)
    from hestdata.plot.maps import mosaic_figure, patch_figure

    folder = Path(out) / sample_id
    what = f"{encoder.name} + {head.name}"
    written = [patch_figure(im, m, folder / f"patch{int(i):05d}.png", f"{sample_id} patch {int(i)}: {what} = "
                            f"{score[i]:.3g}", method)
               for i, im, m in zip(pick, imgs, maps, strict=True)]
    if g.attrs.get("pixel_size_um") is None:  # an image collection: no slide to place the patches on
        return written
    centres = g[L.PATCH_CENTERS][:][pick]
    written.append(mosaic_figure(imgs, maps, centres, float(g.attrs["pixel_size_um"]), folder / "mosaic.png",
                                 f"{sample_id}: {method} of {what} ({len(pick)} patches of {patch})", method))
    return written
