"""Sample ids and the store format number: what every layer checks, in a module that imports nothing heavy (the
loader's workers import the store layout, and with it this, not the pydantic models of ``hestdata.metadata``)."""

from __future__ import annotations

import re

SAMPLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # no path separators: an id is a folder name
STORE_FORMAT_VERSION = 2  # the root layout this hestdata writes (docs/store.md); it reads 1 and 2
# the newest *sample* format this hestdata reads and writes. A sample is written in the oldest format that holds it:
# 2 for every spot, cell, channel and slide sample (an older hestdata still reads them), 3 for an image collection
# (variant ``images``: a pixel size that may be unknown, ``<px>px`` fit geometries) and for a sample whose labels were
# joined from polygons (``qc.labels.key: polygon``); the root layout of format 2 carries both unchanged
SAMPLE_FORMAT_VERSION = 3
COLLECTION_FORMAT_VERSION = 3  # the format an image collection or polygon labels need (convert.stages.format_version)


# device names Windows reserves whatever the extension ("aux.txt", "CON.zarr"): a root holding one cannot be
# copied there
WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def check_sample_id(sample_id: str) -> str:
    """``sample_id`` if it is a valid id (letters, digits, '.', '_', '-'; at most 128; no path separators; not a
    name Windows reserves)."""
    from hestdata.errors import InputError

    if not isinstance(sample_id, str) or not re.fullmatch(SAMPLE_ID_PATTERN, sample_id):
        raise InputError(None, f"sample id {sample_id!r} is invalid",
                         "use letters, digits, '.', '_' and '-', starting with a letter or digit (max 128)")
    if sample_id.split(".")[0].lower() in WINDOWS_RESERVED:
        raise InputError(None, f"sample id {sample_id!r} is a device name Windows reserves "
                               f"({sample_id.split('.')[0].upper()}): its folder could not be copied there",
                         "choose another id, e.g. with a prefix")
    return sample_id
