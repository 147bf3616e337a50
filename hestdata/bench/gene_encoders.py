"""Gene-expression encoders: raw counts (B, G) of a gene panel in, (B, D) float out — the expression side of
cross-modal pretraining, registered, fingerprinted and plugged in like image encoders (:mod:`.encoders`).

A :class:`GeneEncoder` holds its panel (the genes of its input columns, in order), how counts are normalised
before the module sees them (``log1p`` of raw counts, HESCAPE's and HEST's, or ``cp10k_log1p``: per 10,000 of
the spot's total over the panel), the torch module, and whether that module is trained. Some encoders are
*fitted* on the training fold before training (PCA; the rank tokeniser's gene means): :meth:`GeneEncoder.fit`
sees training rows only.

Built in: ``identity`` (the normalised panel itself), ``pca`` (PCA fitted on the training fold, frozen),
``mlp`` (a trainable two-layer MLP) and ``scgpt`` / ``nicheformer``, the checkpoint route for published
single-cell models (:mod:`.gene_transformer`: gene tokens from a vocabulary mapped by our unified symbols or
Ensembl ids, missing genes reported). Third-party packages register factories under the entry-point group
``hestdata.gene_encoders`` (``name = "pkg.module:factory"``, the factory called with the panel as
``factory(genes)`` returns a :class:`GeneEncoder`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.bench.encoders import require_ml
from hestdata.errors import InputError

require_ml()

import torch  # noqa: E402  (after the one-line missing-extra check)

ENTRY_POINT_GROUP = "hestdata.gene_encoders"
NORMALIZATIONS = ("log1p", "cp10k_log1p")


@dataclass
class GeneEncoder:
    """An expression encoder over a fixed gene panel.

    ``module`` maps normalised expression (B, G) float32 to (B, ``out_dim``); ``trainable`` says whether the
    pretraining optimiser updates it (a projection head on top is always trained); ``fitter`` (if set) is
    called once with the normalised training rows before training (e.g. to fit PCA)."""

    name: str
    genes: list[str]
    module: Any
    out_dim: int
    normalize: str = "log1p"
    trainable: bool = False
    fitter: Callable[[np.ndarray], None] | None = None
    weights_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    fitted_sha256: str | None = None

    @property
    def fingerprint(self) -> str:
        """sha256 of what changes the encoder's output: name, panel, normalisation, weights (a checkpoint's or the
        seeded initial state), configuration, and — once fitted — what the fit learned."""
        doc = {"name": self.name, "genes": hashlib.sha256("\n".join(self.genes).encode()).hexdigest(),
               "normalize": self.normalize, "weights": self.weights_sha256, "extra": self.extra,
               "fitted": self.fitted_sha256, "trainable": self.trainable}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def preprocess(self, counts: Any) -> Any:
        """Raw counts (B, G) tensor -> the module's input, normalised as ``normalize`` says."""
        import torch

        x = counts.float().clamp_min(0)
        if self.normalize == "cp10k_log1p":
            x = x * (1e4 / x.sum(dim=1, keepdim=True).clamp_min(1.0))
        return torch.log1p(x)

    def fit(self, counts_train: np.ndarray) -> None:
        """Fit what the encoder learns from data on the training rows (raw counts); a no-op for most encoders."""
        if self.fitter is None:
            return
        import torch

        x = self.preprocess(torch.as_tensor(np.asarray(counts_train, dtype=np.float32))).numpy()
        self.fitter(x)
        h = hashlib.sha256()
        for k, v in sorted(self.module.state_dict().items()):
            h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
        self.fitted_sha256 = h.hexdigest()

    def __call__(self, counts: Any) -> Any:
        return self.module(self.preprocess(counts))


def _check(genes: Sequence[str], normalize: str) -> list[str]:
    out = [str(g) for g in genes]
    if not out:
        raise InputError(None, "a gene encoder needs a non-empty gene panel")
    if len(set(out)) != len(out):
        raise InputError(None, "the gene panel has duplicates")
    if normalize not in NORMALIZATIONS:
        raise InputError(None, f"unknown normalisation {normalize!r}; one of {NORMALIZATIONS}")
    return out


def identity(genes: Sequence[str], *, normalize: str = "log1p") -> GeneEncoder:
    """Weight-free baseline: the normalised panel itself (a trained projection follows in pretraining)."""
    import torch.nn as nn

    g = _check(genes, normalize)
    return GeneEncoder("identity", g, nn.Identity(), len(g), normalize, extra={"kind": "identity"})


class _Linear(torch.nn.Module):
    """A frozen affine map ``(x - mean) @ components.T`` (PCA), held as buffers so it saves with the model."""

    def __init__(self, d_in: int, d_out: int) -> None:
        import torch

        super().__init__()
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("components", torch.zeros(d_out, d_in))

    def forward(self, x: Any) -> Any:
        return (x - self.mean) @ self.components.T


def pca(genes: Sequence[str], *, n_components: int = 256, normalize: str = "log1p", seed: int = 0) -> GeneEncoder:
    """Weight-free baseline: PCA of the normalised panel, fitted on the training fold only (never on held-out
    rows); ``n_components`` is capped at min(genes, training rows) when fitted (the unused tail stays zero)."""
    import torch
    from sklearn.decomposition import PCA

    g = _check(genes, normalize)
    k = int(min(n_components, len(g)))
    mod = _Linear(len(g), k)

    def fitter(x: np.ndarray) -> None:
        m = min(k, x.shape[0], x.shape[1])
        p = PCA(n_components=m, random_state=seed).fit(x)
        comp = np.zeros((k, x.shape[1]), np.float32)
        comp[:m] = p.components_
        mod.mean.copy_(torch.as_tensor(p.mean_, dtype=torch.float32))
        mod.components.copy_(torch.as_tensor(comp))

    return GeneEncoder("pca", g, mod, k, normalize, fitter=fitter,
                       extra={"kind": "pca", "n_components": k, "seed": seed})


