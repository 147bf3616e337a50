"""PyTorch loading of expression–morphology pairs (imports torch)."""

from hestdata.loader.augment import BatchAugment
from hestdata.loader.dataset import PatchDataset
from hestdata.loader.loader import HestLoader, make_loader

__all__ = ["BatchAugment", "HestLoader", "PatchDataset", "make_loader"]
