"""Typed sample metadata and its JSON schema.

``SampleMetadata`` (pydantic, ``extra="forbid"``) is the typed view; ``hestdata/schemas/sample.schema.json`` is
generated from it (``python -m hestdata.metadata``) and shipped, so that a sample can be validated without
hestdata (any JSON-schema validator). A test keeps the two identical.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hestdata.ids import (  # noqa: F401  (re-exported)
    SAMPLE_FORMAT_VERSION,
    SAMPLE_ID_PATTERN,
    STORE_FORMAT_VERSION,
    check_sample_id,
)

# built-in: visium, visium_hd, st, xenium, multiplex, imc, wsi; sources registered by other packages add theirs
Technology = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Variant = Literal["spots", "cells", "channels", "slide", "images"]
Species = Literal["Homo sapiens", "Mus musculus", "other", "unknown"]
Preservation = Literal["FFPE", "fresh frozen", "unknown"]
ImageKind = Literal["fullres", "hires", "lowres"]


MAX_TEXT_CHARS = 4096  # any one metadata string (PATH_MAX): a 100,000-character "cohort" is an input error


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=MAX_TEXT_CHARS)


class PixelSize(_Model):
    """Pixel size of the full-resolution coordinate frame, in µm/px, with where it came from.

    ``embedded`` comes from the file (TIFF tags, OpenSlide mpp, instrument metadata), ``estimated`` from physical
    evidence (the spot or bin grid of known pitch, HEST-1k's ``pixel_size_um_estimated``), ``user`` from the
    command line. ``value`` is the trusted one (see docs/store.md: the user wins, then physical evidence wins
    over image tags that disagree by more than 5 %); a disagreement over 5 % is ``flagged`` and kept on record.
    """

    value: float = Field(gt=0, description="trusted pixel size of the full-resolution frame (µm/px)")
    trusted: Literal["embedded", "estimated", "user"]
    embedded: float | None = Field(default=None, gt=0)
    estimated: float | None = Field(default=None, gt=0)
    estimated_from: str | None = Field(default=None, description="how the estimate was made")
    user: float | None = Field(default=None, gt=0)
    disagreement_pct: float | None = Field(default=None, ge=0)
    flagged: bool = False
    unit_confusion: str | None = Field(default=None, description="e.g. 'x10 (cm vs mm)' when the disagreement is "
                                                                 "a unit factor")


class ImageInfo(_Model):
    """The stored ``images/he`` element and where it came from."""

    source_path: str
    kind: ImageKind
    pixel_size_um: float = Field(gt=0, description="µm/px of the stored level 0")
    width_px: int = Field(gt=0)
    height_px: int = Field(gt=0)
    n_levels: int = Field(ge=1)


class GeneQC(_Model):
    """Outcome of gene-symbol unification."""

    n_features: int = Field(ge=0)
    n_renamed: int = Field(ge=0, description="features whose name changed to an approved symbol")
    n_unmapped: int = Field(ge=0, description="features kept under their original name (not in the table)")
    n_duplicates_resolved: int = Field(ge=0, description="symbols shared by distinct gene ids, suffixed")
    n_with_gene_id: int | None = Field(default=None, ge=0, description="features with an Ensembl gene id")


class PatchQC(_Model):
    """Counts for one patch array: everything skipped is counted, never silent."""

    n_patches: int = Field(ge=0)
    n_skipped_off_image: int = Field(ge=0)
    n_skipped_low_tissue: int = Field(ge=0)
    n_partial_outside_image: int = Field(ge=0, description="kept, zero-filled outside the image")
    n_skipped_background: int = Field(default=0, ge=0, description="tiles rejected as background or blur")
    min_tissue_fraction: float = Field(ge=0, le=1)
    source_pixel_size_um: float | None = Field(
        gt=0, description="µm/px of the pyramid level patches were cut from (None: an image collection whose pixel "
                          "size is unknown, format 3)")
    jpeg_quality: int = Field(ge=1, le=100)


class MarkerInfo(_Model):
    """One multiplex channel: canonical marker, its source channel, and statistics after scaling to [0, 1]."""

    name: str
    marker_id: int = Field(ge=1, le=512)
    nuclear: bool
    channel: str = Field(description="the channel name in the source file")
    channel_index: int = Field(ge=0, description="position in images/if")
    scale: float = Field(gt=0, description="values are divided by this to reach [0, 1] (dtype max, or the max)")
    mean: float
    std: float
    p1: float
    p99: float


class ImageSpotAgreement(_Model):
    """Whether the image is the one the spots were measured on (checked at conversion)."""

    n_in_tissue: int = Field(ge=0, description="spots the source marks as under tissue")
    n_off_image: int = Field(ge=0, description="of those, centres outside the image")
    n_on_otsu_tissue: int = Field(ge=0, description="of those on the image, centres on the Otsu tissue mask")
    image_tissue_fraction: float = Field(ge=0, le=1, description="Otsu tissue fraction of the spots' bounding box")
    chance_limit: float = Field(ge=0, le=1, description="on-tissue fraction random placement would reach (3 sd)")
    mismatch: bool = Field(description="the spots do not agree with the image")
    accepted_anyway: bool = Field(default=False, description="converted despite a mismatch, on request")


class LabelQC(_Model):
    """What joining a per-spot (or per-cell) label table counted (``convert … --labels``; hestdata.curation.labels)."""

    file: str = Field(description="the label table's file name")
    key: Literal["barcode", "array", "polygon"] = Field(
        description="joined by spot id, by array coordinates, or by the polygons containing the centres (format 3)")
    n_rows: int = Field(ge=0)
    n_rows_without_position: int = Field(ge=0, description="rows with no coordinates (dropped)")
    n_rows_unmatched: int = Field(ge=0, description="rows whose key matches no spot (dropped)")
    n_masked: int = Field(ge=0, description="values stored as missing (e.g. undetermined)")
    n_spots_labelled: int = Field(ge=0)
    columns: dict[str, dict[str, int]] = Field(description="obs column -> label -> spots")
    n_overlaps: int | None = Field(default=None, ge=0, description="polygons: centres inside polygons of different "
                                                                   "labels (the smallest one's label kept)")


class CollectionQC(_Model):
    """What reading an image collection counted (variant ``images``, store format 3; hestdata.sources.collection)."""

    kind: Literal["tiles", "cells"] = Field(description="tiles: one item per image; cells: one item per box")
    n_images: int = Field(ge=0, description="source image files the sample's items come from")
    n_items: int = Field(ge=0, description="rows of tables/items (one patch each per array)")
    n_boxes_degenerate: int = Field(default=0, ge=0, description="zero-area boxes skipped")
    n_boxes_filtered: int = Field(default=0, ge=0, description="boxes of classes left out on request")
    n_images_without_boxes: int = Field(default=0, ge=0, description="images whose boxes were all left out or "
                                                                     "that had none (no item)")
    n_items_partial: int = Field(default=0, ge=0, description="items whose crop reaches past the image (zero-filled)")
    box_context: float | None = Field(default=None, ge=0, description="crop side = box side x (1 + context)")
    jpeg_kept: dict[str, int] = Field(default_factory=dict,
                                      description="patch array -> items stored as the source file's own JPEG bytes")
    labels: dict[str, dict[str, int]] = Field(default_factory=dict, description="obs column -> value -> items")
    n_unlabelled: dict[str, int] = Field(default_factory=dict, description="obs column -> items without a value")


class QC(_Model):
    """Quality-control counts and warnings recorded at conversion."""

    n_obs: int = Field(ge=0)
    n_obs_in_tissue: int | None = Field(default=None, ge=0)
    n_genes: int = Field(ge=0)
    counts_integer: bool = Field(description="False when the source matrix holds non-integer values")
    n_positions_without_counts: int = Field(default=0, ge=0)
    tissue_fraction: float | None = Field(default=None, ge=0, le=1)
    genes: GeneQC | None = None
    patches: dict[str, PatchQC] = Field(default_factory=dict)
    tables: dict[str, int] = Field(default_factory=dict, description="further tables (e.g. pseudo-spots) and rows")
    n_transcripts: int | None = Field(default=None, ge=0)
    image_spot_agreement: ImageSpotAgreement | None = None
    labels: LabelQC | None = Field(default=None, description="per-spot or per-cell labels joined at conversion")
    collection: CollectionQC | None = Field(default=None, description="an image collection's counts (format 3)")
    warnings: list[str] = Field(default_factory=list)


class SlideProfileInfo(_Model):
    """The slide-level profile stored in ``tables/slide_profile`` (one row)."""

    kind: Literal["pseudobulk", "file"] = Field(description="pseudobulk: sum of in-tissue spot counts; file: given")
    n_genes: int = Field(ge=0)
    n_spots: int | None = Field(default=None, ge=0, description="spots summed (pseudobulk; obs column in_profile)")
    source: str | None = Field(default=None, description="the profile file, when given")
    total: float = Field(ge=0, description="sum of the profile's values")


class SampleMetadata(_Model):
    """Everything recorded about one sample (root attrs ``hestdata`` of ``samples/<id>.zarr``)."""

    id: str = Field(pattern=SAMPLE_ID_PATTERN)
    format_version: int = Field(default=1, ge=1, description="store format of the sample (absent: format 1)")
    technology: Technology
    variant: Variant | None = Field(
        default=None, description="what the store holds: spots, cells (+ transcripts), channels (multiplex) or slide "
                                  "(image only); absent in samples written before hestdata 0.2")
    species: Species = "unknown"
    cohort: str | None = None
    patient: str | None = None
    organ: str | None = None
    disease_state: str | None = None
    oncotree_code: str | None = None
    preservation: Preservation = "unknown"
    panel: str | None = None
    magnification: str | None = None
    license: str | None = None
    citation: str | None = None
    source_url: str | None = None
    synthetic: bool = Field(default=False, description="True when any part was simulated (the demo)")
    provenance: str | None = Field(default=None, description="free text: where the inputs came from")
    spot_diameter_um: float | None = Field(default=None, gt=0)
    inter_spot_distance_um: float | None = Field(default=None, gt=0)
    pixel_size_um: PixelSize | None = Field(description="None only in an image collection (variant images, format "
                                                     "3) whose pixel size is unknown: recorded as unknown, never "
                                                     "guessed")
    image: ImageInfo | None = None
    qc: QC
    markers: list[MarkerInfo] = Field(default_factory=list, description="multiplex channels (images/if)")
    slide_profile: SlideProfileInfo | None = Field(default=None, description="tables/slide_profile, if any")
    alterations: dict[str, bool | float | str] = Field(
        default_factory=dict, description="slide-level alterations (tables/slide_alterations), e.g. MSI status")
    dropped_channels: list[str] = Field(default_factory=list, description="source channels left out on request")
    missing_elements: list[Literal["image", "shapes", "expression", "patches", "points"]] = Field(
        default_factory=list, description="elements left out by a partial download")
    input_sha256: str | None = Field(default=None, description="hash of the inputs and options (registration)")
    hestdata_version: str
    created_at: str = Field(description="ISO-8601 UTC time of conversion")

    @model_validator(mode="after")
    def _collection_format(self) -> SampleMetadata:
        """An unknown pixel size and the ``images`` variant exist from store format 3, and only together with it."""
        if self.variant == "images" and self.format_version < 3:
            raise ValueError(f"an image collection (variant images) is store format 3, not {self.format_version}")
        if self.pixel_size_um is None and self.variant != "images":
            raise ValueError(f"pixel_size_um: only an image collection may leave it unknown, not a {self.variant} "
                             "sample")
        return self


def _version_tuple(v: object) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in re.findall(r"\d+", str(v))[:3])
    except ValueError:
        return ()


def parse_metadata(raw: Any, where: str) -> SampleMetadata:
    """The typed metadata of a stored sample (its root attrs ``hestdata``), never a raw pydantic error.

    A sample written in a newer store format, or by a newer hestdata that added fields this one does not know,
    gives a :class:`~hestdata.errors.HestdataError` naming the version to install; anything else that breaks the
    schema gives a :class:`~hestdata.errors.SchemaError` listing every violation."""
    from pydantic import ValidationError

    from hestdata._version import __version__
    from hestdata.errors import HestdataError, SchemaError

    if not isinstance(raw, dict):
        raise SchemaError(where, [f"<root>: metadata is {type(raw).__name__}, not an object"])
    fv = raw.get("format_version", 1)
    writer = raw.get("hestdata_version")
    newer_writer = bool(writer) and _version_tuple(writer) > _version_tuple(__version__)
    install = f"pip install -U 'hestdata>={writer}'" if newer_writer else "upgrade hestdata"
    if not isinstance(fv, int) or isinstance(fv, bool) or fv < 1:
        raise SchemaError(where, [f"format_version: {fv!r} is not a store format version"])
    if fv > SAMPLE_FORMAT_VERSION:
        raise HestdataError(f"{where}: written in store format {fv} by hestdata {writer or '?'}; this hestdata "
                            f"{__version__} reads formats up to {SAMPLE_FORMAT_VERSION} ({install})")
    try:
        return SampleMetadata.model_validate(raw)
    except ValidationError as exc:
        unknown = sorted({".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "extra_forbidden"})
        if unknown and newer_writer:
            raise HestdataError(f"{where}: written by hestdata {writer}, which records {', '.join(unknown)} that "
                                f"this hestdata {__version__} does not know ({install})") from None
        problems = [f"{'/'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()]
        raise SchemaError(where, problems) from None


def now_iso() -> str:
    """Current UTC time, ISO-8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def generated_schema() -> dict[str, Any]:
    """The JSON schema derived from ``SampleMetadata`` (what the shipped file must equal)."""
    schema = SampleMetadata.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://hestdata.org/schemas/sample.schema.json"
    return schema


@cache
def sample_schema() -> dict[str, Any]:
    """The shipped ``sample.schema.json``."""
    text = resources.files("hestdata").joinpath("schemas/sample.schema.json").read_text()
    return json.loads(text)


def schema_violations(meta: dict[str, Any]) -> list[str]:
    """Every violation of ``sample.schema.json`` in ``meta``, as ``'path: message'`` strings (empty if valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(sample_schema())
    out = []
    for err in sorted(validator.iter_errors(meta), key=lambda e: list(map(str, e.absolute_path))):
        # a nullable field (``X | None``) fails as "not valid under any of the given schemas": say what is wrong
        # with the value instead (the errors of the branch that is not ``null``)
        inner = [e for e in err.context or [] if not (e.validator == "type" and e.validator_value == "null")]
        for e in inner if err.validator == "anyOf" and inner else [err]:
            where = "/".join(str(p) for p in e.absolute_path) or "<root>"
            out.append(f"{where}: {e.message}")
    return out


if __name__ == "__main__":  # regenerate the shipped schema
    path = resources.files("hestdata").joinpath("schemas/sample.schema.json")
    with resources.as_file(path) as p:
        p.write_text(json.dumps(generated_schema(), indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {p}")
