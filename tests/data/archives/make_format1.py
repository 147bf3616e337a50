"""Builds the archived format-1 root (run with hestdata at commit 73b7b0c, store format 1)."""
# run from the repository root with PYTHONPATH=. (tests.synth: the suite's synthetic sample)
from pathlib import Path

import numpy as np

import hestdata
from hestdata.model import RasterImage
from tests.synth import synthetic_sample


def smooth(s):
    img = s.image.raster.array.copy()
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    tissue = img[..., 0] < 230  # the synthetic tissue square and the spot crosses
    wave = (150 + 30 * np.sin(xx / 37.0) * np.cos(yy / 53.0)).astype(np.uint8)
    for c, off in enumerate((20, -10, 25)):
        img[..., c] = np.where(tissue & (img[..., c] > 0), np.clip(wave.astype(int) + off, 0, 255), img[..., c])
    s.image = RasterImage(img, Path("synthetic.png"), "fullres")
    return s


s = smooth(synthetic_sample("synth_a", n=8))
hestdata.convert(s, "root1", patches=["64px_0.5um"], metadata={"organ": "breast", "patient": "P1", "cohort": "arch"})
s = smooth(synthetic_sample("synth_b", n=12, seed=1))
hestdata.convert(s, "root1", patches=["64px_0.5um", "32px_1um"], metadata={"organ": "breast", "patient": "P2", "cohort": "arch"})

# Then, from the same folder (D = ../shared/data; map.csv = "channel,marker\n107Ag,-\n"):
#   hestdata convert xenium $D/xenium/sfe_jurkat_raji --out root1 --id jurkat_raji --pixel-size-um 1.7 \
#       --image-origin-um 1000,1000 --pseudospot-um 55 --meta cohort=arch
#   hestdata convert multiplex $D/multiplex/imc_bodenmiller/analysis/ometiff/20210305_NE_mockData2/\
#       20210305_NE_mockData2_s0_a1_ac.ome.tiff --panel $D/multiplex/imc_bodenmiller/analysis/cpout/panel.csv \
#       --mapping map.csv --out root1 --id imc_roi1 --patch 16px_1um --meta cohort=arch
#   hestdata convert wsi $D/wsi/boxes_pyramid_synthetic.tiff --out root1 --id boxes --pixel-size-um 0.5 --meta cohort=arch
#   tar -cJf format1_root.tar.xz root1
# format1_expected.json holds what that code read back (patch counts and pixel sums, counts, level-0 sums).