def mlp(genes: Sequence[str], *, hidden: int = 512, out_dim: int = 256, dropout: float = 0.1,
        normalize: str = "log1p", seed: int = 0) -> GeneEncoder:
    """A trainable two-layer MLP (Linear–LayerNorm–GELU–Dropout–Linear), initialised with ``seed``."""
    import torch
    import torch.nn as nn

    from hestdata.bench.encoders import _state_hash

    g = _check(genes, normalize)
    torch.manual_seed(seed)
    mod = nn.Sequential(nn.Linear(len(g), hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
                        nn.Linear(hidden, out_dim))
    return GeneEncoder("mlp", g, mod, out_dim, normalize, trainable=True, weights_sha256=_state_hash(mod),
                       extra={"kind": "mlp", "hidden": hidden, "dropout": dropout, "seed": seed})


def from_checkpoint(genes: Sequence[str], *, style: str = "scgpt", checkpoint: str | Path | None = None,
                    vocab: str | Path | None = None, gene_ids: Sequence[str] | None = None,
                    random_init: bool = False, max_tokens: int = 256, normalize: str = "cp10k_log1p",
                    seed: int = 0, trainable: bool = True, **arch: Any) -> GeneEncoder:
    """A published single-cell model's architecture as a gene encoder (:mod:`.gene_transformer`): ``scgpt`` or
    ``nicheformer`` tokens over ``genes`` (``gene_ids``: their Ensembl ids, for Ensembl vocabularies), weights
    from ``checkpoint`` or random with ``random_init``; the genes its vocabulary lacks are in
    ``extra["missing"]``."""
    from hestdata.bench.gene_transformer import build

    panel = _check(genes, normalize)
    mod, sha, extra = build(panel, style=style, checkpoint=checkpoint, vocab=vocab, gene_ids=gene_ids,
                            random_init=random_init, max_tokens=max_tokens, seed=seed, **arch)
    fitter = None
    if style == "nicheformer":  # rank tokens compare each gene with its mean over the training fold
        def fitter(x: np.ndarray) -> None:
            mod.gene_mean.copy_(torch.as_tensor(np.maximum(x.mean(axis=0), 1e-6), dtype=torch.float32))

    return GeneEncoder(style, panel, mod, int(extra["arch"]["d_model"]), normalize, trainable=trainable,
                       fitter=fitter, weights_sha256=sha, extra=extra)


def _transformer(style: str) -> Callable[..., GeneEncoder]:
    def factory(genes: Sequence[str], **kw: Any) -> GeneEncoder:
        return from_checkpoint(genes, style=style, **kw)

    factory.__doc__ = f"The {style} checkpoint route (see hestdata.bench.gene_transformer)."
    return factory


BUILTIN: dict[str, Callable[..., GeneEncoder]] = {"identity": identity, "pca": pca, "mlp": mlp,
                                                  "scgpt": _transformer("scgpt"),
                                                  "nicheformer": _transformer("nicheformer")}


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Gene-encoder names this installation can resolve, with where each comes from."""
    out = {"identity": "built-in, weight-free: log1p / CP10k of the panel",
           "pca": "built-in, weight-free: PCA fitted on the training fold only",
           "mlp": "built-in, trainable two-layer MLP",
           "scgpt": "checkpoint route: scGPT layout (vocab.json, args.json, best_model.pt) or --random-init",
           "nicheformer": "checkpoint route: rank tokens over an Ensembl vocabulary; weights via --random-init "
                          "or a checkpoint saved by hestdata"}
    out.update({k: f"entry point {ep.value}" for k, ep in _entry_points().items()})
    return out


def load_gene_encoder(spec: str | GeneEncoder | Any, genes: Sequence[str], **options: Any) -> GeneEncoder:
    """Resolve a gene encoder for ``genes``: a :class:`GeneEncoder`, a torch module mapping (B, G) log1p
    expression to (B, D) (trained), a built-in or entry-point name; ``options`` go to the factory
    (e.g. ``normalize``, ``n_components``, ``checkpoint``, ``vocab``, ``random_init``)."""
    if isinstance(spec, GeneEncoder):
        return spec
    if not isinstance(spec, str):
        import torch

        from hestdata.bench.encoders import _state_hash

        if isinstance(spec, torch.nn.Module):
            g = _check(genes, options.get("normalize", "log1p"))
            with torch.no_grad():
                d = int(spec(torch.zeros(2, len(g))).shape[1])
            return GeneEncoder(type(spec).__name__, g, spec, d, options.get("normalize", "log1p"), True,
                               weights_sha256=_state_hash(spec))
        raise TypeError(f"cannot make a gene encoder from {type(spec).__name__}")
    key = spec.lower()
    if key in BUILTIN:
        try:
            return BUILTIN[key](genes, **options)
        except TypeError as exc:
            raise InputError(None, f"gene encoder {spec!r}: {exc}") from None
    eps = _entry_points()
    if spec in eps:
        enc = eps[spec].load()(list(genes), **options)
        if not isinstance(enc, GeneEncoder):
            raise TypeError(f"entry point {spec!r} returned {type(enc).__name__}, not a GeneEncoder")
        return enc
    raise InputError(None, f"unknown gene encoder {spec!r}; available: {', '.join(sorted(available()))}")

