"""``hestdata demo``: build a small root offline, print its catalog, write ``overview.png``.

The built-in sample is **synthetic** and says so in its metadata: scikit-image's bundled real IHC image of
colon (512 x 512) is upsampled 3x and declared 0.5 µm/px, a Visium-like hexagonal spot grid (55 µm spots,
100 µm apart) is laid over it, and counts are simulated from the stain under each spot (haematoxylin, eosin,
DAB from colour deconvolution) so that expression and morphology really are related. It is written as a Space
Ranger ``outs/`` folder (10x HDF5 matrix, positions CSV, scalefactors, TIFF with resolution tags) and goes
through the same reader and converter as real data.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DEMO_PIXEL_SIZE_UM = 0.5
DEMO_UPSAMPLE = 3
DEMO_GENES = ["KRT20", "CDX2", "VIL1", "MUC2", "EPCAM", "CEACAM5", "LGR5", "OLFM4", "PTPRC", "CD3E", "MS4A1",
              "COL1A1", "COL3A1", "ACTA2", "DES", "VIM", "PECAM1", "LYZ", "CD68", "MKI67", "TFF3", "FABP1",
              "SPINK4", "REG4"]


def _write_10x_h5(path: Path, counts: np.ndarray, barcodes: list[str], names: list[str], ids: list[str]) -> None:
    """A minimal Cell Ranger v3 HDF5 matrix (CSC: features x barcodes)."""
    import h5py
    import scipy.sparse as sp

    m = sp.csc_matrix(counts.T)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = m.data.astype(np.int32), m.indices.astype(np.int64), m.indptr.astype(np.int64)
        g["shape"] = np.array(m.shape, dtype=np.int32)
        g["barcodes"] = np.array(barcodes, dtype="S")
        ft = g.create_group("features")
        ft["name"], ft["id"] = np.array(names, dtype="S"), np.array(ids, dtype="S")
        ft["feature_type"] = np.array(["Gene Expression"] * len(names), dtype="S")
        ft["genome"] = np.array(["GRCh38"] * len(names), dtype="S")


def make_synthetic_visium(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the synthetic Visium-like outs folder and full-resolution TIFF; return (outs, image).

    The gene model (how counts depend on the stains) is the same for every seed; the seed rotates the image by
    ``seed * 90°`` (other spots over other tissue) and draws the count noise — two seeds make two "patients"."""
    import tifffile
    from PIL import Image
    from skimage import data
    from skimage.color import rgb2hed

    from hestdata.curation.genes import gene_table

    rng = np.random.default_rng(seed)
    base = np.rot90(data.immunohistochemistry(), k=seed % 4).copy()
    size = base.shape[0] * DEMO_UPSAMPLE
    img = np.asarray(Image.fromarray(base).resize((size, size), Image.Resampling.LANCZOS))
    outs = folder / "outs"
    (outs / "spatial").mkdir(parents=True, exist_ok=True)
    image_path = folder / "synthetic_ihc_fullres.tif"
    res = 1e4 / DEMO_PIXEL_SIZE_UM  # pixels per cm
    tifffile.imwrite(image_path, img, resolution=(res, res), resolutionunit="CENTIMETER", photometric="rgb")

    spacing_px = 100.0 / DEMO_PIXEL_SIZE_UM
    rows = []
    for r in range(int(size / (spacing_px * np.sqrt(3) / 2)) + 1):
        for c in range(0, int(2 * size / spacing_px) + 2):
            if (r + c) % 2:
                continue
            x = (c * 0.5 + 0.25) * spacing_px
            y = (r * np.sqrt(3) / 2 + 0.5) * spacing_px
            if 60 < x < size - 60 and 60 < y < size - 60:
                rows.append((r, c, y, x))
    barcodes = [f"SYNTH{i:04d}-1" for i in range(len(rows))]
    hed = rgb2hed(img)
    radius = 27.5 / DEMO_PIXEL_SIZE_UM
    feats = np.zeros((len(rows), 3))
    yy, xx = np.mgrid[-int(radius):int(radius) + 1, -int(radius):int(radius) + 1]
    disk = (yy**2 + xx**2) <= radius**2
    for i, (_, _, y, x) in enumerate(rows):
        win = hed[int(y) - int(radius):int(y) + int(radius) + 1, int(x) - int(radius):int(x) + int(radius) + 1]
        feats[i] = win[disk].mean(axis=0)
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    coef = np.random.default_rng(1234).normal(0, 0.8, size=(3, len(DEMO_GENES)))  # one gene model for all
    rate = np.exp(1.5 + z @ coef + rng.normal(0, 0.2, size=(len(rows), len(DEMO_GENES))))
    counts = rng.poisson(rate).astype(np.int32)
    table = gene_table()
    human = table[table["species"] == "human"].drop_duplicates("symbol").set_index("symbol")["gene_id"]
    ids = [human.get(g, "") for g in DEMO_GENES]
    _write_10x_h5(outs / "filtered_feature_bc_matrix.h5", counts, barcodes, DEMO_GENES, ids)
    from hestdata.curation.tissue import segment_tissue

    tissue = segment_tissue(img, DEMO_PIXEL_SIZE_UM)  # in_tissue as Space Ranger would call it: spot on tissue
    with open(outs / "spatial" / "tissue_positions.csv", "w") as fh:
        fh.write("barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres\n")
        for b, (r, c, y, x) in zip(barcodes, rows, strict=True):
            on = int(tissue.mask[min(int(y * DEMO_PIXEL_SIZE_UM / tissue.pixel_size_um), tissue.mask.shape[0] - 1),
                                 min(int(x * DEMO_PIXEL_SIZE_UM / tissue.pixel_size_um), tissue.mask.shape[1] - 1)])
            fh.write(f"{b},{on},{r},{c},{y:.2f},{x:.2f}\n")
    sf = {"spot_diameter_fullres": 65.0 / DEMO_PIXEL_SIZE_UM, "tissue_hires_scalef": 1.0,
          "tissue_lowres_scalef": 0.1, "fiducial_diameter_fullres": 89.5 / DEMO_PIXEL_SIZE_UM}
    (outs / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    return outs, image_path


def write_overview(sample_path: Path, png: Path, n_gallery: int = 16) -> Path:
    """The sample's figure (:func:`hestdata.plot.plot_sample`): H&E in µm with its spots outlined green where a
    patch was stored and red where none was, scale bar, title with id, technology and pixel size, legend, and a
    gallery of stored patches without padded edge patches."""
    from hestdata.plot import plot_sample

    return plot_sample(sample_path.parent.parent, sample_path.name.removesuffix(".zarr"), png, n_gallery=n_gallery)


def run_demo(out: Path, *, data: Path | None = None, image: Path | None = None,
             echo: Callable[[str], Any] = print, bench: bool = True) -> Path:
    """Build ``out/root``, convert into it, print the catalog, write ``out/overview.png``, iterate one loader
    epoch and (built-in sample) rank two weight-free baseline encoders on the demo's expression task."""
    import time

    import polars as pl

    from hestdata.convert import convert
    from hestdata.errors import InputError
    from hestdata.sources.visium import read_visium
    from hestdata.store.root import Root
    from hestdata.units import DEFAULT_PATCH

    out = Path(out)
    root = out / "root"
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    paths = []
    if data is None:
        echo("hestdata demo: SYNTHETIC samples (scikit-image IHC colon image upsampled 3x, simulated Visium grid "
             "and counts) — for trying the pipeline, not for biology")
        for i in range(2):
            outs, img_path = make_synthetic_visium(out / "input" / f"patient{i}", seed=i)
            sample = read_visium(outs, sample_id=f"demo_synthetic_ihc_{i}", image=img_path)
            meta = {"synthetic": True, "organ": "colon", "species": "Homo sapiens", "license": "BSD-3-Clause",
                    "patient": f"P{i}", "cohort": "demo",
                    "provenance": "scikit-image data.immunohistochemistry() rotated and upsampled 3x; spot grid "
                                  "and counts simulated from the stain (hestdata.demo)"}
            paths.append(convert(sample, root, patches=[DEFAULT_PATCH.name], metadata=meta))
    else:
        sample = read_visium(data, sample_id=Path(data).resolve().name.replace(" ", "_") or "visium", image=image)
        try:
            paths.append(convert(sample, root, patches=[DEFAULT_PATCH.name]))
        except InputError as exc:
            if "cannot make" not in str(exc):
                raise
            echo(f"note: {exc}; converting without patches")
            paths.append(convert(sample, root, patches=[]))
    echo(f"converted {len(paths)} sample(s) into {root} in {time.perf_counter() - t0:.1f} s")
    cat = Root.open(root).catalog
    with pl.Config(tbl_cols=12, tbl_width_chars=140):
        echo(str(cat.select(["id", "technology", "species", "patient", "n_obs", "n_genes", "pixel_size_um",
                             "n_patches", "synthetic"])))
    png = write_overview(paths[0], out / "overview.png")
    echo(f"overview: {png}")
    if hestdata_patches(paths[0]):
        echo(loader_epoch(root))
    else:
        echo("loader: skipped (this sample has no patch arrays: its image is too coarse for 224px_0.5um)")
    if bench and data is None:
        echo(benchmark_baselines(root))
    elif bench:
        echo("leaderboard: skipped (the demo's benchmark task is defined on the built-in synthetic samples)")
    echo(next_steps(root))
    return root


def hestdata_command() -> str:
    """How to call ``hestdata`` from the user's shell: its name where the one on PATH is this installation's,
    else the full path of this environment's script (``nox -s demo`` installs into ``.nox/demo/bin``)."""
    import shutil
    import sys

    here = Path(sys.prefix) / ("Scripts" if sys.platform == "win32" else "bin") / "hestdata"
    on_path = shutil.which("hestdata")
    if on_path and (not here.exists() or Path(on_path).resolve() == here.resolve()):
        return "hestdata"
    return str(here) if here.exists() else f"{sys.executable} -m hestdata.cli"


def next_steps(root: Path) -> str:
    """What a user would run next on the demo root (with a ``hestdata`` their shell can find)."""
    h = hestdata_command()
    sid = next((p.name.removesuffix(".zarr") for p in sorted((root / "samples").glob("*.zarr"))), "ID")
    return "\n".join([
        "next:",
        f"  {h} info {root}                      # the catalog",
        f"  {h} validate {root}                  # every file against its manifest and the specification",
        f"  {h} plot {root} {sid}   # a figure of one sample",
        f"  {h} bench leaderboard {root}         # the leaderboard as Markdown and HTML",
        f"  {h} convert --help                   # convert your own data (one command per technology)",
        f"  {h} download hest1k ROOT --where \"organ = 'Bowel'\" --dry-run   # HEST-1k by query (docs/hest1k.md)",
    ])


def benchmark_baselines(root: Path) -> str:
    """Run the demo expression task for the two weight-free baselines; the leaderboard as Markdown."""
    from hestdata.bench.leaderboard import read, render_markdown
    from hestdata.bench.runner import run_benchmark

    for enc in ("color-stats", "random-vit-s16"):
        run_benchmark(root, enc, "demo_expression")
    return ("leaderboard (demo_expression: leave-one-patient-out Pearson r over the 20 most variable genes; "
            "weight-free baselines on synthetic data):\n" + render_markdown(read(root)))


def hestdata_patches(path: Path) -> bool:
    from hestdata.store.sample import read_metadata

    return bool(read_metadata(path).qc.patches)


def loader_epoch(root: Path, batch_size: int = 16) -> str:
    """Iterate one epoch of ``root`` through ``PatchDataset`` + ``make_loader`` (CPU decode); a summary line."""
    import time

    from hestdata.loader import PatchDataset, make_loader

    ds = PatchDataset(root, decode="cpu")
    loader = make_loader(ds, batch_size=batch_size, num_workers=0, seed=0)
    t0 = time.perf_counter()
    n, shape = 0, None
    for batch in loader:
        n += len(batch["index"])
        shape = tuple(batch["image"].shape[1:])
    dt = time.perf_counter() - t0
    return (f"loader: one epoch of {n} pairs (image {shape} uint8 + {len(ds.genes)} genes, log1p) "
            f"in {dt:.2f} s = {n / dt:,.0f} pairs/s (1 process, CPU decode; tiny demo, start-up dominated)")
