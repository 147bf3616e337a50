"""White-cell-type classification on the shared BCCD blood smears (issue 29), converted both ways, and MIL over
fields of view as bags of cells.

    python benchmarks/bccd.py [--encoders color-stats random-vit-s16] [--work DIR] [--skip-mil] [--figures DIR]
                              [--finetune lora:8 --finetune-epochs 4 --finetune-folds 3]

``--figures docs/figures`` also writes the figures of docs/collections.md (the crops by class, the confusion matrix
of color-stats on the crops, the MIL ROC/PR curves) as JPEGs there.

1. **Crop folders** (``hematology/bccd_wbc_crops``, 351 single-WBC crops in class folders) → one collection sample
   (``convert images --item-kind cells``), folds by crop (``group_by: obs:path``; every crop is from a different
   image).
2. **Fields of view with VOC boxes** (``hematology/bccd``) → the WBC boxes cut with 25 % context
   (``--box-classes WBC``), labelled with the image's type from ``labels.csv`` where that is unambiguous: a
   single-class label and exactly one WBC box (the README's rule: 341 images). Folds by image.
3. **MIL**: every field of view as one sample holding all its boxed cells (RBC, WBC, platelets); its label is the
   image's WBC type; ABMIL and mean pooling, stratified folds. **There are no patient ids: a field of view stands
   in for a patient**, so this measures whether attention finds the one informative cell in a bag of ~15, not
   patient-level prediction.
4. **Fine-tuning** (``--finetune MODE``): the WBC crops converted one sample per image (``--group-by image``), the
   random-init ViT-S/16 fine-tuned (e.g. ``lora:8``) with early stopping on a validation split, beside its frozen
   linear probe on the same folds (by image).

Each classification is run for the weight-free encoders beside three baselines made here: the **majority class**
(each held-out item predicted as its training folds' most frequent class, scored with the task's metrics),
``constant`` (every item the same embedding: the balanced probe's scores are uniform, so it sits at chance) and
``mean-rgb`` (the three channel means: colour only). Classes with fewer items than folds (the 2–3 basophils) are
left out of scoring (``min_class_items: 5``, counted): a class absent from a training fold gets no score there,
and pooled out-of-fold scores then put even the constant encoder below chance. The pixel size is
unknown everywhere, recorded as such; patches are the item fitted to 224 px.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HEMA = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data")) / "hematology"
TYPES = ("NEUTROPHIL", "EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "BASOPHIL")
# the docs figures this script makes (docs/collections.md); docs/tutorials/make_figures.py makes the others
FIGURES = ("collection_crops.jpg", "collection_confusion.jpg", "collection_mil_roc.jpg")


def baseline_encoders() -> dict[str, object]:
    """The majority-class (constant) and colour-only (mean RGB) baselines, as encoders the harness takes."""
    from hestdata.bench.encoders import from_callable

    def constant(images):  # noqa: ANN001, ANN202
        return images.new_zeros((images.shape[0], 4), dtype=images.float().dtype)

    def mean_rgb(images):  # noqa: ANN001, ANN202
        return images.float().mean((2, 3)) / 255.0

    return {"constant": from_callable(constant, "constant", version="1"),
            "mean-rgb": from_callable(mean_rgb, "mean-rgb", version="1")}


def image_labels() -> dict[str, str | None]:
    """Image stem -> its WBC type where the label is one class (``NEUTROPHIL, NEUTROPHIL`` counts as two cells of
    one class, not one label), else None."""
    import pandas as pd

    lab = pd.read_csv(HEMA / "bccd" / "labels.csv")
    out: dict[str, str | None] = {}
    for i, c in zip(lab["Image"], lab["Category"], strict=True):
        parts = [p.strip() for p in str(c).split(",")] if isinstance(c, str) else []
        out[f"BloodImage_{int(i):05d}"] = parts[0] if len(parts) == 1 and parts[0] in TYPES else None
    return out


def wbc_boxes() -> dict[str, int]:
    import xml.etree.ElementTree as ET

    return {x.stem: sum(o.findtext("name") == "WBC" for o in ET.parse(x).getroot().findall("object"))
            for x in sorted((HEMA / "bccd" / "BCCD" / "Annotations").glob("*.xml"))}


def convert_all(work: Path, mil: bool) -> dict[str, Path]:
    import pandas as pd

    import hestdata

    def run(images: Path, root: Path, **kw: object) -> list[str]:
        if not (root / "hestdata.json").is_file():  # a --work folder of an earlier run: its roots are reused
            hestdata.convert_images(images, root, progress=False, **kw)
        from hestdata.store.root import Root

        return Root.open(root).ids

    labels, n_wbc = image_labels(), wbc_boxes()
    jpgs = sorted((HEMA / "bccd" / "BCCD" / "JPEGImages").glob("*.jpg"))
    unambiguous = {p.stem: labels.get(p.stem) if n_wbc.get(p.stem) == 1 else None for p in jpgs}
    pd.DataFrame({"path": [p.name for p in jpgs], "wbc_type": [unambiguous[p.stem] for p in jpgs]}).to_csv(
        work / "fov_manifest.csv", index=False)
    roots = {"crops": work / "crops", "fov_wbc": work / "fov_wbc", "fov_bags": work / "fov_bags"}
    t0 = time.perf_counter()
    run(HEMA / "bccd_wbc_crops" / "BCCD_cropped", roots["crops"], item_kind="cells", sample_prefix="bccd-crops")
    t1 = time.perf_counter()
    run(HEMA / "bccd" / "BCCD" / "JPEGImages", roots["fov_wbc"], boxes=HEMA / "bccd" / "BCCD" / "Annotations",
        manifest=work / "fov_manifest.csv", box_classes=["WBC"], group_by="none", sample_prefix="bccd-fov-wbc")
    t2 = time.perf_counter()
    print(f"converted: crop folders {t1 - t0:.1f} s, fields of view (WBC boxes) {t2 - t1:.1f} s")
    if mil:
        ids = run(HEMA / "bccd" / "BCCD" / "JPEGImages", roots["fov_bags"], boxes=HEMA / "bccd" / "BCCD" / "Annotations",
                  manifest=work / "fov_manifest.csv", group_by="image", sample_prefix="fov-")
        print(f"converted: {len(ids)} fields of view as samples (every box) {time.perf_counter() - t2:.1f} s")
    for k in ("crops", "fov_wbc"):
        m = hestdata.read_metadata(next((roots[k] / "samples").glob("*.zarr")))
        c = m.qc.collection
        print(f"{k}: {c.n_items} items from {c.n_images} images; labels {c.labels}; unlabelled {c.n_unlabelled}; "
              f"boxes filtered {c.n_boxes_filtered}, degenerate {c.n_boxes_degenerate}; images without a WBC box "
              f"{c.n_images_without_boxes}; crops reaching past the image {c.n_items_partial}; JPEG kept {c.jpeg_kept}")
    return roots


def majority_baseline(root: Path, label: str, n_folds: int = 5) -> dict[str, float]:
    """Each held-out item predicted as its training folds' most frequent class (the same folds as the task: groups
    by ``path``), scored with the task's own metrics."""
    import numpy as np

    from hestdata.bench.metrics import balanced_accuracy, weighted_f1
    from hestdata.bench.tasks.expression import _folds
    from hestdata.store.root import Root

    r = Root.open(root)
    frames = [r.sample(s).read_table("items").obs.assign(_s=s) for s in r.ids]
    import pandas as pd

    obs = pd.concat(frames)
    obs = obs[obs[label].notna()]
    lab = obs[label].astype(str)
    obs = obs[(lab.map(lab.value_counts()) >= 5).to_numpy()]  # as the task's min_class_items
    y = obs[label].astype(str).to_numpy()
    groups = np.array([f"{s}/{p}" for s, p in zip(obs["_s"], obs["path"], strict=True)])
    pred = np.empty(len(y), dtype=object)
    for tr, te, _ in _folds(groups, n_folds):
        vals, counts = np.unique(y[tr], return_counts=True)
        pred[te] = vals[np.argmax(counts)]
    return {"balanced_accuracy": balanced_accuracy(y, pred.astype(str)), "weighted_f1": weighted_f1(y, pred.astype(str)),
            "macro_auroc": 0.5}


