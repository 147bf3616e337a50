"""Conversion at gigapixel scale: time and peak RSS per image size, hestdata against a read-whole pipeline in the
HEST style, each run in a fresh process, all in one run, printed as ratios.

    python benchmarks/convert_scale.py [--sizes 10000 30000 60000] [--read-whole-max 30000] [--workdir DIR]

Inputs are built here from real tissue — 512 px blocks of the shared her2st sections and of CMU-1-Small-Region,
at their native resolution, laid out as a mosaic; no synthetic noise — as two TIFFs per size: *pyramidal*
(JPEG-compressed 512 px tiles with 2x SubIFD levels, like HEST-1k's ``wsis/*.tif``) and *flat* (one level,
uncompressed 64-row strips, like a microscope export). The declared pixel size is 0.25 µm/px (Visium HD / Xenium
H&E); a Visium-like grid of 55 µm spots at 100 µm pitch (at most 78 x 64) is centred on the image, with Poisson
counts for eight genes.

* ``hestdata``: ``read_anndata`` + ``convert`` (224 px patches at 0.5 µm/px, the whole store), ``--workers`` =
  all cores.
* ``read-whole``: what HEST-Library does (ANCHORS.md): the image decoded whole with tifffile, Otsu on a
  thumbnail, 224 px patches cut at the spots (crop + bilinear resize) into an HDF5 ``img``/``coords`` file, and a
  pyramidal JPEG TIFF written from the in-memory image (HEST's ``save`` writes ``wsis/<id>.tif``). It stores no
  table, shapes or catalog, so its time is a lower bound on HEST's.
* the patch stage alone, on the store the 30k (or largest) run wrote: rendering + JPEG encoding of every patch
  pinned to 1 core, then to all cores (CPU affinity) — the parallel rate against ``cores x`` the 1-core rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data"))
TILE_PX = 512
PIXEL_SIZE_UM = 0.25
CORES = len(os.sched_getaffinity(0))


def tissue_blocks() -> list[np.ndarray]:
    """512 px tissue blocks (mean grey < 200) from the her2st JPEGs and CMU-1-Small-Region."""
    import simplejpeg
    import tifffile

    paths = sorted((DATA / "st_legacy/her2st/ST-imgs").rglob("*.jpg")) + [DATA / "wsi" / "CMU-1-Small-Region.svs"]
    blocks = []
    for p in paths:  # one image at a time: the parent's memory is not what is measured, but keep it small
        img = simplejpeg.decode_jpeg(p.read_bytes()) if p.suffix == ".jpg" else tifffile.imread(p)[..., :3]
        for y in range(0, img.shape[0] - TILE_PX, TILE_PX):
            for x in range(0, img.shape[1] - TILE_PX, TILE_PX):
                b = img[y:y + TILE_PX, x:x + TILE_PX]
                if b.mean() < 200:
                    blocks.append(np.ascontiguousarray(b))
    return blocks


def _block(blocks: list[np.ndarray], i: int, j: int) -> np.ndarray:
    return blocks[(i * 7 + j * 3 + (i * j) % 5) % len(blocks)]


def _tiles(blocks: list[np.ndarray], n: int, step: int):
    """Row-major tiles of the mosaic at 1/step scale (each block reduced the same way at every level)."""
    from PIL import Image

    for i in range(n):
        for j in range(n):
            b = _block(blocks, i, j)
            yield b if step == 1 else np.asarray(Image.fromarray(b).reduce(step))


def _strips(blocks: list[np.ndarray], n: int, rows: int):
    for i in range(n):
        band = np.concatenate([_block(blocks, i, j) for j in range(n)], axis=1)
        for r in range(0, TILE_PX, rows):
            yield band[r:r + rows]


def build_tiffs(folder: Path, side: int, blocks: list[np.ndarray]) -> dict[str, Path]:
    """The pyramidal and the flat TIFF of ``side``² px (rounded down to whole blocks), built once per folder."""
    import tifffile

    n = side // TILE_PX
    side = n * TILE_PX
    res = (1e4 / PIXEL_SIZE_UM, 1e4 / PIXEL_SIZE_UM)
    pyr, flat = folder / f"pyramidal_{side}.tif", folder / f"flat_{side}.tif"
    if not pyr.exists():
        levels = [s for s in (2, 4, 8, 16, 32) if side // s >= 1024]
        tmp = pyr.with_suffix(".part")
        with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
            tw.write(_tiles(blocks, n, 1), shape=(side, side, 3), dtype=np.uint8, tile=(TILE_PX, TILE_PX),
                     photometric="rgb", compression="jpeg", subifds=len(levels), resolution=res,
                     resolutionunit="CENTIMETER", maxworkers=CORES)
            for s in levels:
                tw.write(_tiles(blocks, n, s), shape=(side // s, side // s, 3), dtype=np.uint8,
                         tile=(TILE_PX // s,) * 2, photometric="rgb", compression="jpeg", subfiletype=1,
                         maxworkers=CORES)
        tmp.rename(pyr)
    if not flat.exists():
        tmp = flat.with_suffix(".part")
        tifffile.imwrite(tmp, _strips(blocks, n, 64), shape=(side, side, 3), dtype=np.uint8, photometric="rgb",
                         rowsperstrip=64, resolution=res, resolutionunit="CENTIMETER", bigtiff=True)
        tmp.rename(flat)
    return {"pyramidal": pyr, "flat": flat}


def build_spots(path: Path, side: int) -> int:
    """A Visium-like grid (100 µm pitch, odd rows offset, at most 78 x 64) centred on the image, as an h5ad
    with ``obsm['spatial']`` in px; returns the number of spots."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    pitch, row_pitch = 100 / PIXEL_SIZE_UM, 100 / PIXEL_SIZE_UM * np.sqrt(3) / 2
    n_cols, n_rows = min(78, int(side / pitch) - 1), min(64, int(side / row_pitch) - 1)
    x0, y0 = (side - (n_cols - 0.5) * pitch) / 2, (side - (n_rows - 1) * row_pitch) / 2
    xy = np.array([(x0 + (c + 0.5 * (r % 2)) * pitch, y0 + r * row_pitch) for r in range(n_rows) for c in range(n_cols)])
    genes = ["ACTB", "GAPDH", "ERBB2", "KRT8", "EPCAM", "VIM", "PTPRC", "CD74"]
    rng = np.random.default_rng(0)
    a = ad.AnnData(X=sp.csr_matrix(rng.poisson(3, (len(xy), len(genes))).astype(np.float32)),
                   obs=pd.DataFrame({"in_tissue": 1}, index=[f"s{i}" for i in range(len(xy))]),
                   var=pd.DataFrame(index=genes))
    a.obsm["spatial"] = xy
    a.write_h5ad(path)
    return len(xy)


