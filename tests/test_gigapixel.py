"""Gigapixel inputs convert in bounded memory: a 20k x 20k px tiled TIFF under an address-space limit that a
read-whole pipeline cannot meet (level 0 alone is 1.2 GB), and lazy rasters read exactly what they are asked."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import shared

SIDE_PX = 20_000
TILE_PX = 512
PIXEL_SIZE_UM = 0.5


def tissue_blocks() -> list[np.ndarray]:
    """Real H&E blocks (her2st C2 at its native resolution), 512 px, tissue only."""
    import simplejpeg

    img = simplejpeg.decode_jpeg(shared("st_legacy", "her2st", "ST-imgs", "C", "C2", "5714_HE_BT_C2.jpg").read_bytes())
    blocks = []
    for y in range(0, img.shape[0] - TILE_PX, TILE_PX):
        for x in range(0, img.shape[1] - TILE_PX, TILE_PX):
            b = img[y:y + TILE_PX, x:x + TILE_PX]
            if b.mean() < 200:
                blocks.append(np.ascontiguousarray(b))
    assert len(blocks) > 20
    return blocks


def write_mosaic(path: Path, side_px: int) -> None:
    """A JPEG-tiled TIFF of ``side_px``² made of real tissue blocks, written tile by tile (never whole)."""
    blocks = tissue_blocks()
    n = -(-side_px // TILE_PX)

    def tiles():
        for i in range(n):
            for j in range(n):
                yield blocks[(i * 7 + j * 3) % len(blocks)]

    res = 1e4 / PIXEL_SIZE_UM
    tifffile.imwrite(path, tiles(), shape=(side_px, side_px, 3), dtype=np.uint8, tile=(TILE_PX, TILE_PX),
                     photometric="rgb", compression="jpeg", resolution=(res, res), resolutionunit="CENTIMETER")


def spot_table(path: Path, side_px: int) -> None:
    """A hexagonal spot grid (every other row offset) at 200 µm pitch — twice Visium's, so the test cuts ~2,500
    patches rather than ~10,000: the memory bound is set by the image, not by the patch count — with Poisson
    counts, as an h5ad in px."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    pitch = 200 / PIXEL_SIZE_UM
    pts = [((c + 0.5 * (r % 2)) * pitch + pitch, r * pitch * np.sqrt(3) / 2 + pitch)
           for r in range(int(side_px / (pitch * np.sqrt(3) / 2)) - 2) for c in range(int(side_px / pitch) - 2)]
    xy = np.asarray(pts)
    rng = np.random.default_rng(0)
    genes = ["ACTB", "GAPDH", "ERBB2", "KRT8", "EPCAM", "VIM", "PTPRC", "CD74"]
    a = ad.AnnData(X=sp.csr_matrix(rng.poisson(3, (len(xy), len(genes))).astype(np.float32)),
                   obs=pd.DataFrame(index=[f"s{i}" for i in range(len(xy))]), var=pd.DataFrame(index=genes))
    a.obsm["spatial"] = xy
    a.obs["in_tissue"] = 1
    a.write_h5ad(path)


CHILD = r"""
import json, sys
import hestdata
h5ad, image, out = sys.argv[1:4]
s = hestdata.read_anndata(h5ad, image=image, sample_id="giga", pixel_size_um=0.5)
hestdata.convert(s, out, patches=["224px_0.5um"], workers=2)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))  # not ru_maxrss:
print(json.dumps({"peak_rss_mib": hwm / 1024}))  # Linux carries that across exec, from the parent
"""

PROBE = r"""
import resource, sys
import hestdata, hestdata.convert.spots, hestdata.sources.anndata_image, anndata, geopandas, zarr, tifffile, PIL.Image
print(int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize())
"""


