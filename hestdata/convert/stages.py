"""The stages every conversion shares, each a small function.

validate id and metadata → resolve pixel size → genes → pyramid → tissue → (variant: patches, tables) →
metadata → commit (rename into place) → publish (catalog + manifest under the root lock).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hestdata._version import __version__
from hestdata.errors import InputError, StoreError
from hestdata.metadata import STORE_FORMAT_VERSION, PixelSize, SampleMetadata, now_iso
from hestdata.model import Sample

META_FIELDS = frozenset({"cohort", "patient", "species", "organ", "disease_state", "oncotree_code", "preservation",
                         "panel", "magnification", "license", "citation", "source_url", "synthetic", "provenance"})


@dataclass
class Request:
    """A checked conversion request: what every variant's stages receive."""

    sample: Sample
    root: Path
    overwrite: bool
    fields: dict[str, Any]  # descriptive metadata: the source's, then the caller's
    input_sha256: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return self.sample.where


def check_request(sample: Sample, root: str | Path, *, metadata: dict[str, Any] | None, overwrite: bool,
                  input_sha256: str | None = None, publish_root: bool = True) -> Request:
    """Stage 1: a valid id, known metadata fields, and no existing sample unless ``overwrite``."""
    from hestdata.store import layout as L
    from hestdata.store.recovery import recover_root

    L.check_sample_id(sample.sample_id)
    fields = {**sample.metadata.get("descriptive", {}), **(metadata or {})}
    unknown = set(fields) - META_FIELDS
    if unknown:
        raise InputError(None, f"unknown metadata field(s) {sorted(unknown)}; allowed: {sorted(META_FIELDS)}")
    from hestdata.metadata import MAX_TEXT_CHARS

    long = sorted(k for k, v in fields.items() if isinstance(v, str) and len(v) > MAX_TEXT_CHARS)
    if long:
        raise InputError(None, f"metadata field(s) {long} longer than {MAX_TEXT_CHARS} characters "
                               f"({', '.join(f'{k}: {len(fields[k]):,}' for k in long)})")
    writable_root(root)
    recover_root(root, publish=publish_root)  # a registration publishes its own samples at the end
    if L.sample_path(root, sample.sample_id).exists() and not overwrite:
        raise StoreError(f"{L.sample_path(root, sample.sample_id)}: sample already exists "
                         "(pass overwrite=True / --overwrite)")
    return Request(sample, Path(root), overwrite, fields, input_sha256, list(sample.warnings))


def writable_root(root: str | Path) -> Path:
    """``root`` (created if needed) after checking that samples can be written into it."""
    import tempfile

    from hestdata.store import layout as L

    r = Path(root)
    if r.exists() and not r.is_dir():
        raise StoreError(f"{r}: is a file, not a root folder")
    try:
        (r / L.SAMPLES).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=r / L.SAMPLES, prefix=".probe-"):
            pass
    except OSError as exc:
        raise StoreError(f"{r}: cannot write into the root ({exc.strerror or exc})") from None
    return r


def resolve_pixel_size(req: Request, obs: Any = None, grid: Any = None) -> PixelSize:
    """Stage 2: the trusted full-resolution µm/px (warnings join the request's); ``grid`` is the spot grid's
    geometry (:class:`hestdata.curation.pixel_size.SpotGrid`) when ``obs`` holds spots on one."""
    from hestdata.curation.pixel_size import resolve_pixel_size as resolve

    s = req.sample
    ps, warns = resolve(s.pixel_size, grid, obs, req.where)
    req.warnings += warns
    return ps


def unify_genes(req: Request, var: Any, species_hint: str | None = None) -> tuple[Any, Any, str]:
    """Stage 3: unified gene symbols (originals kept) and the species (a ``species`` field wins)."""
    from hestdata.curation.genes import unify_genes as unify

    species = req.fields.pop("species", None) or species_hint
    return unify(var, species, req.where)


