"""The in-memory sample a reader returns: SpatialData-like elements and metadata, no storage knowledge.

Coordinates of record are spot *centres* in the full-resolution pixel frame (``pxl_col_in_fullres`` = x,
``pxl_row_in_fullres`` = y), continuous, with pixel ``i`` covering ``[i, i + 1)`` (the spatialdata convention).
Curation turns them into µm once the pixel size is resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    import anndata
    import numpy as np

    from hestdata.raster import Raster

SpotShape = Literal["circle", "square"]


@dataclass
class RasterImage:
    """One RGB image, read lazily through ``raster`` (:class:`hestdata.raster.Raster`), and its relation to the
    full-resolution frame. An array given instead is wrapped (:class:`~hestdata.raster.ArrayRaster`).

    ``scale_to_fullres`` = image pixels per full-resolution pixel (1 for the full-resolution image, Space
    Ranger's ``tissue_hires_scalef`` for the hires PNG). ``embedded_pixel_size_um`` is what the file itself
    says (TIFF resolution tags), if anything.
    """

    raster: Raster
    source_path: Path
    kind: Literal["fullres", "hires", "lowres"]
    scale_to_fullres: float = 1.0
    embedded_pixel_size_um: float | None = None

    def __post_init__(self) -> None:
        from hestdata.raster import ArrayRaster, Raster

        if not isinstance(self.raster, Raster):
            self.raster = ArrayRaster(self.raster, self.source_path)

    @property
    def height_px(self) -> int:
        return int(self.raster.height_px)

    @property
    def width_px(self) -> int:
        return int(self.raster.width_px)


@dataclass
class PixelSizeEvidence:
    """What a reader found out about the full-resolution pixel size (µm/px); curation decides."""

    embedded: float | None = None
    embedded_from: str | None = None
    estimated: float | None = None
    estimated_from: str | None = None
    user: float | None = None
    # a value the dataset's publisher measured (HEST-1k's pixel_size_um_estimated): physical evidence that is
    # used as published when the spot grid confirms it within 5 %, so patches line up with the publisher's
    published: float | None = None
    published_from: str | None = None


class SlideReader(Protocol):
    """A whole-slide image read region by region (``sources.wsi.WSI`` implements it)."""

    path: Path
    level_downsamples: list[float]
    magnification: str | None

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def read_region(self, level: int, x0: int, y0: int, w: int, h: int) -> np.ndarray: ...


Variant = Literal["spots", "cells", "channels", "slide", "images"]


@dataclass(kw_only=True)
class Sample:
    """A sample as read from its source, before curation and storage: what every variant shares.

    Readers return one of the variants below; :func:`hestdata.convert` dispatches on ``variant``:

    - :class:`SpotSample` — a spot/bin table with an H&E (Visium, Visium HD, legacy ST, AnnData, HEST-1k);
    - :class:`CellSample` — a cell table with transcripts and boundaries (Xenium), optionally a registered H&E;
    - :class:`ChannelSample` — a multiplex image with canonical markers (IF, IMC, QPTIFF);
    - :class:`SlideSample` — an image-only whole slide;
    - :class:`ImageSetSample` — an image collection: labelled tiles or single-cell images, or cells boxed on
      fields of view (store format 3).
    """

    variant: ClassVar[Variant]
    sample_id: str
    technology: str
    pixel_size: PixelSizeEvidence
    source_files: list[Path] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # slide-level files attached to any sample: "profile" (gene, value), "alterations" (one row of labels)
    slide_inputs: dict[str, Path] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The file errors about this sample should name (its first source file, else its id)."""
        return str(self.source_files[0]) if self.source_files else self.sample_id


@dataclass(kw_only=True)
class SpotSample(Sample):
    """Spots or bins with counts and (usually) an H&E.

    ``expression``: AnnData with X = counts as given (CSR), obs indexed by barcode / spot id with columns
    ``pxl_col_in_fullres``, ``pxl_row_in_fullres`` (centre, full-res px), ``in_tissue``, ``array_row``,
    ``array_col``; var indexed by the source's feature name with ``gene_id`` and ``feature_type`` if known.
    """

    variant: ClassVar[Variant] = "spots"
    expression: anndata.AnnData
    image: RasterImage | None
    spot_shape: SpotShape = "circle"
    spot_diameter_um: float | None = None
    inter_spot_distance_um: float | None = None
    # how the array coordinates lie: Visium's hexagonal grid, a square one (legacy ST, Visium HD bins), or none
    grid_layout: Literal["hexagonal", "square"] | None = None
    species_hint: str | None = None
    n_positions_without_counts: int = 0
    # patches made elsewhere (e.g. HEST-1k's patches/<id>.h5): geometry name -> (images (N, H, W, 3) uint8,
    # expression-table rows (N,)); the converter stores them instead of cutting its own
    precomputed_patches: dict[str, tuple[Any, Any]] = field(default_factory=dict)


@dataclass(kw_only=True)
class CellSample(Sample):
    """Cells with counts, transcripts and boundaries (coordinates in µm), e.g. Xenium."""

    variant: ClassVar[Variant] = "cells"
    folder: Path
    cells: Any  # AnnData: X gene counts (CSR), obs x_um/y_um + per-cell columns, obsm control_counts
    transcripts: Any  # DataFrame: x, y, z (µm), gene, qv, cell_id, overlaps_nucleus, feature_type
    cell_polygons: dict[str, np.ndarray]  # cell_id -> (k, 2) µm
    nucleus_polygons: dict[str, np.ndarray]
    image: np.ndarray | None  # (c, y, x) morphology (DAPI), native dtype
    image_origin_um: tuple[float, float] = (0.0, 0.0)
    experiment: dict[str, Any] = field(default_factory=dict)
    he: RasterImage | None = None  # a registered H&E, if given
    he_affine: np.ndarray | None = None  # 3x3: H&E pixel (x, y, 1) -> µm, or 10x alignment (-> morphology px)
    he_affine_kind: Literal["um", "morphology_px"] = "um"


@dataclass(kw_only=True)
class ChannelSample(Sample):
    """A multiplex image whose channels are mapped to canonical markers."""

    variant: ClassVar[Variant] = "channels"
    image: np.ndarray  # (c, y, x) kept channels only, native dtype
    channels: list[str]  # source names of the kept channels
    markers: list[Any]  # curation.markers.Marker, one per kept channel
    source: Path
    dropped: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class SlideSample(Sample):
    """An image-only whole slide, read region by region (never decoded whole)."""

    variant: ClassVar[Variant] = "slide"
    slide: SlideReader
    magnification: str | None = None


@dataclass(kw_only=True)
class ImageSetSample(Sample):
    """A group of an image collection (one patient, one slide, one field of view or the whole collection).

    ``items``: a DataFrame, one row per stored item, indexed by a unique item id, with ``file`` (absolute path of
    the source image), ``image_width_px``/``image_height_px``, for ``kind="cells"`` the box ``x0_px``, ``y0_px``,
    ``x1_px``, ``y1_px`` in the image's continuous pixel frame (pixel ``i`` covers ``[i, i + 1)``), and any label
    or descriptive columns. ``folder`` is what ``file`` is stored relative to. ``pixel_size.user`` holds a declared
    pixel size; none declared means unknown (recorded as such)."""

    variant: ClassVar[Variant] = "images"
    items: Any  # pandas.DataFrame
    kind: Literal["tiles", "cells"]
    folder: Path
    label_columns: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # CollectionQC counters the reader made
