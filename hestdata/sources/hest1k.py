"""HEST-1k import: one sample of a HEST-1k download (``st/``, ``wsis/``, ``metadata/``, ``patches/`` …).

Layout (HEST v1.1): ``st/<id>.h5ad`` (raw counts; ``obsm['spatial']`` = spot centre (x, y) in full-resolution
pixels), ``wsis/<id>.tif`` (pyramidal TIFF, resolution tags in cm), ``metadata/<id>.json`` (the HEST metadata
columns), optionally ``patches/<id>.h5`` (``img`` (N, 224, 224, 3) uint8, ``coords``, ``barcode``; attrs
``patch_size_target``) and a metadata CSV at the top (``HEST_v1_1_0.csv`` or any CSV with an ``id`` column).

Pixel size: HEST's ``pixel_size_um_estimated`` is the physical evidence (HEST's own reader uses it too): its
TIFF writer hands libvips pixels per cm where libvips expects per mm, so the resolution tags of ``wsis/<id>.tif``
claim a pixel 10x finer than it is. Our spot-grid estimate checks it (a disagreement over 5 % is flagged and the
grid wins); the tags are recorded as embedded and lose to both.
By default patches are cut again by our pipeline; ``patch_source="hest"`` stores HEST's own patches instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from hestdata.errors import InputError
from hestdata.model import PixelSizeEvidence, SpotSample
from hestdata.options import SpotOptions, UserPixelSize
from hestdata.sources.registry import Source, register_source

TECHNOLOGY = {"visium": "visium", "visium hd": "visium_hd", "spatial transcriptomics": "st", "st": "st",
              "xenium": "xenium"}
SPECIES = {"homo sapiens": "Homo sapiens", "human": "Homo sapiens", "mus musculus": "Mus musculus",
           "mouse": "Mus musculus"}
PRESERVATION = {"ffpe": "FFPE", "fresh frozen": "fresh frozen", "frozen": "fresh frozen", "ff": "fresh frozen"}


def _metadata(root: Path, hest_id: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    csvs = sorted(root.glob("*.csv"))
    for c in csvs:
        import pandas as pd

        try:
            df = pd.read_csv(c, encoding="utf-8-sig")  # HEST's CSV starts with a BOM
        except Exception as exc:
            raise InputError(c, f"cannot parse metadata CSV: {exc}") from exc
        if "id" in df.columns and (df["id"].astype(str) == hest_id).any():
            row = df[df["id"].astype(str) == hest_id].iloc[0]
            meta.update({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()})
    j = root / "metadata" / f"{hest_id}.json"
    if j.is_file():
        try:
            meta.update(json.loads(j.read_text()))
        except json.JSONDecodeError as exc:
            raise InputError(j, f"invalid JSON: {exc}") from exc
    if not meta:
        raise InputError(root, f"no metadata for {hest_id!r} (metadata/{hest_id}.json or a CSV with an 'id' column)")
    return meta


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) and f > 0 else None


def read_hest1k(hest_dir: str | Path, hest_id: str, *, sample_id: str | None = None,
                pixel_size_um: float | None = None, patch_source: str = "recut") -> SpotSample:
    """Read one HEST-1k sample; ``patch_source`` is ``"recut"`` (ours) or ``"hest"`` (import patches/<id>.h5)."""
    from hestdata.sources.anndata_image import read_anndata

    root = Path(hest_dir)
    if not root.is_dir():
        raise InputError(root, "HEST-1k folder not found")
    if patch_source not in ("recut", "hest"):
        raise ValueError(f"patch_source must be 'recut' or 'hest', got {patch_source!r}")
    meta = _metadata(root, hest_id)
    tech_raw = str(meta.get("st_technology", "")).strip().lower()
    tech = TECHNOLOGY.get(tech_raw)
    if tech is None:
        raise InputError(root / "metadata" / f"{hest_id}.json", f"unknown st_technology {meta.get('st_technology')!r}")
    if tech in ("xenium", "visium_hd"):
        raise InputError(root, f"{hest_id}: HEST-1k {meta.get('st_technology')} import is not supported yet",
                         "Visium and legacy ST samples are")
    h5ad = root / "st" / f"{hest_id}.h5ad"
    wsi = next((p for p in (root / "wsis" / f"{hest_id}.tif", root / "wsis" / f"{hest_id}.tiff") if p.is_file()), None)
    if wsi is None:
        raise InputError(root / "wsis", f"no {hest_id}.tif")
    sample = read_anndata(h5ad, image=wsi, sample_id=sample_id or hest_id, technology=tech,
                          pixel_size_um=pixel_size_um)
    ev: PixelSizeEvidence = sample.pixel_size
    emb, est = _num(meta.get("pixel_size_um_embedded")), _num(meta.get("pixel_size_um_estimated"))
    if ev.embedded is None and emb is not None:
        ev.embedded, ev.embedded_from = emb, "HEST metadata pixel_size_um_embedded"
    if est is not None:
        ev.published, ev.published_from = est, "HEST metadata pixel_size_um_estimated"
    species = SPECIES.get(str(meta.get("species", "")).strip().lower())
    sample.species_hint = species
    fields = {"organ": meta.get("organ"), "oncotree_code": meta.get("oncotree_code"),
              "patient": meta.get("patient"), "disease_state": meta.get("disease_state"),
              "license": meta.get("license"), "source_url": meta.get("study_link") or meta.get("download_page_link1"),
              "citation": meta.get("dataset_title"),
              "preservation": PRESERVATION.get(str(meta.get("preservation_method", "")).strip().lower())}
    sample.metadata["descriptive"] = {k: v for k, v in fields.items() if v not in (None, "")}
    sample.metadata["hest_id"] = hest_id
    sample.source_files = [h5ad, wsi, *sample.source_files[2:]]
    if patch_source == "hest":
        sample.precomputed_patches.update(_hest_patches(root / "patches" / f"{hest_id}.h5", sample))
    return sample


def _hest_patches(path: Path, sample: SpotSample) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import h5py

    from hestdata.units import PatchGeometry

    if not path.is_file():
        raise InputError(path, "HEST patches file not found")
    try:
        with h5py.File(path, "r") as f:
            img = f["img"][:]
            barcodes = [b.decode() if isinstance(b, bytes) else str(b) for b in np.asarray(f["barcode"][:]).ravel()]
            target = int(f["img"].attrs.get("patch_size_target", f.attrs.get("patch_size_target", img.shape[1])))
            mpp = float(f.attrs.get("pixel_size", 0.5)) if "pixel_size" in f.attrs else 0.5
    except (OSError, KeyError) as exc:
        raise InputError(path, f"not a HEST patches file ({exc})") from exc
    if img.ndim != 4 or img.shape[1] != img.shape[2] or img.shape[3] != 3 or img.shape[1] != target:
        raise InputError(path, f"unexpected img shape {img.shape}")
    index = {b: i for i, b in enumerate(sample.expression.obs_names)}
    missing = [b for b in barcodes if b not in index]
    if missing:
        raise InputError(path, f"{len(missing)} patch barcode(s) absent from the expression table, e.g. {missing[0]!r}")
    rows = np.array([index[b] for b in barcodes], dtype=np.int64)
    return {PatchGeometry(target, mpp).name: (img.astype(np.uint8, copy=False), rows)}


class Hest1kOptions(SpotOptions, UserPixelSize):
    """Options of the ``hest1k`` source."""

    hest_id: str | None = Field(default=None, description="HEST sample id (default: the sample id)")
    patches_from: Literal["recut", "hest"] = Field(
        default="recut", description="'recut' (cut from the WSI) or 'hest' (import patches/<id>.h5)")


def _read(inputs: dict[str, Path], sample_id: str, o: Hest1kOptions) -> SpotSample:
    return read_hest1k(inputs["dir"], o.hest_id or sample_id, sample_id=sample_id, pixel_size_um=o.pixel_size_um,
                       patch_source=o.patches_from)


def _discover(inputs: dict[str, Path]) -> list[str]:
    ids = sorted(p.stem for p in (inputs["dir"] / "st").glob("*.h5ad"))
    if not ids:
        raise InputError(inputs["dir"], "no st/<id>.h5ad found (not a HEST-1k download?)")
    return ids


SOURCE = register_source(Source(
    name="hest1k", summary="HEST-1k download (st/, wsis/, metadata/, patches/): Visium and legacy ST samples",
    variant="spots", technologies=(), inputs={"dir": "a HEST-1k download folder"}, options=Hest1kOptions,
    elements=("images/he", "shapes/spots", "shapes/tissue", "tables/expression", "patches"), reader=_read,
    discover=_discover))
