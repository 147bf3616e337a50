"""Builds the archived format-2 root of hestdata 0.2.0 (run with hestdata at commit 7822fe1): its samples list
their JPEG patch arrays in the consolidated metadata, so zarr cannot open them without hestdata."""
# run from the repository root with PYTHONPATH=. (tests.synth: the suite's synthetic sample)
from pathlib import Path

import numpy as np

import hestdata
from hestdata.model import RasterImage
from tests.synth import synthetic_sample


def smooth(s):  # as make_format1.py: smooth tissue compresses to a small archive
    img = s.image.raster.array.copy()
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    tissue = img[..., 0] < 230
    wave = (150 + 30 * np.sin(xx / 37.0) * np.cos(yy / 53.0)).astype(np.uint8)
    for c, off in enumerate((20, -10, 25)):
        img[..., c] = np.where(tissue & (img[..., c] > 0), np.clip(wave.astype(int) + off, 0, 255), img[..., c])
    s.image = RasterImage(img, Path("synthetic.png"), "fullres")
    return s


hestdata.convert(smooth(synthetic_sample("v020_a", n=8)), "root2", patches=["64px_0.5um"],
                 metadata={"organ": "breast", "patient": "P1", "cohort": "arch2"})
hestdata.convert(smooth(synthetic_sample("v020_b", n=12, seed=1)), "root2", patches=["64px_0.5um", "32px_1um"],
                 metadata={"organ": "breast", "patient": "P2", "cohort": "arch2"})
# then: tar -cJf format2_v020_root.tar.xz root2