def _limited(limit_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return apply


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")
def test_20k_tiff_converts_under_an_address_space_limit(tmp_path):
    image, h5ad = tmp_path / "mosaic.tif", tmp_path / "spots.h5ad"
    write_mosaic(image, SIDE_PX)
    spot_table(h5ad, SIDE_PX)
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    base = int(subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                              check=True).stdout.split()[-1])
    level0 = SIDE_PX * SIDE_PX * 3
    limit = base + int(0.9 * level0)  # imports + less than one copy of level 0
    out = subprocess.run([sys.executable, "-c", CHILD, str(h5ad), str(image), str(tmp_path / "root")], env=env,
                         capture_output=True, text=True, preexec_fn=_limited(limit), timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    import hestdata

    path = tmp_path / "root" / "samples" / "giga.zarr"
    meta = hestdata.read_metadata(path)
    assert (meta.image.width_px, meta.image.height_px) == (SIDE_PX, SIDE_PX)
    assert meta.pixel_size_um.value == pytest.approx(PIXEL_SIZE_UM)
    assert meta.pixel_size_um.embedded == pytest.approx(PIXEL_SIZE_UM)  # read from the TIFF tags, lazily
    n = meta.qc.patches["224px_0.5um"].n_patches
    assert n > 1000
    assert peak * 2 ** 20 < level0, f"peak RSS {peak:.0f} MiB is not below one copy of level 0"
    print(f"peak RSS {peak:.0f} MiB, level 0 {level0 / 2 ** 20:.0f} MiB, limit {(limit - base) / 2 ** 20:.0f} MiB over imports")
    # the store's level 0 is the TIFF's pixels, and patches are cut at the spot centres from it
    s = hestdata.open_sample(path)
    import zarr

    lvl0 = zarr.open_group(str(path), mode="r")["images"]["he"]["s0"]
    with tifffile.TiffFile(image) as tif:
        z = zarr.open(tif.series[0].aszarr(), mode="r")
        ref = z[9000:9512, 12000:12512]
    np.testing.assert_array_equal(np.moveaxis(lvl0[:, 9000:9512, 12000:12512], 0, -1), ref)
    g = s.patches("224px_0.5um")
    rows, centres = g["obs_index"][:], g["centers_um"][:]
    k = len(rows) // 2
    cx, cy = (centres[k] / PIXEL_SIZE_UM).round().astype(int)
    expect = np.moveaxis(lvl0[:, cy - 112:cy + 112, cx - 112:cx + 112], 0, -1).astype(float)
    got = g["images"][k].astype(float)
    assert np.abs(got - expect).mean() < 6  # JPEG q90 of the same pixels (resampling at scale 1 is exact)


def test_tiff_raster_reads_only_what_is_asked(tmp_path):
    """Every TIFF layout (tiled, strips, one strip, planar, compressed) reads the same region; out-of-image parts
    of a window are zero; an overview never exceeds its size."""
    from hestdata.sources.images import open_raster

    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (700, 900, 3)).astype(np.uint8)
    layouts = {"flat": {}, "strips": {"rowsperstrip": 64}, "tiled": {"tile": (256, 256)},
               "deflate": {"tile": (256, 256), "compression": "zlib"}, "planar": {"planarconfig": "separate"},
               "one-compressed-strip": {"compression": "zlib", "rowsperstrip": 700}}
    for name, kw in layouts.items():
        p = tmp_path / f"{name}.tif"
        tifffile.imwrite(p, np.moveaxis(a, -1, 0) if name == "planar" else a, photometric="rgb", **kw)
        r = open_raster(p)
        assert (r.height_px, r.width_px) == (700, 900), name
        np.testing.assert_array_equal(r.read(10, 200, 30, 400), a[10:200, 30:400], err_msg=name)
        w = r.window(-5, 20, -3, 10)
        assert (w[:5] == 0).all() and (w[:, :3] == 0).all(), name
        np.testing.assert_array_equal(w[5:, 3:], a[:20, :10], err_msg=name)
        assert max(r.overview(100).shape[:2]) <= 100 + 9, name


def test_truncated_contiguous_tiff_is_an_error_naming_the_file(tmp_path):
    from hestdata.errors import InputError
    from hestdata.sources.images import open_raster

    p = tmp_path / "cut.tif"
    tifffile.imwrite(p, np.full((400, 300, 3), 120, np.uint8), photometric="rgb")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    r = open_raster(p)
    with pytest.raises(InputError) as e:
        r.read(300, 400, 0, 300)
    assert "cut.tif" in str(e.value)


def test_parallel_downsample_equals_one_call():
    from concurrent.futures import ThreadPoolExecutor

    from hestdata.curation.pyramid import downsample2x, downsample2x_parallel

    rng = np.random.default_rng(2)
    for shape in ((7, 5001, 3), (64, 8193, 3), (33, 9000, 2)):
        a = rng.integers(0, 65535 if shape[2] == 2 else 255, shape).astype(np.uint16 if shape[2] == 2 else np.uint8)
        with ThreadPoolExecutor(3) as pool:
            np.testing.assert_array_equal(downsample2x_parallel(a, pool, 3), downsample2x(a))
