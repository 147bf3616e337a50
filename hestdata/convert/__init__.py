"""One conversion pipeline for every technology: :func:`convert` curates a :class:`~hestdata.model.Sample` and
writes it into a root, atomically.

Shared stages (``stages.py``): id and metadata checks → pixel size → genes → pyramid → tissue → metadata →
commit → publish. Each sample variant supplies the stages only it has (``spots.py``, ``cells.py``,
``channels.py``, ``slide.py``): patches around spots or cells, pseudo-spot tables, marker statistics, tiles.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hestdata.model import Sample
from hestdata.options import VARIANT_OPTIONS, Options, parse_options


def _converter(variant: str) -> Callable[..., Path]:
    if variant == "spots":
        from hestdata.convert.spots import convert_spots

        return convert_spots
    if variant == "cells":
        from hestdata.convert.cells import convert_cells

        return convert_cells
    if variant == "channels":
        from hestdata.convert.channels import convert_channels

        return convert_channels
    if variant == "slide":
        from hestdata.convert.slide import convert_slide

        return convert_slide
    if variant == "images":
        from hestdata.convert.images import convert_image_set

        return convert_image_set
    raise TypeError(f"no conversion for sample variant {variant!r}")


def convert(sample: Sample, root: str | Path, *, overwrite: bool = False, metadata: dict[str, Any] | None = None,
            options: dict[str, Any] | Options | None = None, publish_root: bool = True,
            input_sha256: str | None = None, progress: bool = True, **option_values: Any) -> Path:
    """Write ``sample`` to ``root/samples/<id>.zarr`` and publish it in the catalog; return the sample path.

    Works for every sample variant with the same id, metadata and overwrite rules. Conversion options are the
    sample variant's (:mod:`hestdata.options`), given as ``options=`` or keywords, e.g.
    ``patches=["224px_0.5um"]``, ``min_tissue_fraction=0.15`` (spots), ``pseudospot_um=[55, 100]`` (cells);
    an unknown option is an error naming it. ``metadata`` sets descriptive fields (organ, patient, species,
    licence, …). ``publish_root=False`` leaves the catalog and manifest alone (registration publishes all its
    samples at once). ``input_sha256`` records the hash of the inputs (registration's idempotence).
    ``progress=False`` draws no bars (they are drawn only on a terminal anyway, and never under ``HESTDATA_QUIET``).
    """
    from contextlib import nullcontext

    from hestdata.convert.stages import check_request
    from hestdata.io.progress import silenced

    variant = getattr(sample, "variant", None)
    if not isinstance(sample, Sample) or variant not in VARIANT_OPTIONS:
        raise TypeError(f"convert() takes a hestdata Sample (spots, cells, channels, slide or images), got "
                        f"{type(sample).__name__}")
    if variant == "images" and sample.slide_inputs:
        from hestdata.errors import InputError

        k, v = next(iter(sample.slide_inputs.items()))
        raise InputError(v, f"--{k} is for spatial samples; an image collection takes its labels from class folders "
                            "or its manifest")
    if variant in ("cells", "channels") and "cells" in sample.slide_inputs:
        from hestdata.errors import InputError

        raise InputError(sample.slide_inputs["cells"], f"a cells segmentation is for samples with an H&E and no cells "
                                                       f"of their own; this is a {variant} sample")
    if variant not in ("spots", "cells") and sample.slide_inputs.get("labels") is not None:
        from hestdata.errors import InputError

        raise InputError(sample.slide_inputs["labels"], f"labels are joined to the spots or cells of a sample; a "
                                                        f"{variant} sample has neither")
    model = VARIANT_OPTIONS[variant]
    if isinstance(options, Options):  # a source's options: take the conversion part (the reader used the rest)
        raw = {k: getattr(options, k) for k in model.model_fields if hasattr(options, k)}
    else:
        raw = dict(options or {})
    raw.update(option_values)
    opts = parse_options(model, raw, where=sample.where, what=f"{variant} samples")
    fresh = not Path(root).exists()
    try:
        req = check_request(sample, root, metadata=metadata, overwrite=overwrite, input_sha256=input_sha256,
                            publish_root=publish_root)
        with nullcontext() if progress else silenced():
            return _converter(variant)(req, sample, opts, publish_root)
    except BaseException as exc:
        from hestdata.errors import StoreError, is_disk_full

        if fresh:
            _remove_if_empty(Path(root))
        if is_disk_full(exc):
            raise StoreError(f"{root}: no space left on the device while writing sample {sample.sample_id!r} "
                             f"({getattr(exc, 'filename', None) or 'a file of the sample'}); nothing of it was kept "
                             "— free space and convert again") from None
        raise


def convert_source(src: Any, inputs: dict[str, Any], ids: list[str], root: str | Path, *, options: Options,
                   overwrite: bool = False, metadata: dict[str, Any] | None = None, progress: bool = True,
                   on_sample: Callable[[Path], None] | None = None) -> list[Path]:
    """Read and convert samples ``ids`` of a source's ``inputs`` (a :class:`~hestdata.sources.registry.Source`) into
    ``root``; several are published as one catalog version at the end — what was written before a failure too —
    one alone as it is converted. ``on_sample`` sees each sample's path as it is written."""
    many = len(ids) > 1
    paths: list[Path] = []
    try:
        for sid in ids:
            path = convert(src.read(inputs, sample_id=sid, options=options), root, options=options,
                           overwrite=overwrite, metadata=metadata, publish_root=not many, progress=progress)
            paths.append(path)
            if on_sample is not None:
                on_sample(path)
    finally:
        if many and paths:
            from hestdata.store.publish import publish

            publish(root, [p.name[: -len(".zarr")] for p in paths])
    return paths


def _remove_if_empty(root: Path) -> None:
    """Remove a root this conversion created if its first sample was refused: only the lock file, empty
    ``samples/`` and empty bookkeeping folders are there (anything else is left as it is)."""
    import shutil

    from hestdata.store import layout as L
    from hestdata.store.atomic import root_lock

    if not root.is_dir():
        return
    with root_lock(root, L.LOCK):  # no commit can run meanwhile
        if any(p.is_file() and not (p.parent == root and p.name == L.LOCK) for p in root.rglob("*")):
            return  # something was written (another writer, a recoverable leftover): keep it
        shutil.rmtree(root, ignore_errors=True)



class _CallableModule(types.ModuleType):
    """``hestdata.convert`` is both this package and the function: once the package is imported, Python binds
    the package to the name ``hestdata.convert``, so calling it must still convert."""

    def __call__(self, sample: Sample, root: str | Path, **kwargs: Any) -> Path:
        return convert(sample, root, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
