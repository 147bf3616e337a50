"""The child side of an isolated registration task: convert one sample, send back the outcome.

:func:`hestdata.cohort.register.convert_task` runs :func:`run_job` in a process forked from a *forkserver* that
imported the conversion stack once (this module's imports), so isolation costs milliseconds, not an interpreter
start. A crash, kill or hang here costs that one sample, never the registration or its Dask worker.
"""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path
from typing import Any

# imported once in the forkserver, inherited by every forked conversion
import hestdata.convert  # noqa: F401
import hestdata.convert.spots  # noqa: F401
from hestdata.sources.registry import all_sources, get_source

all_sources()
# ... with what the conversion stages import only when they run (every module of the conversion, curation and
# store packages, and the libraries they use lazily): without these, each forked conversion spent about 0.9 s
# importing them again (a synthetic Visium sample took 2.2 s instead of 1.3 s)
PACKAGES = ("hestdata.convert", "hestdata.curation", "hestdata.store")
LIBRARIES = ("spatialdata", "spatialdata._io", "ome_zarr.writer", "geopandas", "geopandas.io._geoarrow", "shapely",
             "jsonschema", "scipy.ndimage", "scipy.spatial", "skimage.filters.thresholding",  # skimage loads lazily
             "skimage.measure._find_contours", "skimage.exposure.exposure", "simplejpeg", "PIL.Image", "PIL.ImageFile")


def _preload() -> None:
    import pkgutil

    for package in PACKAGES:
        for info in pkgutil.iter_modules(import_module(package).__path__, f"{package}."):
            import_module(info.name)
    for name in LIBRARIES:
        try:
            import_module(name)
        except ModuleNotFoundError:  # a library that moved a private module: its conversion imports what it needs
            continue


_preload()


def read_sample(spec: dict[str, Any], base: str) -> Any:
    """Run the source's reader for one resolved spec (inputs relative to ``base``)."""
    src = get_source(spec["technology"])
    return src.read({k: Path(base) / v for k, v in spec["inputs"].items()}, sample_id=spec["id"],
                    options=spec["options"])


def run_job(job: dict[str, Any], conn: Any) -> None:
    """Convert ``job["spec"]`` (no publication) and send ``{"status", "reason"}`` through ``conn``."""
    spec = job["spec"]
    os.environ.clear()
    os.environ.update(job["environ"])  # the registering process's environment, not the forkserver's
    try:
        from hestdata.convert import convert
        from hestdata.store.failpoints import failpoint

        failpoint("registration-task", spec["id"])
        sample = read_sample(spec, job["base"])
        opts = get_source(spec["technology"]).parse_options(spec["options"])
        convert(sample, job["root"], options=opts, overwrite=True, metadata=dict(spec["metadata"]),
                publish_root=False, input_sha256=job["digest"], progress=False)  # the parent draws one bar
        out = {"status": "converted"}
    except Exception as exc:  # reported for this sample; the parent decides about the others
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out = {"status": "failed", "reason": f"{type(exc).__name__}: {msg}"}
    conn.send(out)
    conn.close()
