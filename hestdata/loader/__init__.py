"""PyTorch loading of expression–morphology pairs (imports torch: ``pip install 'hestdata[ml]'``)."""

from hestdata.errors import require_extra

require_extra("torch", "ml", "the loader (hestdata.loader)")

from hestdata.loader.augment import BatchAugment  # noqa: E402  (after the extra check)
from hestdata.loader.dataset import PatchDataset  # noqa: E402
from hestdata.loader.loader import HestLoader, make_loader  # noqa: E402
from hestdata.loader.slides import SlideDataset, SlideLoader  # noqa: E402

__all__ = ["BatchAugment", "HestLoader", "PatchDataset", "SlideDataset", "SlideLoader", "make_loader"]
