"""The source registry: every technology hestdata reads is one :class:`Source`, found by name.

A source says what it needs (required and optional input files), which options it takes (a pydantic model,
``extra="forbid"``), which sample variant and store elements it produces, and how to read its inputs into a
:class:`~hestdata.model.Sample`. The CLI's ``convert <source>`` commands, cohort validation and registration
are built from this table, so adding a technology is one module that calls :func:`register_source` (or, from
another package, an entry point in the ``hestdata.sources`` group naming a :class:`Source`).

Built-in sources are imported on first use, so ``list_sources()`` costs no reader imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from hestdata.errors import InputError
from hestdata.metadata import check_sample_id
from hestdata.model import Sample, Variant
from hestdata.options import Options, conversion_fields, parse_options

ENTRY_POINT_GROUP = "hestdata.sources"
_BUILTIN: dict[str, str] = {
    "visium": "hestdata.sources.visium",
    "visium_hd": "hestdata.sources.visium_hd",
    "st": "hestdata.sources.st_legacy",
    "anndata": "hestdata.sources.anndata_image",
    "hest1k": "hestdata.sources.hest1k",
    "xenium": "hestdata.sources.xenium",
    "multiplex": "hestdata.sources.multiplex",
    "wsi": "hestdata.sources.wsi",
    "images": "hestdata.sources.collection",
}
_REGISTRY: dict[str, Source] = {}
_ENTRY_POINTS_LOADED = False


@dataclass(frozen=True)
class Source:
    """One technology's reader and its contract.

    ``reader(inputs, sample_id, options)`` gets the input paths by name (required ones always present), the
    sample id and the validated options, and returns a sample of ``variant``. ``discover(inputs)`` (optional)
    lists the sample ids a multi-sample input holds (HEST-1k's folder), for "convert all".
    """

    name: str
    summary: str
    variant: Variant
    inputs: Mapping[str, str]
    options: type[Options]
    reader: Callable[[dict[str, Path], str, Any], Sample]
    optional_inputs: Mapping[str, str] = field(default_factory=dict)
    technologies: tuple[str, ...] = ()
    elements: tuple[str, ...] = ()
    discover: Callable[[dict[str, Path]], list[str]] | None = None

    def parse_options(self, raw: Mapping[str, Any] | Options | None, where: str | Path | None = None) -> Options:
        """Validated options; an unknown or ill-typed option is an :class:`InputError` naming it and the source."""
        return parse_options(self.options, dict(raw) if isinstance(raw, Mapping) else raw,
                             where=None if where is None else str(where), what=f"source {self.name!r}")

    def check_inputs(self, inputs: Mapping[str, str | Path | None], where: str | Path | None = None) -> dict[str, Path]:
        """Input paths by name: every required one present, none unknown (errors name the source)."""
        given = {k: Path(v) for k, v in inputs.items() if v is not None}
        missing = sorted(set(self.inputs) - set(given))
        unknown = sorted(set(given) - set(self.inputs) - set(self.optional_inputs) - set(SLIDE_INPUTS))
        if missing:
            raise InputError(where, f"source {self.name!r} needs input(s) {missing}")
        if unknown:
            allowed = sorted({*self.inputs, *self.optional_inputs})
            raise InputError(where, f"unknown input(s) {unknown} for source {self.name!r} (allowed: {allowed})")
        return given

    def read(self, inputs: Mapping[str, str | Path | None], *, sample_id: str,
             options: Mapping[str, Any] | Options | None = None) -> Sample:
        """Check the inputs and options, then run the reader."""
        check_sample_id(sample_id)
        opts = self.parse_options(options)
        given = self.check_inputs(inputs)
        slide = {k: given.pop(k) for k in list(given) if k in SLIDE_INPUTS and k not in self.inputs}
        for k, p in slide.items():
            if not p.is_file():
                raise InputError(p, f"{k} file not found")
        sample = self.reader(given, sample_id, opts)
        if sample.variant != self.variant:
            raise TypeError(f"source {self.name!r} declares variant {self.variant!r} but read a {sample.variant!r}")
        sample.slide_inputs.update(slide)
        sample.source_files.extend(slide.values())
        return sample

    def sample_ids(self, inputs: Mapping[str, str | Path | None], options: Options | None = None) -> list[str]:
        """The ids a multi-sample input holds (``discover``; a source whose grouping depends on its options, such
        as ``images``, gets them too)."""
        import inspect

        if self.discover is None:
            raise TypeError(f"source {self.name!r} reads one sample per input: give its id")
        given = self.check_inputs(inputs)
        if len(inspect.signature(self.discover).parameters) > 1:
            return self.discover(given, self.parse_options(options))  # type: ignore[call-arg]
        return self.discover(given)

    def conversion_options(self, options: Options) -> dict[str, Any]:
        """The options the conversion pipeline takes for this source's variant."""
        return conversion_fields(self.variant, options)


# inputs every source accepts: slide-level files attached to the sample (hestdata.curation.profiles)
SLIDE_INPUTS = {"profile": "slide-level molecular profile (CSV/TSV: gene, value; or one row of genes)",
                "alterations": "slide-level alterations (CSV/TSV: a header and one row, e.g. MSI status)",
                "cells": "cell/nucleus segmentation for cell crops (GeoJSON in full-resolution px, or CSV/TSV with "
                         "x_um, y_um or x_px, y_px)",
                "labels": "per-spot or per-cell labels (CSV/TSV keyed by spot/cell id, or spots' array "
                          "coordinates; or GeoJSON polygons, e.g. QuPath's, in full-resolution px): label columns "
                          "join the table's obs, 'undetermined' stored as missing"}


def register_source(source: Source) -> Source:
    """Add ``source`` to the registry (its name must be new unless it is the same object)."""
    old = _REGISTRY.get(source.name)
    if old is not None and old is not source and old.reader is not source.reader:
        raise ValueError(f"a source named {source.name!r} is already registered")
    _REGISTRY[source.name] = source
    return source


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            src = obj() if callable(obj) and not isinstance(obj, Source) else obj
            if not isinstance(src, Source):
                raise TypeError(f"it gives a {type(src).__name__}, not a hestdata Source")
            register_source(src)
        except Exception as exc:  # one broken plug-in must not take the CLI down: say so, skip it
            import warnings

            warnings.warn(f"source entry point {ep.name!r} ({ep.value}) skipped: {type(exc).__name__}: {exc}",
                          RuntimeWarning, stacklevel=2)


def list_sources() -> list[str]:
    """Names of every source: the built-in ones and those registered by other packages."""
    _load_entry_points()
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_source(name: str) -> Source:
    """The source called ``name`` (``visium-hd`` and ``visium_hd`` are the same); a clear error otherwise."""
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY and key in _BUILTIN:
        import_module(_BUILTIN[key])
    if key not in _REGISTRY:
        _load_entry_points()
    if key not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(key, list_sources(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(list_sources())}"
        raise InputError(None, f"unknown source {name!r}", hint)
    return _REGISTRY[key]


def all_sources() -> list[Source]:
    """Every source, loaded (imports each built-in reader module)."""
    return [get_source(n) for n in list_sources()]
