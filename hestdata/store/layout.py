"""Names and paths of the on-disk layout (the only place that spells them; see docs/store.md)."""

from __future__ import annotations

from pathlib import Path

from hestdata.ids import SAMPLE_ID_PATTERN, STORE_FORMAT_VERSION, check_sample_id  # noqa: F401  (re-exported)

# store format 2 (docs/store.md): a root pointer, a versioned catalog, one manifest per sample
FORMAT_VERSION = STORE_FORMAT_VERSION  # what this hestdata writes
READABLE_FORMATS = (1, 2)  # what it reads
ROOT_POINTER = "hestdata.json"  # the root's current catalog version, format version and own files; written last
PUSH_MARKER = "hestdata-push.json"  # present on a remote while a push runs (removed after the pointer)
CATALOG_DIR = "catalog"  # immutable catalog versions: base-<v>.parquet, tail-<v>.parquet, v<v>.json
SAMPLE_MANIFEST = "manifest.json"  # inside samples/<id>.zarr: every file of the sample with size and sha256
PYRAMID_SHARD_CHUNKS = 8  # image levels are sharded: 8 x 8 inner chunks of 512 px per shard file

# store format 1 (read only; `hestdata upgrade` rewrites such a root)
CATALOG = "catalog.parquet"
MANIFEST = "manifest.json"
SAMPLES = "samples"
COHORTS = "cohorts"
LOCK = ".hestdata.lock"
SAMPLE_SUFFIX = ".zarr"
SAMPLE_RELPATH_PREFIX = f"{SAMPLES}/"  # a catalog row's path is this + id + SAMPLE_SUFFIX

IMAGE_HE = "he"
SHAPES_SPOTS = "spots"
SHAPES_TISSUE = "tissue"
TABLE = "expression"
ITEMS_TABLE = "items"  # an image collection's items (format 3): one row per tile or cell crop, labels in obs
PROFILE_TABLE = "slide_profile"  # one row per slide: a profile file, or the pseudo-bulk
SLIDE_TABLES = "hestdata/tables"  # slide-level tables (annotating no element): where spatial queries ignore them
PATCH_GROUP = "hestdata/patches"
PATCH_IMAGES = "images"
PATCH_OBS_INDEX = "obs_index"
PATCH_CENTERS = "centers_um"
# var columns as scanpy writes them (``sc.read_10x_h5``); stores before 0.2.1 hold the singular names
SCANPY_VAR_NAMES = {"gene_id": "gene_ids", "feature_type": "feature_types"}
REGION_KEY = "region"
INSTANCE_KEY = "spot_id"
META_KEY = "hestdata"

# derived, re-creatable artefacts kept in a root but outside its manifest (never pushed or downloaded)
DERIVED = ("embeddings", "leaderboard.parquet", "leaderboard_genes.parquet", "leaderboard.html", "heatmaps", "figures")

SPATIALDATA_VERSION = "0.2"
ELEMENT_VERSION = "0.3"
TABLE_VERSION = "0.2"
COORDINATE_SYSTEM = "global"
SPACE_UNIT = "micrometer"
DEFAULT_SHARD_PATCHES = 1000
IMAGE_CHUNK_PX = 512


# the store layout of each sample variant: the table's region (shapes it annotates) and the main image
VARIANT_REGION = {"spots": SHAPES_SPOTS, "cells": "cells", "channels": None, "slide": None, "images": None}
VARIANT_IMAGE = {"spots": IMAGE_HE, "cells": "if", "channels": "if", "slide": IMAGE_HE, "images": IMAGE_HE}
_LEGACY_VARIANT = {"xenium": "cells", "multiplex": "channels", "imc": "channels", "wsi": "slide"}


def variant_of(metadata: dict | object) -> str:
    """A stored sample's variant: recorded in its metadata, or (samples written before 0.2) from its technology."""
    get = metadata.get if isinstance(metadata, dict) else lambda k: getattr(metadata, k, None)
    return get("variant") or _LEGACY_VARIANT.get(str(get("technology")), "spots")


def sample_path(root: str | Path, sample_id: str) -> Path:
    """``<root>/samples/<id>.zarr``."""
    return Path(root) / SAMPLES / f"{sample_id}{SAMPLE_SUFFIX}"


def sample_relpath(sample_id: str) -> str:
    """Manifest/catalog path of a sample, relative to the root, with forward slashes."""
    return f"{SAMPLES}/{sample_id}{SAMPLE_SUFFIX}"


RETIRED_PREFIX = ".old-"  # samples/.old-<id>-<manifest sha256[:16]>.zarr: a version an overwrite replaced
KEEP_RETIRED_S = 86_400.0  # kept this long for readers that opened it ($HESTDATA_KEEP_OLD_S; 0: not kept)


def retired_name(sample_id: str, manifest_sha256: str) -> str:
    """Folder name (under ``samples/``) of a replaced version of ``sample_id``, by its manifest's digest — the
    digest its catalog row holds, so a reader pinned to that row finds it."""
    return f"{RETIRED_PREFIX}{sample_id}-{manifest_sha256[:16]}{SAMPLE_SUFFIX}"


def keep_retired_s() -> float:
    import os

    try:
        return max(0.0, float(os.environ.get("HESTDATA_KEEP_OLD_S", KEEP_RETIRED_S)))
    except ValueError:
        return KEEP_RETIRED_S


def is_sample_dir(p: Path) -> bool:
    """A committed sample (temporary and trash folders start with a dot)."""
    return p.is_dir() and p.name.endswith(SAMPLE_SUFFIX) and not p.name.startswith(".")


def local_format(root: Path) -> int | None:
    """The store format of a local root folder: 2, 1, or None (empty or not a root)."""
    if (root / ROOT_POINTER).is_file():
        return 2
    if (root / CATALOG).is_file() or (root / MANIFEST).is_file():
        return 1
    return None
