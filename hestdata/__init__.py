"""hestdata: spatial-omics and pathology samples as clean SpatialData/Zarr stores with aligned
expression–morphology pairs.

The public API is re-exported lazily so that ``import hestdata`` stays fast (no torch, no spatialdata):

- readers: :func:`read_visium`, :func:`read_visium_hd`, :func:`read_st`, :func:`read_anndata`
- sources: :func:`list_sources`, :func:`get_source` (``get_source("visium").read(inputs, sample_id=…)``),
  :func:`register_source` for new technologies
- conversion: :func:`convert` (any sample variant: curate + write atomically, update catalog and manifest),
  :func:`convert_images` (a whole image collection: labelled tiles, single cells, boxed smears)
- access: :class:`Root` / :func:`open_root` (a root, local or remote, pinned to a catalog version),
  :class:`StoredSample`, :func:`open_sample`, :func:`open_catalog`, :func:`validate`, :func:`upgrade`
- loading: :class:`PatchDataset`, :func:`make_loader` (these import torch)
- remote: :func:`download`, :func:`push`
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from hestdata._version import __version__

_EXPORTS = {
    "read_visium": "hestdata.sources.visium",
    "read_visium_hd": "hestdata.sources.visium_hd",
    "read_st": "hestdata.sources.st_legacy",
    "read_anndata": "hestdata.sources.anndata_image",
    "read_hest1k": "hestdata.sources.hest1k",
    "register_cohort": "hestdata.cohort.register",
    "convert": "hestdata.convert",
    "list_sources": "hestdata.sources.registry",
    "get_source": "hestdata.sources.registry",
    "register_source": "hestdata.sources.registry",
    "Source": "hestdata.sources.registry",
    "read_xenium": "hestdata.sources.xenium",
    "read_multiplex": "hestdata.sources.multiplex",
    "read_wsi": "hestdata.sources.wsi",
    "convert_images": "hestdata.convert.images",
    "open_sample": "hestdata.store.sample",
    "read_metadata": "hestdata.store.sample",
    "open_catalog": "hestdata.store.root",
    "validate": "hestdata.store.validate",
    "download": "hestdata.cohort.hest1k",
    "push": "hestdata.remote.push",
    "open_root": "hestdata.store.root",
    "Root": "hestdata.store.root",
    "StoredSample": "hestdata.store.root",
    "upgrade": "hestdata.store.upgrade",
    "run_benchmark": "hestdata.bench.runner",
    "load_encoder": "hestdata.bench.encoders",
    "pretrain": "hestdata.bench.pretrain",
    "finetune": "hestdata.bench.finetune",
    "load_gene_encoder": "hestdata.bench.gene_encoders",
    "PatchDataset": "hestdata.loader.dataset",
    "make_loader": "hestdata.loader.loader",
    "SlideDataset": "hestdata.loader.slides",
    "SlideLoader": "hestdata.loader.slides",
    "BatchAugment": "hestdata.loader.augment",
    "PatchGeometry": "hestdata.units",
    "SampleMetadata": "hestdata.metadata",
    "HestdataError": "hestdata.errors",
    "InputError": "hestdata.errors",
    "SchemaError": "hestdata.errors",
    "StoreError": "hestdata.errors",
    "IntegrityError": "hestdata.errors",
    "HestdataWarning": "hestdata.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hestdata' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
