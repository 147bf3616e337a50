"""The in-memory sample a reader returns: SpatialData-like elements and metadata, no storage knowledge.

Coordinates of record are spot *centres* in the full-resolution pixel frame (``pxl_col_in_fullres`` = x,
``pxl_row_in_fullres`` = y), continuous, with pixel ``i`` covering ``[i, i + 1)`` (the spatialdata convention).
Curation turns them into µm once the pixel size is resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import anndata
    import numpy as np

SpotShape = Literal["circle", "square"]


@dataclass
class RasterImage:
    """One decoded RGB image, ``array`` (y, x, 3) uint8, and its relation to the full-resolution frame.

    ``scale_to_fullres`` = image pixels per full-resolution pixel (1 for the full-resolution image, Space
    Ranger's ``tissue_hires_scalef`` for the hires PNG). ``embedded_pixel_size_um`` is what the file itself
    says (TIFF resolution tags), if anything.
    """

    array: np.ndarray
    source_path: Path
    kind: Literal["fullres", "hires", "lowres"]
    scale_to_fullres: float = 1.0
    embedded_pixel_size_um: float | None = None

    @property
    def height_px(self) -> int:
        return int(self.array.shape[0])

    @property
    def width_px(self) -> int:
        return int(self.array.shape[1])


@dataclass
class PixelSizeEvidence:
    """What a reader found out about the full-resolution pixel size (µm/px); curation decides."""

    embedded: float | None = None
    embedded_from: str | None = None
    estimated: float | None = None
    estimated_from: str | None = None
    user: float | None = None


@dataclass
class Sample:
    """A sample as read from its source, before curation and storage.

    ``expression``: AnnData with X = counts as given (CSR), obs indexed by barcode / spot id with columns
    ``pxl_col_in_fullres``, ``pxl_row_in_fullres`` (centre, full-res px), ``in_tissue``, ``array_row``,
    ``array_col``; var indexed by the source's feature name with ``gene_id`` and ``feature_type`` if known.
    """

    sample_id: str
    technology: str
    expression: anndata.AnnData
    image: RasterImage | None
    pixel_size: PixelSizeEvidence
    spot_shape: SpotShape = "circle"
    spot_diameter_um: float | None = None
    inter_spot_distance_um: float | None = None
    species_hint: str | None = None
    source_files: list[Path] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    n_positions_without_counts: int = 0
    # patches made elsewhere (e.g. HEST-1k's patches/<id>.h5): geometry name -> (images (N, H, W, 3) uint8,
    # expression-table rows (N,)); the converter stores them instead of cutting its own
    precomputed_patches: dict[str, tuple[Any, Any]] = field(default_factory=dict)
