"""Typed conversion options, one model per sample variant (pydantic, ``extra="forbid"``).

A source's options model subclasses its variant's model and adds what its reader needs (``pixel_size_um``,
``bin_size_um``, …), so one dictionary — a cohort's ``options:``, the CLI's flags, keyword arguments of
:func:`hestdata.convert` — is checked in one place, and an unknown key is an error that names it.
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hestdata.errors import InputError
from hestdata.units import DEFAULT_PATCH, DEFAULT_SLIDE_TILE, PatchGeometry

JpegQuality = Field(default=90, ge=1, le=100, description="JPEG quality of H&E patches")


class Options(BaseModel):
    """Base of every options model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    workers: int | None = Field(default=None, ge=1, description="threads for patch rendering (default: all cores)")
    # CLI flag spelling where it is not the field name (``patches`` -> ``--patch``, repeatable)
    flags: ClassVar[dict[str, str]] = {"patches": "patch", "cell_patches": "cell-patch"}
    # options that are another way of setting a field (WSI ``tile_um`` sets ``patches``): a sample giving them
    # overrides that field's cohort default instead of clashing with it
    aliases: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _scalars_to_lists(cls, data: Any) -> Any:
        """``pseudospot_um: 100`` means ``[100]`` (YAML and keyword users write one value for a list)."""
        if isinstance(data, dict):
            for k, v in list(data.items()):
                f = cls.model_fields.get(k)
                if f is not None and typing.get_origin(f.annotation) is list and isinstance(v, str | int | float):
                    data[k] = [v]
        return data

    @classmethod
    def _geometry_name(cls, spec: str) -> str:
        """A geometry's canonical name; µm geometries only (image collections also take ``<px>px``)."""
        return PatchGeometry.parse(spec).name

    @field_validator("patches", check_fields=False)
    @classmethod
    def _geometries(cls, v: list[str]) -> list[str]:
        names = [cls._geometry_name(g) for g in v]
        if len(set(names)) != len(names):
            raise ValueError("the same patch geometry was requested twice")
        return names


class UserPixelSize(BaseModel):
    """The reader option every source accepts: the user's full-resolution pixel size (always wins)."""

    pixel_size_um: float | None = Field(default=None, gt=0, le=1000,
                                        description="full-resolution µm/px (overrides the file and the estimate)")


class SpotOptions(Options):
    """Spot/bin samples: patches centred on each spot."""

    patches: list[str] = Field(default_factory=lambda: [DEFAULT_PATCH.name],
                               description="patch geometries, e.g. 224px_0.5um (empty: no patches)")
    min_tissue_fraction: float = Field(default=0.15, ge=0, le=1,
                                       description="skip (and count) unmarked spots with less Otsu tissue")
    max_upsampling: float = Field(default=1.5, ge=1, description="how much coarser than the target the image may be")
    jpeg_quality: int = JpegQuality
    shard_patches: int | None = Field(default=None, ge=1, description="patches per shard file (default 1000)")
    allow_image_mismatch: bool = Field(default=False, description="convert even when the spots do not agree "
                                                                  "with the image (recorded in the QC)")
    pseudobulk: bool = Field(default=True, description="store the sum of the in-tissue spots' counts as the "
                                                       "slide profile (unless a profile file is given)")
    cell_patches: list[str] = Field(default_factory=list, description="cell-crop geometries for a cells "
                                                                      "segmentation input (default 64px_0.5um)")


class CellOptions(Options):
    """Cell samples (Xenium): cell table, transcripts, pseudo-spot tables, H&E patches when registered."""

    patches: list[str] = Field(default_factory=lambda: [DEFAULT_PATCH.name],
                               description="H&E patch geometries (with a registered H&E)")
    pseudospot_um: list[float] = Field(default_factory=lambda: [55.0], description="pseudo-spot diameters in µm")
    grid: Literal["square", "hex"] = Field(default="square", description="pseudo-spot grid: square or hex")
    min_qv: float = Field(default=20.0, ge=0, description="minimum transcript quality counted in pseudo-spots")
    jpeg_quality: int = JpegQuality
    pseudobulk: bool = Field(default=True, description="store the sum of all cells' counts as the slide profile "
                                                       "(unless a profile file is given)")

    @field_validator("pseudospot_um")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(not d > 0 for d in v):
            raise ValueError("pseudo-spot diameters must be positive µm")
        return v


class ChannelOptions(Options):
    """Multiplex samples: lossless grid patches (none by default)."""

    patches: list[str] = Field(default_factory=list, description="grid patch geometries, e.g. 64px_1um")


class SlideOptions(Options):
    """Whole slides: tissue tiles (STAMP's 224 px over 256 µm by default)."""

    patches: list[str] = Field(default_factory=lambda: [DEFAULT_SLIDE_TILE.name],
                               description="tile geometries, e.g. 224px_1.14286um (STAMP) or 512px_0.5um (TITAN)")
    min_tissue_fraction: float = Field(default=0.5, ge=0, le=1, description="keep tiles with at least this tissue")
    jpeg_quality: int = JpegQuality
    cell_patches: list[str] = Field(default_factory=list, description="cell-crop geometries for a cells "
                                                                      "segmentation input (default 64px_0.5um)")


class ImageSetOptions(Options):
    """Image collections (store format 3): each item fitted to ``<px>px`` (pixel size unknown) or cut at
    ``<px>px_<um>um`` around its centre (a declared pixel size)."""

    patches: list[str] = Field(default_factory=lambda: ["224px"],
                               description="geometries: 224px (the item resized to fit) or 224px_0.5um (needs a "
                                           "declared pixel size)")
    box_context: float = Field(default=0.25, ge=0, le=10, description="cells: crop side = box side x (1 + this)")
    keep_jpeg: bool = Field(default=True, description="store a source JPEG's own bytes when it already has the "
                                                      "patch geometry (no re-encoding)")
    jpeg_quality: int = JpegQuality

    @classmethod
    def _geometry_name(cls, spec: str) -> str:
        from hestdata.units import parse_geometry

        return parse_geometry(spec).name

    @field_validator("patches")
    @classmethod
    def _some_geometry(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("an image collection stores its items as patches: give at least one geometry")
        return v


VARIANT_OPTIONS: dict[str, type[Options]] = {"spots": SpotOptions, "cells": CellOptions,
                                              "channels": ChannelOptions, "slide": SlideOptions,
                                              "images": ImageSetOptions}


def parse_options(model: type[Options], raw: dict[str, Any] | Options | None, *, where: str | None,
                  what: str) -> Options:
    """Validate ``raw`` against ``model``; every problem in one :class:`InputError` naming the key and ``what``
    (e.g. ``"source 'xenium'"``)."""
    if isinstance(raw, model):
        return raw
    if isinstance(raw, Options):
        raw = raw.model_dump(exclude_unset=True)
    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            key = ".".join(str(p) for p in e["loc"]) or "options"
            key = key if e["loc"] else "options"
            if e["type"] == "extra_forbidden":
                allowed = ", ".join(sorted(model.model_fields))
                problems.append(f"unknown option {key!r} for {what} (allowed: {allowed})")
            elif not e["loc"]:
                problems.append(f"options for {what}: {e['msg'].removeprefix('Value error, ')}")
            else:
                problems.append(f"option {key!r} for {what}: {e['msg']}")
        raise InputError(where, "; ".join(problems)) from None


def conversion_fields(variant: str, options: Options) -> dict[str, Any]:
    """The part of a source's options that the variant's conversion takes (reader options left out)."""
    keep = set(VARIANT_OPTIONS[variant].model_fields)
    return {k: getattr(options, k) for k in keep}
