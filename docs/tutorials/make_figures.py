"""Figures of the slide-level and cell-level tutorials, made from the shared her2st sections.

    python docs/tutorials/make_figures.py [--out DIR] [--explain-patches N]

Writes ``docs/figures/`` (or ``DIR``; JPEG, at most 1200 px a side), every figure with a title, µm scale bar and
legend or colour bar: ``sample_C3.jpg`` (``hestdata plot``: the section with its spots coloured by ERBB2 and a
patch gallery), ``grid_B4.jpg`` (a 512px_0.5um feature grid's tissue cells over the section),
``labels_C3.jpg`` (the section's expression-cluster labels joined at conversion, one colour a label),
``cell_crops_C3.jpg`` (crops around nuclei found by a small haematoxylin-threshold "segmentation plugin"),
``explain_C3_patch.jpg`` and ``explain_C3_mosaic.jpg`` (integrated-gradients maps of an ERBB2 ridge head on a
per-pixel colour encoder, held out on C3; all patches unless ``--explain-patches``), and the pretraining tutorial's
``pretrain_curves.jpg``, ``pretrain_matrix.jpg`` and ``pretrain_recall.jpg`` (the built-in ``her2st_pretrain``
task: patient C trains, B4 is held out; ``--pretrain-encoder`` for ``--pretrain-epochs``).
``tests/test_docs_figures.py`` runs it at a small size, so the figures cannot rot.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data")) / "st_legacy" / "her2st"
OUT = REPO / "docs" / "figures"
LABELS = DATA.parent / "her2st_annotated" / "ST-cluster" / "lbl"
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


def save_figure(png: Path, out: Path, name: str) -> Path:
    """A rendered figure as a JPEG of at most 1200 px a side."""
    from PIL import Image

    im = Image.open(png).convert("RGB")
    im.thumbnail((1200, 1200))
    path = out / f"{name}.jpg"
    im.save(path, quality=88)
    return path


def grid_figure(root: Path, grid: object, png: Path) -> Path:
    """The grid's tissue cells (kept for the encoder) outlined over the section, in µm with a scale bar."""
    import zarr
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    import hestdata
    from hestdata.plot.style import pyplot, save, scale_bar

    path = root / "samples" / "her2st_B4.zarr"
    he = zarr.open_group(str(path), mode="r")["images"]["he"]
    thumb = np.moveaxis(he["s3"][:], 0, -1)
    ps = hestdata.read_metadata(path).pixel_size_um.value * 8
    cell = 256.0  # 512 px at 0.5 µm/px
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(thumb, extent=(0, thumb.shape[1] * ps, thumb.shape[0] * ps, 0))
    kept = np.argwhere(grid.mask)
    ax.add_collection(PatchCollection([Rectangle((c * cell, r * cell), cell, cell) for r, c in kept],
                                      facecolor="none", edgecolor="#1a9850", linewidth=0.8))
    from matplotlib.lines import Line2D

    ax.legend(handles=[Line2D([], [], marker="s", ls="", mfc="none", color="#1a9850",
                              label=f"grid cell with tissue ({len(kept)} of {grid.mask.size})")], loc="upper right")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    scale_bar(ax, thumb.shape[1] * ps)
    ax.set_title(f"her2st_B4: {grid.geometry} feature grid ({grid.cell_um:.0f} µm cells), shown at {ps:.2f} µm/px")
    return save(fig, png)