def classify(root: Path, label: str, encoders: dict[str, object], work: Path, name: str) -> dict:
    from hestdata.bench.runner import Task, run_benchmark

    t = Task(name=name, type="cell_classification", samples="technology == 'images'", group_by="obs:path",
             patch="cells-224px", label=label, options={"n_folds": 5, "shots": [1, 4, 16], "shot_seeds": 5,
                                                        "min_class_items": 5})
    out = {"majority": majority_baseline(root, label)}
    print(f"{name} majority class: " + ", ".join(f"{k} {v:.3f}" for k, v in out["majority"].items()))
    for enc_name, enc in encoders.items():
        t0 = time.perf_counter()
        rows = {r["metric"]: r for r in run_benchmark(root, enc, t, cache_dir=work / "cache", leaderboard=True)}
        out[enc_name] = {k: (r["mean"], r.get("ci_low"), r.get("ci_high")) for k, r in rows.items()}
        p = rows["linear_balanced_accuracy_pooled"]
        print(f"{name} {enc_name} ({time.perf_counter() - t0:.0f} s): linear bal. acc. {p['mean']:.3f} "
              f"[{p['ci_low']:.3f}, {p['ci_high']:.3f}], weighted F1 {rows['linear_weighted_f1_pooled']['mean']:.3f}, "
              f"macro AUROC {rows['linear_macro_auroc_pooled']['mean']:.3f}; kNN bal. acc. "
              f"{rows['knn_balanced_accuracy_pooled']['mean']:.3f}; few-shot 1/4/16 "
              + "/".join(f"{rows[f'fewshot{n}_balanced_accuracy']['mean']:.3f}" for n in (1, 4, 16))
              + f"; chance {rows['chance_balanced_accuracy_pooled']['mean']:.3f}")
    return out


