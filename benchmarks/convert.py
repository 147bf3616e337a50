"""Conversion cost of one her2st section, side by side with a HEST-style pipeline, each in a fresh process.

    python benchmarks/convert.py [--section C2] [--repeats 3]

* ``hestdata``: ``read_st`` + ``convert`` — counts, spots, the full-resolution H&E, Otsu tissue, 224 px
  patches at 0.5 µm/px, and the whole store (image pyramid, shapes, table, sharded JPEG patches, catalog,
  manifest).
* ``hest-style``: what HEST-Library does for the same section (ANCHORS.md): pandas counts, the whole image
  decoded with PIL, Otsu on a thumbnail (scikit-image), 224 px patches (crop + bilinear resize) dumped to an
  HDF5 ``img``/``coords``/``barcode`` file. It writes no pyramid and no store, so it is a lower bound on HEST.

Prints wall time (incl. imports) and peak RSS of each, their ratios, and the ratio to HEST itself as measured
in ANCHORS.md (6.2 s, 1.4 GiB on this kind of machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data")) / "st_legacy" / "her2st"
IMAGES = {"B4": "B/B4/BT10737_D2_HE.jpg", "C2": "C/C2/5714_HE_BT_C2.jpg", "C3": "C/C3/5714_HE_BT_D1.jpg"}
HEST_MEASURED = {"seconds": 6.2, "peak_rss_mib": 1.4 * 1024}

CHILD = r'''
import json, resource, sys, time
t0 = time.perf_counter()
mode, counts, spots, image, out = sys.argv[1:6]
if mode == "hestdata":
    import hestdata
    s = hestdata.read_st(counts, spots=spots, image=image, sample_id="bench")
    hestdata.convert(s, out)
else:
    import h5py, numpy as np, pandas as pd
    from PIL import Image
    from skimage.filters import threshold_otsu
    Image.MAX_IMAGE_PIXELS = None
    cnt = pd.read_csv(counts, sep="\t", index_col=0)
    sp = pd.read_csv(spots, sep="\t")
    sp.index = sp["x"].astype(str) + "x" + sp["y"].astype(str)
    sp = sp.loc[cnt.index]
    img = np.asarray(Image.open(image).convert("RGB"))
    thumb = np.asarray(Image.fromarray(img).reduce(16).convert("L"), dtype=float)
    mask = thumb < threshold_otsu(thumb)
    mpp = 0.69
    win = round(224 * 0.5 / mpp)
    patches = []
    for x, y in zip(sp["pixel_x"], sp["pixel_y"]):
        x0, y0 = int(x - win // 2), int(y - win // 2)
        crop = Image.fromarray(img[max(y0, 0):y0 + win, max(x0, 0):x0 + win])
        patches.append(np.asarray(crop.resize((224, 224), Image.BILINEAR)))
    with h5py.File(out + ".h5", "w") as f:
        f["img"] = np.stack(patches)
        f["coords"] = np.column_stack([sp["pixel_x"], sp["pixel_y"]]).astype(np.int64)
        f["barcode"] = np.array(list(cnt.index), dtype="S")
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def run_once(mode: str, section: str) -> dict[str, float]:
    counts = DATA / "ST-cnts" / f"{section}.tsv.gz"
    spots = DATA / "ST-spotfiles" / f"{section}_selection.tsv"
    image = DATA / "ST-imgs" / IMAGES[section]
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, mode, str(counts), str(spots),
                              str(image), str(Path(tmp) / "root")], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", default="C2", choices=sorted(IMAGES))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    res: dict[str, dict[str, float]] = {}
    for mode in ("hestdata", "hest-style"):
        runs = [run_once(mode, args.section) for _ in range(args.repeats)]  # alternate would be fairer; see RESULTS
        res[mode] = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "peak_rss_mib")}
    h, b = res["hestdata"], res["hest-style"]
    print(f"her2st {args.section}, median of {args.repeats} fresh processes each")
    print(f"{'pipeline':<26}{'seconds':>10}{'peak RSS MiB':>15}")
    for name, r in (("hestdata (full store)", h), ("hest-style (no store)", b), ("HEST v1.1.1 (ANCHORS)", HEST_MEASURED)):
        print(f"{name:<26}{r['seconds']:>10.2f}{r['peak_rss_mib']:>15.0f}")
    print(f"time  hestdata / hest-style = {h['seconds'] / b['seconds']:.2f}   "
          f"hestdata / HEST = {h['seconds'] / HEST_MEASURED['seconds']:.2f}  (target <= 1.0)")
    print(f"peak  hestdata / hest-style = {h['peak_rss_mib'] / b['peak_rss_mib']:.2f}   "
          f"hestdata / HEST = {h['peak_rss_mib'] / HEST_MEASURED['peak_rss_mib']:.2f}  (target <= 0.5)")


if __name__ == "__main__":
    main()
