"""The two-tower model of image–gene contrastive pretraining, and its losses.

An image tower (an :class:`~hestdata.bench.encoders.Encoder`, frozen or fine-tuned, then a trainable linear
projection) and a gene tower (a :class:`~hestdata.bench.gene_encoders.GeneEncoder`, then a trainable linear
projection) map a patch and its spot's counts to unit vectors of ``dim`` (128) in one space. The CLIP loss
(symmetric InfoNCE, Radford et al. 2021; HESCAPE's) or the SigLIP loss (pairwise sigmoid, Zhai et al. 2023)
pulls matching pairs together, with a learnable temperature initialised at 0.07 (``logit_scale = log(1/0.07)``,
clamped at 100 as CLIP does) and, for SigLIP, a learnable bias initialised at -10.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES = ("clip", "siglip")


def clip_loss(za: Any, zb: Any, logit_scale: Any) -> Any:
    """Symmetric cross-entropy over the (B, B) similarity matrix of unit vectors; row i's match is column i."""
    logits = logit_scale.exp().clamp(max=100.0) * za @ zb.T
    target = torch.arange(len(za), device=za.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def siglip_loss(za: Any, zb: Any, logit_scale: Any, logit_bias: Any) -> Any:
    """Mean over rows of ``-Σ_j log σ(z_ij (t·a_i·b_j + b))`` with ``z_ij`` = 1 on the diagonal, -1 elsewhere."""
    logits = logit_scale.exp().clamp(max=100.0) * za @ zb.T + logit_bias
    labels = 2 * torch.eye(len(za), device=za.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / len(za)


class TwoTower(nn.Module):
    """Image and gene towers with their projections, temperature and (SigLIP) bias."""

    def __init__(self, image: Any, gene: Any, image_dim: int, *, dim: int = 128, loss: str = "clip",
                 temperature: float = 0.07, finetune: bool = False) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.image, self.gene, self.loss_name, self.finetune = image, gene, loss, bool(finetune)
        self.image_backbone = image.module if isinstance(image.module, nn.Module) else None
        if self.image_backbone is not None:
            self.image_backbone.requires_grad_(self.finetune)
        self.gene_backbone = gene.module
        self.gene_backbone.requires_grad_(bool(gene.trainable))
        self.image_proj = nn.Linear(image_dim, dim)
        self.gene_proj = nn.Linear(gene.out_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0)) if loss == "siglip" else None

    def image_features(self, images: Any) -> Any:
        """The image encoder's output for a uint8 batch: with gradients when fine-tuning, else without."""
        x = self.image.preprocess(images)
        if self.finetune:
            return self.image.forward(x).float()
        with torch.no_grad():
            return self.image.forward(x).float()

    def project_images(self, features: Any) -> Any:
        """Unit vectors in the shared space from the image encoder's output."""
        return F.normalize(self.image_proj(features.float()), dim=1)

    def embed_images(self, images: Any) -> Any:
        return self.project_images(self.image_features(images))

    def embed_genes(self, counts: Any) -> Any:
        return F.normalize(self.gene_proj(self.gene(counts).float()), dim=1)

    def loss(self, za: Any, zb: Any) -> Any:
        if self.loss_name == "siglip":
            return siglip_loss(za, zb, self.logit_scale, self.logit_bias)
        return clip_loss(za, zb, self.logit_scale)

    def forward(self, images: Any, counts: Any) -> tuple[Any, Any]:
        return self.embed_images(images), self.embed_genes(counts)

    def train(self, mode: bool = True) -> TwoTower:
        """A frozen image encoder stays in eval mode (its dropout and norm statistics untouched)."""
        super().train(mode)
        if self.image_backbone is not None and not self.finetune:
            self.image_backbone.eval()
        return self


def image_dim(encoder: Any, size_px: int, device: Any) -> int:
    """The output width of an image encoder, from one blank batch of the patch size."""
    with torch.no_grad():
        x = torch.zeros(2, 3, size_px, size_px, dtype=torch.uint8, device=device)
        return int(encoder.forward(encoder.preprocess(x)).shape[1])