def mil(root: Path, encoders: dict[str, object], work: Path) -> dict:
    import pandas as pd

    from hestdata.bench.runner import Task, run_benchmark
    from hestdata.store.root import Root

    labels = image_labels()
    ids = Root.open(root).ids
    keep = {s: labels.get(s.removeprefix("fov-")) for s in ids}
    keep = {s: v for s, v in keep.items() if v in ("NEUTROPHIL", "EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE")}
    pd.DataFrame({"PATIENT": list(keep), "FILENAME": list(keep), "wbc": list(keep.values())}).to_csv(
        work / "bags.csv", index=False)
    print(f"MIL bags: {len(keep)} fields of view ({pd.Series(keep).value_counts().to_dict()}); basophils (2) left "
          "out: fewer than the folds")
    t = Task(name="bccd_fov_mil", type="slide_mil", samples="technology == 'images'", group_by="id",
             patch="cells-224px", label="wbc", labels=str(work / "bags.csv"),
             options={"n_folds": 5, "aggregator": "abmil", "epochs": 30})
    out = {}
    for enc_name, enc in encoders.items():
        t0 = time.perf_counter()
        rows = {r["metric"]: r for r in run_benchmark(root, enc, t, cache_dir=work / "cache")}
        out[enc_name] = {k: (r["mean"], r.get("ci_low"), r.get("ci_high")) for k, r in rows.items()}
        print(f"MIL {enc_name} ({time.perf_counter() - t0:.0f} s): "
              + ", ".join(f"{k} {r['mean']:.3f}" + (f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                                                    if r.get("ci_low") == r.get("ci_low") else "")
                          for k, r in rows.items() if k.endswith(("auroc", "balanced_accuracy", "_pooled"))))
    return out


