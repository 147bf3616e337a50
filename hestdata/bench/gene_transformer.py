"""The checkpoint route for published single-cell / spatial foundation models as gene encoders.

Two tokenisations of a spot's expression, each a transformer over gene tokens read out at a ``<cls>`` token:

- ``scgpt`` (scGPT, Cui et al. 2024): the spot's nonzero genes, highest first up to ``max_tokens``; each token
  is the gene's vocabulary embedding plus a continuous-value embedding of its expression **bin** (per-spot
  quantile binning of the nonzero log1p values into ``n_bins - 1`` bins, as scGPT's preprocessor does). The module
  names follow scGPT's ``TransformerModel`` (``encoder.embedding``, ``encoder.enc_norm``, ``value_encoder.linear1``
  … , ``transformer_encoder.layers.N``), so a scGPT checkpoint folder (``vocab.json``, ``args.json``,
  ``best_model.pt``) loads by key name; flash-attention checkpoints (``self_attn.Wqkv``) are renamed to torch's
  ``in_proj``; keys of scGPT's decoders are reported as unused, missing ones as an error.
- ``nicheformer`` (Nicheformer / Geneformer rank tokens): genes ordered by expression relative to their mean over
  the **training fold** (fitted before training), top ``max_tokens``, position embeddings for the rank; the
  vocabulary is usually Ensembl ids. Nicheformer's own Lightning checkpoints use other key names and are not
  loaded here; weights saved from this module (e.g. by ``hestdata bench pretrain``) are.

The vocabulary maps our unified gene symbols (or, where the model's vocabulary is Ensembl ids, the store's
``gene_id`` column) to token ids; genes the vocabulary lacks are left out and reported (``extra["n_missing"]``,
``extra["missing"]``). With ``random_init=True`` no weights are read: the vocabulary is the given one, or the panel
itself, and the model is small by default (d_model 128, 2 layers) so that it trains on a CPU; published sizes are
set through ``args.json`` or the keyword arguments.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from hestdata.errors import InputError

SPECIALS = ("<pad>", "<cls>", "<eoc>")
SMALL = {"d_model": 128, "nhead": 4, "d_hid": 256, "nlayers": 2}


class TokenEmbedding(nn.Module):
    """scGPT's ``GeneEncoder``: an embedding of gene token ids, layer-normalised."""

    def __init__(self, ntoken: int, d_model: int, padding_idx: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(ntoken, d_model, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(d_model)

    def forward(self, tokens: Any) -> Any:
        return self.enc_norm(self.embedding(tokens))


class ContinuousValueEncoder(nn.Module):
    """scGPT's value encoder: a scalar (the expression bin) through Linear–ReLU–Linear–LayerNorm."""

    def __init__(self, d_model: int, max_value: float = 512.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(1, d_model)
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.max_value = max_value

    def forward(self, values: Any) -> Any:
        x = torch.clamp(values.unsqueeze(-1), max=self.max_value)
        return self.norm(self.linear2(torch.relu(self.linear1(x))))


def bin_values(x: Any, n_bins: int) -> Any:
    """Per-row quantile bins of the nonzero entries: 1 … n_bins-1 by rank among the row's nonzero values (ties
    share a bin), 0 stays 0 — scGPT's ``binning`` of each cell."""
    nz = x > 0
    n = nz.sum(dim=1, keepdim=True).clamp_min(1)
    ranks = torch.where(nz, x, torch.full_like(x, -1.0)).argsort(dim=1).argsort(dim=1)  # 0 … G-1, zeros first
    first = x.shape[1] - n  # rank of the smallest nonzero value
    frac = (ranks - first + 1).float() / n.float()
    return torch.where(nz, torch.ceil(frac * (n_bins - 1)).clamp(1, n_bins - 1), torch.zeros_like(x))


class GeneTransformer(nn.Module):
    """Gene tokens of each spot -> transformer -> the ``<cls>`` output (B, d_model)."""

    def __init__(self, token_of_column: np.ndarray, ntoken: int, *, style: str, pad_id: int, cls_id: int,
                 d_model: int, nhead: int, d_hid: int, nlayers: int, max_tokens: int, n_bins: int = 51,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.style, self.pad_id, self.cls_id = style, int(pad_id), int(cls_id)
        self.max_tokens, self.n_bins = int(max_tokens), int(n_bins)
        self.encoder = TokenEmbedding(ntoken, d_model, pad_id)
        if style == "scgpt":
            self.value_encoder = ContinuousValueEncoder(d_model)
        else:
            self.rank_embedding = nn.Embedding(max_tokens + 1, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.register_buffer("token_of_column", torch.as_tensor(token_of_column, dtype=torch.long))
        self.register_buffer("gene_mean", torch.ones(len(token_of_column)))

    def tokens(self, x: Any) -> tuple[Any, Any, Any]:
        """(token ids, values, padding mask), each (B, 1 + k): ``<cls>`` first, then the chosen genes."""
        known = self.token_of_column >= 0
        score = x / self.gene_mean.clamp_min(1e-6) if self.style == "nicheformer" else x
        score = torch.where(known & (x > 0), score, torch.full_like(score, -1.0))
        k = int(min(self.max_tokens, x.shape[1]))
        top, cols = score.topk(k, dim=1)
        pad = top < 0
        tok = torch.where(pad, torch.full_like(cols, self.pad_id), self.token_of_column[cols])
        if self.style == "scgpt":
            vals = torch.gather(bin_values(torch.where(known, x, torch.zeros_like(x)), self.n_bins), 1, cols)
        else:
            vals = torch.arange(1, k + 1, device=x.device).expand(len(x), k).float()
        vals = torch.where(pad, torch.zeros_like(vals), vals)
        b = len(x)
        cls = torch.full((b, 1), self.cls_id, dtype=tok.dtype, device=x.device)
        return (torch.cat([cls, tok], 1), torch.cat([torch.zeros(b, 1, device=x.device), vals], 1),
                torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), pad], 1))

    def forward(self, x: Any) -> Any:
        tok, vals, pad = self.tokens(x)
        h = self.encoder(tok)
        if self.style == "scgpt":
            h = h + self.value_encoder(vals)
        else:
            h = h + self.rank_embedding(vals.long())
        return self.transformer_encoder(h, src_key_padding_mask=pad)[:, 0]


def read_vocab(path: str | Path) -> dict[str, int]:
    """A vocabulary file: JSON ``{token: id}`` (scGPT's ``vocab.json``) or one token per line (id = line number)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "vocabulary file not found")
    text = p.read_text()
    if p.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(p, f"not JSON: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, int) for v in doc.values()):
            raise InputError(p, "a JSON vocabulary maps each token to an integer id")
        return {str(k): int(v) for k, v in doc.items()}
    return {t.strip(): i for i, t in enumerate(text.splitlines()) if t.strip()}


def map_vocab(genes: list[str], gene_ids: Sequence[str] | None, vocab: dict[str, int]) -> tuple[np.ndarray, list[str]]:
    """Token id of each panel gene (by symbol, then Ensembl id without version, then case-insensitive symbol;
    -1 if absent) and the genes the vocabulary lacks."""
    upper = {k.upper(): v for k, v in vocab.items()}
    ids = list(gene_ids) if gene_ids is not None else [""] * len(genes)
    out, missing = np.full(len(genes), -1, np.int64), []
    for j, (g, e) in enumerate(zip(genes, ids, strict=True)):
        e = (e or "").split(".")[0]
        t = vocab.get(g, vocab.get(e) if e else None)
        t = upper.get(g.upper()) if t is None else t
        if t is None:
            missing.append(g)
        else:
            out[j] = t
    return out, missing


def _scgpt_keys(sd: dict[str, Any]) -> dict[str, Any]:
    """Flash-attention scGPT checkpoints name the fused projection ``Wqkv``; torch calls it ``in_proj``."""
    return {k.replace("self_attn.Wqkv.weight", "self_attn.in_proj_weight")
            .replace("self_attn.Wqkv.bias", "self_attn.in_proj_bias"): v for k, v in sd.items()}


def _folder_files(checkpoint: Path) -> tuple[Path, Path | None, Path | None]:
    """(weights, vocab, args) of a checkpoint file or a scGPT-style folder."""
    if checkpoint.is_dir():
        weights = next((checkpoint / n for n in ("best_model.pt", "model.pt", "model.safetensors")
                        if (checkpoint / n).is_file()), None)
        if weights is None:
            raise InputError(checkpoint, "no best_model.pt, model.pt or model.safetensors in this folder")
        vocab = checkpoint / "vocab.json"
        args = checkpoint / "args.json"
        return weights, vocab if vocab.is_file() else None, args if args.is_file() else None
    return checkpoint, None, None


def _arch_args(args_path: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    arch = dict(SMALL)
    if args_path is not None:
        a = json.loads(args_path.read_text())
        arch.update({"d_model": a.get("embsize", arch["d_model"]), "nhead": a.get("nheads", arch["nhead"]),
                     "d_hid": a.get("d_hid", arch["d_hid"]), "nlayers": a.get("nlayers", arch["nlayers"])})
        if "n_bins" in a:
            arch["n_bins"] = int(a["n_bins"])
    arch.update({k: v for k, v in overrides.items() if v is not None})
    return arch


def build(panel: list[str], *, style: str, checkpoint: str | Path | None, vocab: str | Path | None,
          gene_ids: Sequence[str] | None, random_init: bool, max_tokens: int, seed: int,
          **arch: Any) -> tuple[GeneTransformer, str, dict[str, Any]]:
    """(module, weights sha256, description) of a scGPT- or Nicheformer-style encoder over ``panel``: weights from
    ``checkpoint`` (a file, or a scGPT folder with vocab.json/args.json) or random with ``random_init``; the
    vocabulary from ``vocab``, the folder, or (random init) the panel itself."""
    from hestdata.bench.encoders import _load_checkpoint, _state_hash
    from hestdata.store.manifest import file_sha256

    if style not in ("scgpt", "nicheformer"):
        raise InputError(None, f"unknown gene-model style {style!r}; one of scgpt, nicheformer")
    if checkpoint is None and not random_init:
        raise InputError(None, f"the {style} gene encoder needs its weights",
                         "pass --gene-checkpoint (a file, or a scGPT folder with vocab.json, args.json, "
                         "best_model.pt), or --gene-random-init for an untrained model")
    weights, vocab_file, args_file = _folder_files(Path(checkpoint)) if checkpoint is not None else (None, None, None)
    vocab_file = Path(vocab) if vocab is not None else vocab_file
    voc = read_vocab(vocab_file) if vocab_file is not None else None
    if voc is None:
        if weights is not None:
            raise InputError(weights, "a gene-model checkpoint needs its vocabulary", "pass --gene-vocab vocab.json")
        voc = {t: i for i, t in enumerate([*SPECIALS, *panel])}
    for sp in SPECIALS[:2]:
        voc.setdefault(sp, max(voc.values()) + 1)
    token_of, missing = map_vocab(panel, gene_ids, voc)
    if not (token_of >= 0).any():
        raise InputError(vocab_file, f"none of the {len(panel)} panel genes is in the model's vocabulary "
                                     f"(e.g. {panel[:3]}): symbols and Ensembl ids were tried")
    a = _arch_args(args_file, arch)
    torch.manual_seed(seed)
    mod = GeneTransformer(token_of, max(voc.values()) + 1, style=style, pad_id=voc["<pad>"], cls_id=voc["<cls>"],
                          max_tokens=max_tokens, **a)
    sha = _state_hash(mod)
    if weights is not None:
        sha = file_sha256(weights)
        a["unused_keys"] = _load_weights(mod, weights, style, a, _load_checkpoint)
    extra = {"kind": style, "arch": dict(a), "max_tokens": max_tokens, "seed": seed, "vocab_size": len(voc),
             "n_missing": len(missing), "missing": missing[:20], "random_init": weights is None}
    return mod, sha, extra


_BUFFERS = ("token_of_column", "gene_mean")


def _load_weights(mod: GeneTransformer, weights: Path, style: str, arch: dict[str, Any], load: Any) -> int:
    """Load a checkpoint into ``mod`` by key name; the number of checkpoint keys it does not use (e.g. scGPT's
    decoders). The panel's token map stays the one built from the vocabulary."""
    sd = _scgpt_keys(load(weights))
    own = mod.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model {tuple(own[k].shape)})" for k, v in sd.items()
             if k in own and k not in _BUFFERS and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise InputError(weights, f"checkpoint does not fit the {style} architecture {arch}: {len(wrong)} tensors "
                                  f"have other shapes, e.g. {wrong[0]}", "check args.json (embsize, nheads, d_hid, "
                                                                         "nlayers)")
    missing, _ = mod.load_state_dict({k: v for k, v in sd.items() if k in own and k not in _BUFFERS}, strict=False)
    missing = [k for k in missing if k not in _BUFFERS]
    if missing:
        raise InputError(weights, f"checkpoint does not fit the {style} architecture {arch}: {len(missing)} "
                                  f"missing keys (e.g. {missing[:3]})", "check args.json")
    return len([k for k in sd if k not in own])