CHILD = r"""
import json, os, sys, time
mode, h5ad, image, out, cores = sys.argv[1:6]
os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:int(cores)]))
t0 = time.perf_counter()
if mode == "hestdata":
    import hestdata
    s = hestdata.read_anndata(h5ad, image=image, sample_id="scale", pixel_size_um=0.25)
    hestdata.convert(s, out, patches=["224px_0.5um"], workers=int(cores))
    n_files = sum(len(f) for _, _, f in os.walk(os.path.join(out, "samples", "scale.zarr")))
elif mode == "read-whole":
    import anndata as ad, h5py, numpy as np, tifffile
    from PIL import Image
    from skimage.filters import threshold_otsu
    Image.MAX_IMAGE_PIXELS = None
    xy = ad.read_h5ad(h5ad).obsm["spatial"]
    img = tifffile.imread(image, series=0, level=0)
    thumb = np.asarray(Image.fromarray(img[::32, ::32]).convert("L"), dtype=float)
    mask = thumb < threshold_otsu(thumb)
    win = round(224 * 0.5 / 0.25)
    patches = np.empty((len(xy), 224, 224, 3), np.uint8)
    for i, (x, y) in enumerate(xy):
        x0, y0 = int(x - win // 2), int(y - win // 2)
        patches[i] = np.asarray(Image.fromarray(img[y0:y0 + win, x0:x0 + win]).resize((224, 224), Image.BILINEAR))
    os.makedirs(out, exist_ok=True)
    with h5py.File(os.path.join(out, "patches.h5"), "w") as f:
        f["img"] = patches
        f["coords"] = xy.astype(np.int64)
    levels = []
    cur = img
    while min(cur.shape[:2]) // 2 >= 1024:
        cur = np.asarray(Image.fromarray(cur).reduce(2))
        levels.append(cur)
    with tifffile.TiffWriter(os.path.join(out, "wsi.tif"), bigtiff=True) as tw:
        tw.write(img, tile=(512, 512), compression="jpeg", subifds=len(levels), photometric="rgb")
        for lv in levels:
            tw.write(lv, tile=(512, 512), compression="jpeg", subfiletype=1, photometric="rgb")
elif mode == "patch-stage":
    import zarr
    from hestdata.curation.patches import PatchPlan, render_patches
    from hestdata.raster import ZarrRaster
    from hestdata.store.sample import SampleWriter
    from hestdata.units import PatchGeometry
    src = zarr.open_group(image, mode="r")
    g = src["hestdata"]["patches"]["224px_0.5um"]
    centres, lvl = g["centers_um"][:], int(g.attrs["source_level"])
    lps = 0.25 * 2 ** lvl
    plan = PatchPlan(PatchGeometry.parse("224px_0.5um"), g["obs_index"][:], centres, lvl, lps, centres / lps,
                     224 * 0.5 / lps, None)
    level = ZarrRaster(src["images"]["he"][f"s{lvl}"])
    t0 = time.perf_counter()
    with SampleWriter(out, "stage") as sw:  # render + JPEG-encode + write, never committed
        sw.write_patches("p", len(centres), 224, render_patches(plan, level, 256, int(cores)),
                         plan.obs_rows, centres, {}, 90)
    n = len(centres)
elapsed = time.perf_counter() - t0
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report its parent's peak
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": elapsed, "peak_rss_mib": hwm / 1024,
                  **({"patches": n} if mode == "patch-stage" else {}),
                  **({"files": n_files} if mode == "hestdata" else {})}))
"""