def finetune_run(work: Path, mode: str, epochs: int, n_folds: int) -> dict:
    """The WBC crops one sample per image; random-init ViT-S/16 fine-tuned in ``mode`` beside its frozen probe."""
    import hestdata
    from hestdata.bench.finetune import finetune
    from hestdata.bench.runner import Task

    root = work / "fov_wbc_by_image"
    if not (root / "hestdata.json").is_file():
        hestdata.convert_images(HEMA / "bccd" / "BCCD" / "JPEGImages", root, boxes=HEMA / "bccd" / "BCCD" / "Annotations",
                                manifest=work / "fov_manifest.csv", box_classes=["WBC"], group_by="image",
                                sample_prefix="wbc-", progress=False)
    t = Task(name="bccd_wbc_finetune", type="cell_classification", samples="technology == 'images'", group_by="id",
             patch="cells-224px", label="wbc_type", options={"min_class_items": 5})
    t0 = time.perf_counter()
    res = finetune(root, t, work / f"finetune-{mode.replace(':', '')}", config={
        "encoder": "random-vit-s16", "mode": mode, "epochs": epochs, "n_folds": n_folds, "batch_size": 32,
        "lr": 1e-3, "patience": 2}, echo=print)
    print(f"fine-tuning {mode} ({time.perf_counter() - t0:.0f} s): pooled {res.pooled}; gain {res.gain}")
    return {"pooled": res.pooled, "gain": res.gain, "folds": [{k: f[k] for k in ("finetuned", "frozen", "best_epoch")}
                                                             for f in res.folds]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=["color-stats", "random-vit-s16"])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--skip-mil", action="store_true")
    ap.add_argument("--figures", type=Path, default=None, help="write the docs figures (JPEG) into this folder")
    ap.add_argument("--finetune", default=None, help="also fine-tune random-vit-s16 in this mode (e.g. lora:8)")
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--finetune-folds", type=int, default=3)
    ap.add_argument("--only-finetune", action="store_true", help="skip the frozen classifications and MIL")
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    roots = convert_all(work, not a.skip_mil and not a.only_finetune)
    encoders = {**baseline_encoders(), **{e: e for e in a.encoders}}
    out: dict = {}
    if not a.only_finetune:
        out["crops"] = classify(roots["crops"], "label", encoders, work, "bccd_crops_wbc_type")
        out["fov_wbc"] = classify(roots["fov_wbc"], "wbc_type", encoders, work, "bccd_fov_wbc_type")
    if not a.skip_mil and not a.only_finetune:
        out["mil"] = mil(roots["fov_bags"], encoders, work)
    if a.finetune:
        out["finetune"] = finetune_run(work, a.finetune, a.finetune_epochs, a.finetune_folds)
    if a.figures is not None:
        docs_figures(roots, work, a.figures, not a.skip_mil)
    print(json.dumps(out, default=float)[:4000])
    return out


def docs_figures(roots: dict[str, Path], work: Path, out: Path, with_mil: bool) -> None:
    """The figures of docs/collections.md, from this run's roots (PNG rendered, saved as JPEG to keep the repo small)."""
    from PIL import Image

    from hestdata.plot.sample import plot_sample

    out.mkdir(parents=True, exist_ok=True)
    pngs = {"collection_crops": plot_sample(roots["crops"], "bccd-crops", work / "crops.png")}
    pngs["collection_confusion"] = next((roots["crops"] / "figures" / "bccd_crops_wbc_type").glob(
        "color-stats-*/confusion.png"))
    if with_mil:
        pngs["collection_mil_roc"] = next((roots["fov_bags"] / "figures" / "bccd_fov_mil").glob(
            "color-stats-*/roc_pr.png"))
    for name, png in pngs.items():
        with Image.open(png) as im:
            im = im.convert("RGB")
            im.thumbnail((1200, 1200), Image.Resampling.LANCZOS)  # the docs' figure size, as make_figures.py
            im.save(out / f"{name}.jpg", quality=85, optimize=True)
        print(f"figure: {out / f'{name}.jpg'}")


if __name__ == "__main__":
    main()