def keep_levels(strips: Iterator[tuple[int, int, np.ndarray]], shapes: list[tuple[int, int]], keep: set[int],
                channels_shape: tuple[int, ...], dtype: Any, kept: dict[int, np.ndarray]
                ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Pass pyramid strips through while copying levels in ``keep`` into ``kept`` (for tissue and patches)."""
    for k in keep:
        kept.setdefault(k, np.empty(shapes[k] + channels_shape, dtype=dtype))
    for k, r0, strip in strips:
        if k in keep:
            kept[k][r0:r0 + len(strip)] = strip
        yield k, r0, strip


def write_pyramid(w: Any, hwc: np.ndarray, pixel_size_um: float, keep: set[int] = frozenset(),
                  min_size_px: int = 256, **image_kwargs: Any) -> tuple[list[tuple[int, int]], dict[int, np.ndarray]]:
    """Stage 4: the image pyramid of ``hwc`` (level 0 in memory); returns the level shapes and the kept levels
    (level 0 is the input itself)."""
    from hestdata.curation.pyramid import iter_pyramid, pyramid_shapes

    shapes = pyramid_shapes(hwc.shape[0], hwc.shape[1], min_size_px=min_size_px)
    kept: dict[int, np.ndarray] = {0: hwc}
    strips = keep_levels(iter_pyramid(hwc, len(shapes)), shapes, set(keep) - {0}, hwc.shape[2:], hwc.dtype, kept)
    w.write_image(shapes, hwc.shape[2], hwc.dtype, pixel_size_um, strips, **image_kwargs)
    return shapes, kept


def write_raster_pyramid(w: Any, raster: Any, pixel_size_um: float, thumbnail_max_px: int, *,
                         strip_rows: int | None = None, **image_kwargs: Any
                         ) -> tuple[list[tuple[int, int]], int, np.ndarray]:
    """Stage 4 for an RGB raster read lazily (:class:`hestdata.raster.Raster`): the pyramid written strip by
    strip; returns the level shapes, the thumbnail level and its pixels. The raster's decoded copy, if it keeps
    one (JPEG), is released afterwards: later stages read the written pyramid."""
    from hestdata.curation.levels import thumbnail_level
    from hestdata.curation.pyramid import iter_pyramid_from, pyramid_shapes
    from hestdata.store import layout as L

    h0, w0 = raster.height_px, raster.width_px
    shapes = pyramid_shapes(h0, w0)
    t_idx = thumbnail_level(shapes, thumbnail_max_px)
    kept: dict[int, np.ndarray] = {}
    strips = iter_pyramid_from(lambda a, b: raster.read(a, b, 0, w0), h0, len(shapes), strip_rows or L.IMAGE_CHUNK_PX)
    w.write_image(shapes, 3, np.uint8, pixel_size_um, keep_levels(strips, shapes, {t_idx}, (3,), np.uint8, kept),
                  **image_kwargs)
    raster.release()
    return shapes, t_idx, kept[t_idx]


def level_raster(w: Any, level: int, name: str | None = None) -> Any:
    """A level of the pyramid ``w`` has written, as a raster (patches are cut from what the store holds)."""
    from hestdata.raster import ZarrRaster
    from hestdata.store import layout as L

    image = name or L.IMAGE_HE
    return ZarrRaster(w.group["images"][image][f"s{level}"], f"{w.tmp}/images/{image}/s{level}")


def write_tissue(w: Any, thumb: np.ndarray, thumb_pixel_size_um: float) -> Any:
    """Stage 5: Otsu tissue mask of a thumbnail level, stored as ``shapes/tissue`` polygons."""
    import geopandas as gpd

    from hestdata.curation.tissue import mask_to_polygons, segment_tissue
    from hestdata.io.progress import bar
    from hestdata.store import layout as L

    with bar(f"{w.sample_id} tissue"):
        tm = segment_tissue(thumb, thumb_pixel_size_um)
        polys = mask_to_polygons(tm)
    if polys:
        w.write_shapes(L.SHAPES_TISSUE, gpd.GeoDataFrame(geometry=polys))
    return tm


def format_version(variant: str, qc: Any) -> int:
    """The oldest store format that holds a sample (hestdata.ids): an image collection, or labels joined by
    polygons, need format 3; everything else is written in format 2, which older hestdata reads."""
    from hestdata.ids import COLLECTION_FORMAT_VERSION

    polygons = qc is not None and qc.labels is not None and qc.labels.key == "polygon"
    return COLLECTION_FORMAT_VERSION if variant == "images" or polygons else STORE_FORMAT_VERSION


def sample_metadata(req: Request, **values: Any) -> SampleMetadata:
    """The sample's metadata: the request's descriptive fields, the variant, version and time, then ``values``."""
    s = req.sample
    fields = {**req.fields, **{k: v for k, v in values.items() if k in META_FIELDS and v is not None}}
    rest = {k: v for k, v in values.items() if k not in META_FIELDS}
    return SampleMetadata(id=s.sample_id, technology=s.technology, variant=s.variant, hestdata_version=__version__,
                          format_version=format_version(s.variant, rest.get("qc")),
                          created_at=now_iso(), input_sha256=req.input_sha256, **fields, **rest)


def commit_and_publish(w: Any, req: Request, meta: SampleMetadata, publish_root: bool) -> Path:
    """Last stages: rename the finished sample into place, then update catalog and manifest (unless a caller
    such as registration publishes many samples at once)."""
    from hestdata.store.publish import publish

    path = w.commit(meta)
    if publish_root:
        publish(req.root, [req.sample.sample_id])
    import warnings

    from hestdata.errors import HestdataWarning

    for msg in req.warnings:  # API users see them too (the CLI prints them from the stored QC instead)
        warnings.warn(f"{req.sample.sample_id}: {msg}", HestdataWarning, stacklevel=4)
    return path