def crops_figure(crops: np.ndarray, png: Path) -> Path:
    """A sheet of cell crops (64 px at 0.5 µm/px) with a scale bar."""
    from hestdata.plot.style import gallery, pyplot, save, scale_bar

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(12, 4.6))
    ax.imshow(gallery(crops, 12, gap_px=2))
    ax.set_axis_off()
    scale_bar(ax, 64 * 0.5 * 2, units_per_um=2.0)
    ax.set_title(f"her2st_C3: {len(crops)} cell crops (64 px at 0.5 µm/px = 32 µm) around segmented nuclei")
    return save(fig, png)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--explain-patches", type=int, default=0, help="0: every patch of C3")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="her2st sections to convert (B4 and C3 are drawn; C2 only trains the explained head)")
    ap.add_argument("--grid", default="512px_0.5um",
                    help="feature-grid geometry of grid_B4.jpg (the test draws 128px_2um: the same 256 µm cells, "
                         "16x fewer pixels to render)")
    ap.add_argument("--pretrain-encoder", default="random-vit-s16",
                    help="image encoder of the pretraining figures (the test uses color-stats)")
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    chosen = [x.strip() for x in args.sections.split(",")]
    if not {"B4", "C3"} <= set(chosen) <= set(SECTIONS):
        sys.exit(f"--sections must include B4 and C3, from {sorted(SECTIONS)}")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hestdata-figures-") as t:  # conversions and runs: removed after
        make(args, chosen, out, Path(t))


def make(args: argparse.Namespace, chosen: list[str], out: Path, tmp: Path) -> None:
    """Every figure into ``out`` from the ``chosen`` sections, working in ``tmp``."""
    import hestdata
    from hestdata.bench.encoders import from_module
    from hestdata.bench.explain import explain_sample, fit_head
    from hestdata.bench.grid import embed_grid
    from hestdata.plot import plot_sample
    from hestdata.sources.registry import get_source

    root = tmp / "root"
    for sec, (img, patient) in ((k, SECTIONS[k]) for k in chosen):
        inputs = {"counts": DATA / "ST-cnts" / f"{sec}.tsv.gz", "spots": DATA / "ST-spotfiles" / f"{sec}_selection.tsv",
                  "image": DATA / "ST-imgs" / img}
        if sec == "C3":
            inputs["cells"] = nuclei_csv(inputs["image"], tmp / "nuclei.csv", (3000, 3000, 4200, 4200))
            inputs["labels"] = LABELS / "C3-cluster-annotation.tsv.gz"  # expression-cluster labels (docs/labels.md)
        s = get_source("st").read(inputs, sample_id=f"her2st_{sec}")
        hestdata.convert(s, root, metadata={"cohort": "her2st", "patient": patient},
                         options={"cell_patches": ["64px_0.5um"]} if sec == "C3" else None)
    save_figure(plot_sample(root, "her2st_C3", tmp / "sample.png", gene="ERBB2", patches="224px_0.5um"), out,
                "sample_C3")
    save_figure(plot_sample(root, "her2st_C3", tmp / "labels.png", label="label"), out, "labels_C3")

    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    enc = from_module(net, "pixel-colour", input_size=None, mean=None, std=None)
    g = embed_grid(root, enc, ["her2st_B4"], grid=args.grid, cache_dir=tmp / "c")["her2st_B4"]
    save_figure(grid_figure(root, g, tmp / "grid.png"), out, "grid_B4")
    crops = hestdata.open_sample(root / "samples" / "her2st_C3.zarr").patches("cells-64px_0.5um")["images"][:48]
    save_figure(crops_figure(np.asarray(crops), tmp / "crops.png"), out, "cell_crops_C3")
    # explanation maps of an ERBB2 head, held out on C3
    ids = [f"her2st_{k}" for k in chosen]
    head = fit_head(root, enc, ids, "224px_0.5um", gene="ERBB2", exclude="her2st_C3")
    files = explain_sample(root, enc, "her2st_C3", "224px_0.5um", tmp / "maps", head=head, n=args.explain_patches,
                           steps=16)
    save_figure(files[0], out, "explain_C3_patch")
    save_figure(files[-1], out, "explain_C3_mosaic")
    from hestdata.bench.pretrain import pretrain

    run = pretrain(root, "her2st_pretrain", tmp / "pretrain", image_encoder=args.pretrain_encoder,
                   epochs=args.pretrain_epochs, leaderboard=False)
    for name, fig in (("pretrain_curves", "curves"), ("pretrain_matrix", "retrieval_matrix"),
                      ("pretrain_recall", "recall")):
        save_figure(run.out / "figures" / f"{fig}.png", out, name)
    print("\n".join(str(p) for p in sorted(out.glob("*.jpg"))))



if __name__ == "__main__":
    main()