def run(mode: str, h5ad: Path, image: Path, cores: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=image.parent) as tmp:
        out = Path(tmp) / "out"
        r = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, mode, str(h5ad), str(image), str(out),
                            str(cores)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{mode} on {image.name} failed:\n{r.stderr[-2000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        if mode == "hestdata" and image.name.startswith("pyramidal"):
            keep = image.parent / f"store_{image.stem}"
            shutil.rmtree(keep, ignore_errors=True)
            (out / "samples" / "scale.zarr").rename(keep)
        return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 60_000])
    ap.add_argument("--read-whole-max", type=int, default=30_000,
                    help="largest size for the read-whole pipeline (it needs ~2.5x the image in RAM)")
    ap.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "scale")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    blocks = tissue_blocks()
    print(f"{len(blocks)} real tissue blocks of {TILE_PX} px; {CORES} cores; pixel size {PIXEL_SIZE_UM} µm/px")
    print(f"{'size':>7} {'layout':<10} {'spots':>6} {'pipeline':<11} {'seconds':>8} {'peak MiB':>9}"
          f" {'files':>6} {'time ratio':>11} {'RSS ratio':>10}")
    stage_store = None
    for side in args.sizes:
        tiffs = build_tiffs(args.workdir, side, blocks)
        h5ad = args.workdir / f"spots_{side}.h5ad"
        n_spots = build_spots(h5ad, (side // TILE_PX) * TILE_PX)
        for layout, image in tiffs.items():
            h = run("hestdata", h5ad, image, CORES)
            b = run("read-whole", h5ad, image, CORES) if side <= args.read_whole_max else None
            for name, r in (("hestdata", h), ("read-whole", b)):
                if r is None:
                    continue
                ratio = (f"{h['seconds'] / b['seconds']:>11.2f} {h['peak_rss_mib'] / b['peak_rss_mib']:>10.2f}"
                         if b and name == "hestdata" else "")
                files = r.get("files", "")  # the sample store's files (goal at 30k²: <= 300)
                print(f"{side:>7} {layout:<10} {n_spots:>6} {name:<11} {r['seconds']:>8.1f} "
                      f"{r['peak_rss_mib']:>9.0f} {files:>6} {ratio}", flush=True)
        if side <= 30_000 or stage_store is None:
            stage_store = args.workdir / f"store_{tiffs['pyramidal'].stem}"
    if stage_store is not None:
        one = run("patch-stage", h5ad, stage_store, 1)
        many = run("patch-stage", h5ad, stage_store, CORES)
        r1, rn = one["patches"] / one["seconds"], many["patches"] / many["seconds"]
        print(f"patch stage ({stage_store.name}, {one['patches']} patches, render + JPEG): 1 core {r1:.0f}/s, "
              f"{CORES} cores {rn:.0f}/s = {rn / r1:.2f}x = {rn / r1 / CORES:.2f} x cores x 1-core rate "
              f"(goal >= 0.7)")


if __name__ == "__main__":
    main()
