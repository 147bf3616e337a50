"""Figures of the slide-level and cell-level tutorials, made from the shared her2st sections.

    python docs/tutorials/make_figures.py

Writes ``docs/figures/`` (JPEG, at most 1200 px a side): ``grid_B4.jpg`` (a 512px_0.5um feature grid's tissue mask over the section),
``cell_crops_C3.jpg`` (crops around nuclei found by a small haematoxylin-threshold "segmentation plugin"),
``explain_C3_patch.jpg`` and ``explain_C3_mosaic.jpg`` (integrated-gradients maps of an ERBB2 ridge head on a
per-pixel colour encoder, held out on C3).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data")) / "st_legacy" / "her2st"
OUT = REPO / "docs" / "figures"
SECTIONS = {"B4": ("B/B4/BT10737_D2_HE.jpg", "B"), "C2": ("C/C2/5714_HE_BT_C2.jpg", "C"),
            "C3": ("C/C3/5714_HE_BT_D1.jpg", "C")}


def nuclei_csv(image: Path, dest: Path, box: tuple[int, int, int, int]) -> Path:
    """A stand-in for a nucleus-segmentation plugin: haematoxylin (colour deconvolution) above its 90th
    percentile, connected components of 20–400 px, centroids written as x_px, y_px."""
    import simplejpeg
    from scipy import ndimage
    from skimage.color import rgb2hed

    x0, y0, x1, y1 = box
    img = simplejpeg.decode_jpeg(image.read_bytes())[y0:y1, x0:x1]
    h = rgb2hed(img)[..., 0]
    lab, n = ndimage.label(h > np.percentile(h, 90))
    sizes = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1))
    keep = [i + 1 for i, s in enumerate(sizes) if 20 <= s <= 400]
    cy, cx = np.asarray(ndimage.center_of_mass(np.ones_like(lab), lab, keep)).T
    dest.write_text("cell_id,x_px,y_px\n" + "".join(f"n{i},{x + x0:.2f},{y + y0:.2f}\n"
                                                     for i, (x, y) in enumerate(zip(cx, cy, strict=True))))
    return dest


def save_figure(image: np.ndarray, name: str) -> Path:
    from PIL import Image

    im = Image.fromarray(image)
    im.thumbnail((1200, 1200))
    path = OUT / f"{name}.jpg"
    im.save(path, quality=85)
    return path


def main() -> None:
    import hestdata
    from hestdata.bench.encoders import from_module
    from hestdata.bench.explain import explain_sample, fit_head
    from hestdata.bench.grid import embed_grid
    from hestdata.sources.registry import get_source

    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    root = tmp / "root"
    for sec, (img, patient) in SECTIONS.items():
        inputs = {"counts": DATA / "ST-cnts" / f"{sec}.tsv.gz", "spots": DATA / "ST-spotfiles" / f"{sec}_selection.tsv",
                  "image": DATA / "ST-imgs" / img}
        if sec == "C3":
            inputs["cells"] = nuclei_csv(inputs["image"], tmp / "nuclei.csv", (3000, 3000, 4200, 4200))
        s = get_source("st").read(inputs, sample_id=f"her2st_{sec}")
        hestdata.convert(s, root, metadata={"cohort": "her2st", "patient": patient},
                         options={"cell_patches": ["64px_0.5um"]} if sec == "C3" else None)

    import torch
    from PIL import Image

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    enc = from_module(net, "pixel-colour", input_size=None, mean=None, std=None)
    # grid mask over the B4 thumbnail
    g = embed_grid(root, enc, ["her2st_B4"], grid="512px_0.5um", cache_dir=tmp / "c")["her2st_B4"]
    import zarr

    he = zarr.open_group(str(root / "samples" / "her2st_B4.zarr"), mode="r")["images"]["he"]
    thumb = np.moveaxis(he["s3"][:], 0, -1).copy()
    ps = hestdata.read_metadata(root / "samples" / "her2st_B4.zarr").pixel_size_um.value * 8
    for r, c in np.argwhere(g.mask):
        a, b = int(r * 256 / ps), int(c * 256 / ps)
        e = int(256 / ps)
        thumb[a:a + e, b:b + 1] = thumb[a:a + 1, b:b + e] = (0, 160, 0)
    save_figure(thumb, "grid_B4")
    # a sheet of cell crops
    crops = hestdata.open_sample(root / "samples" / "her2st_C3.zarr").patches("cells-64px_0.5um")["images"][:48]
    sheet = np.concatenate([np.concatenate(list(crops[i * 12:(i + 1) * 12]), axis=1) for i in range(4)], axis=0)
    save_figure(sheet, "cell_crops_C3")
    # explanation maps of an ERBB2 head, held out on C3
    ids = ["her2st_B4", "her2st_C2", "her2st_C3"]
    head = fit_head(root, enc, ids, "224px_0.5um", gene="ERBB2", exclude="her2st_C3")
    files = explain_sample(root, enc, "her2st_C3", "224px_0.5um", tmp / "maps", head=head, n=0, steps=16)
    save_figure(np.asarray(Image.open(files[0]).convert("RGB")), "explain_C3_patch")
    save_figure(np.asarray(Image.open(files[-1]).convert("RGB")), "explain_C3_mosaic")
    print("\n".join(str(p) for p in sorted(OUT.glob("*.jpg"))))


if __name__ == "__main__":
    main()
