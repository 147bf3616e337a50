"""10x Visium HD reader: one ``binned_outputs/square_XXXum/`` folder at any bin size."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from hestdata.errors import InputError
from hestdata.model import PixelSizeEvidence, SpotSample
from hestdata.options import SpotOptions, UserPixelSize
from hestdata.sources.common import make_anndata, pick_image
from hestdata.sources.registry import Source, register_source
from hestdata.sources.tenx import find_matrix, join_positions, read_positions, read_scalefactors

_BIN_RE = re.compile(r"square_(\d+)um$")


def resolve_bin_folder(path: Path, bin_size_um: int | None) -> Path:
    """Accept a ``square_XXXum`` folder, a ``binned_outputs`` folder or an ``outs`` folder."""
    if _BIN_RE.search(path.name):
        return path
    base = path / "binned_outputs" if (path / "binned_outputs").is_dir() else path
    bins = sorted(p for p in base.glob("square_*um") if p.is_dir())
    if not bins:
        raise InputError(path, "no binned_outputs/square_XXXum folder found")
    if bin_size_um is None:
        if len(bins) > 1:
            raise InputError(path, f"several bin sizes ({', '.join(b.name for b in bins)})", "pass --bin-size-um")
        return bins[0]
    want = base / f"square_{bin_size_um:03d}um"
    if not want.is_dir():
        raise InputError(path, f"no square_{bin_size_um:03d}um folder; found {', '.join(b.name for b in bins)}")
    return want


def read_visium_hd(path: str | Path, *, sample_id: str, bin_size_um: int | None = None,
                   image: str | Path | None = None, pixel_size_um: float | None = None) -> SpotSample:
    """Read Visium HD bins; the pixel size is embedded (``microns_per_pixel`` in scalefactors)."""
    folder = resolve_bin_folder(Path(path), bin_size_um)
    spatial = folder / "spatial"
    if not spatial.is_dir():
        raise InputError(folder, "no 'spatial' folder in the bin folder")
    fm = find_matrix(folder)
    positions = read_positions(spatial)
    sf = read_scalefactors(spatial)
    obs, n_unmatched = join_positions(fm, positions)
    adata = make_anndata(fm.counts, obs, fm.features, fm.path)
    bin_um = float(sf.get("bin_size_um") or int(_BIN_RE.search(folder.name).group(1)))  # type: ignore[union-attr]

    warnings_out: list[str] = []
    if image is not None:
        candidates = [(Path(image), "fullres", 1.0)]
    else:
        candidates = [(spatial / f"tissue_{k}_image.png", k, float(sf[f"tissue_{k}_scalef"]))
                      for k in ("hires", "lowres") if f"tissue_{k}_scalef" in sf]
    img = pick_image(candidates, explicit=image is not None, warnings_out=warnings_out)
    evidence = PixelSizeEvidence(user=pixel_size_um)
    if sf.get("microns_per_pixel"):
        evidence.embedded = float(sf["microns_per_pixel"])
        evidence.embedded_from = "scalefactors_json.json microns_per_pixel"
    elif img is not None and img.embedded_pixel_size_um:
        evidence.embedded, evidence.embedded_from = img.embedded_pixel_size_um, "image tags"
    if sf.get("spot_diameter_fullres"):
        evidence.estimated = bin_um / float(sf["spot_diameter_fullres"])
        evidence.estimated_from = f"spot_diameter_fullres ({bin_um:g} µm bins)"
    files = [fm.path, Path(positions.attrs["path"])] + ([img.source_path] if img else [])
    return SpotSample(
        sample_id=sample_id, technology="visium_hd", expression=adata, image=img, pixel_size=evidence,
        spot_shape="square", spot_diameter_um=bin_um, inter_spot_distance_um=bin_um,
        grid_layout="square", source_files=files,
        metadata={"scalefactors": sf, "bin_size_um": bin_um}, warnings=warnings_out,
        n_positions_without_counts=n_unmatched,
    )


class VisiumHDOptions(SpotOptions, UserPixelSize):
    """Options of the ``visium_hd`` source."""

    bin_size_um: int | None = Field(default=None, gt=0, description="bin size in µm when several exist")


def _read(inputs: dict[str, Path], sample_id: str, o: VisiumHDOptions) -> SpotSample:
    return read_visium_hd(inputs["path"], sample_id=sample_id, bin_size_um=o.bin_size_um, image=inputs.get("image"),
                          pixel_size_um=o.pixel_size_um)


SOURCE = register_source(Source(
    name="visium_hd", summary="10x Visium HD bins at one bin size (outs/, binned_outputs/ or square_XXXum/)",
    variant="spots", technologies=("visium_hd",), inputs={"path": "outs/, binned_outputs/ or square_XXXum/ folder"},
    optional_inputs={"image": "full-resolution H&E"}, options=VisiumHDOptions, elements=("images/he", "shapes/spots", "shapes/tissue", "tables/expression", "patches"),
    reader=_read))
