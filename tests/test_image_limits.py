"""Declared image sizes are checked before anything is allocated: a header claiming a terapixel is refused with
the numbers, and a JPEG/PNG (decoded whole) above its own cap is refused with the way out."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from hestdata.errors import InputError
from hestdata.raster import ArrayRaster
from hestdata.sources.images import open_raster


def test_a_tiff_above_the_limit_is_refused_with_its_numbers(tmp_path, monkeypatch):
    """The limit (50 gigapixels by default; a header claiming a terapixel is refused at once) applies to the
    declared size, read from the header before any pixel; here lowered so that a small real file crosses it."""
    p = tmp_path / "img.tif"
    tifffile.imwrite(p, np.zeros((300, 400, 3), np.uint8), photometric="rgb", tile=(64, 64))
    monkeypatch.setenv("HESTDATA_MAX_IMAGE_PIXELS", "100000")
    with pytest.raises(InputError, match=r"400 x 300 px \(0.0 gigapixels\), above the limit.*HESTDATA_MAX_IMAGE"):
        open_raster(p)
    monkeypatch.delenv("HESTDATA_MAX_IMAGE_PIXELS")
    assert open_raster(p).width_px == 400


def test_whole_decoded_formats_have_their_own_cap(tmp_path, monkeypatch):
    from PIL import Image

    png = tmp_path / "big.png"
    Image.new("RGB", (300, 200), "white").save(png)
    jpg = tmp_path / "big.jpg"
    Image.new("RGB", (300, 200), "white").save(jpg)
    monkeypatch.setenv("HESTDATA_MAX_DECODED_PIXELS", "50000")
    for p in (png, jpg):
        with pytest.raises(InputError, match="decoded whole.*tiled pyramidal TIFF"):
            open_raster(p)
    monkeypatch.setenv("HESTDATA_MAX_DECODED_PIXELS", "60000")
    assert open_raster(jpg).width_px == 300  # under the cap: read as before
    monkeypatch.setenv("HESTDATA_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InputError, match="HESTDATA_MAX_IMAGE_PIXELS must be a number"):
        open_raster(jpg)


def test_metadata_strings_are_capped(tmp_path):
    import hestdata
    from tests.synth import synthetic_sample

    with pytest.raises(InputError, match=r"\['cohort'\] longer than 4096 characters \(cohort: 100,000\)"):
        hestdata.convert(synthetic_sample("s"), tmp_path / "r", metadata={"cohort": "x" * 100_000})
    assert not (tmp_path / "r").exists()


def test_declared_patch_counts_are_checked_before_anything_is_allocated(tmp_path):
    """A catalog row claiming 10^12 patches (a hostile remote) is refused by the dataset at once, naming the
    sample, instead of allocating a span per claimed shard."""
    from dataclasses import replace

    import polars as pl

    import hestdata
    from hestdata.errors import StoreError
    from hestdata.store.root import Root
    from tests.synth import synthetic_sample

    hestdata.convert(synthetic_sample("s", n=8), tmp_path / "r", patches=["32px_2um"], min_tissue_fraction=0)
    r = Root.open(tmp_path / "r")
    for counts, shards, what in (([10**12], [8], "at most 100,000,000"), ([9_000], [8], "but the sample has")):
        bad = replace(r, catalog=r.catalog.with_columns(pl.Series("patch_counts", [counts]),
                                                         pl.Series("patch_shards", [shards])), _rows=None)
        with pytest.raises(StoreError, match=what):
            hestdata.PatchDataset(bad, patch="32px_2um", decode="cpu")
    assert len(hestdata.PatchDataset(r, patch="32px_2um", decode="cpu")) == 8


def test_png_decodes_once_into_one_array_and_equals_pillow(tmp_path):
    """8-bit RGB, RGBA and grey PNGs go straight into one numpy array (libpng through imagecodecs: ~1x the pixels
    at peak instead of Pillow's ~3x) and hold exactly Pillow's pixels; palette and 16-bit PNGs still go through
    Pillow; a truncated PNG is an InputError naming the file."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    cases = {"rgb": Image.fromarray(rgb), "rgba": Image.fromarray(np.dstack([rgb, rgb[..., :1]])),
             "grey": Image.fromarray(rgb[..., 0]), "palette": Image.fromarray(rgb).convert("P"),
             "grey16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)}
    for name, im in cases.items():
        p = tmp_path / f"{name}.png"
        im.save(p)
        r = open_raster(p)
        with Image.open(p) as ref:  # what the Pillow route gives, through the same raster
            ref = ref if ref.mode in ("RGB", "RGBA", "L", "I;16", "I") else ref.convert("RGB")
            want = ArrayRaster(np.asarray(ref), p).read(0, 61, 0, 83)
        np.testing.assert_array_equal(r.read(0, r.height_px, 0, r.width_px), want, err_msg=name)
        assert (r.height_px, r.width_px) == (61, 83), name
    import imagecodecs  # a 16-bit RGB PNG, which Pillow opens as 8-bit mode RGB: the Pillow route, as before

    p16 = tmp_path / "rgb16.png"
    p16.write_bytes(imagecodecs.png_encode(rgb.astype(np.uint16) * 257))
    with Image.open(p16) as ref:
        want = ArrayRaster(np.asarray(ref), p16).read(0, 61, 0, 83)
    np.testing.assert_array_equal(open_raster(p16).read(0, 61, 0, 83), want)
    bad = tmp_path / "cut.png"
    bad.write_bytes((tmp_path / "rgb.png").read_bytes()[:400])
    with pytest.raises(InputError, match="cut.png"):
        open_raster(bad)
