"""Image collections (variant ``images``, store format 3): the items table and one patch array per geometry.

``tables/items`` (a table that annotates no element, as spatialdata writes one) has one row per item, indexed by
item id (the image's path in the collection, ``#k`` for its k-th box), with ``path``, the image's size, the box
for cells, and every label column as a categorical (missing values stay missing, counted in the QC). Each patch
array (``224px``, or ``cells-224px`` for cells; ``…_0.5um`` with a declared pixel size) holds one patch per item
in table order; its ``centers_um`` are NaN when the pixel size is unknown, else the item's centre in µm in the
frame of its own image. Patches are rendered on threads, one batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.convert import stages
from hestdata.errors import InputError
from hestdata.metadata import QC, CollectionQC, PatchQC, PixelSize
from hestdata.model import ImageSetSample
from hestdata.options import ImageSetOptions
from hestdata.sources.collection import BOX
from hestdata.units import FitGeometry, PatchGeometry, parse_geometry

BATCH = 64


def declared_pixel_size(s: ImageSetSample) -> PixelSize | None:
    """A declared pixel size as the trusted one (``user``), or None: unknown, recorded as such."""
    v = s.pixel_size.user
    return PixelSize(value=v, trusted="user", user=v) if v is not None else None


def item_table(s: ImageSetSample) -> Any:
    """The items as an AnnData with no variables: obs = path, image size, box, label columns (categorical)."""
    import anndata as ad
    import pandas as pd

    it = s.items
    obs = pd.DataFrame(index=pd.Index(it.index.astype(str), name="item_id"))
    obs["path"] = it["path"].astype(str).to_numpy()
    obs["image_width_px"] = it["image_width_px"].astype(np.int64).to_numpy()
    obs["image_height_px"] = it["image_height_px"].astype(np.int64).to_numpy()
    if "x0" in it.columns:
        for c in BOX:
            obs[f"{c}_px"] = it[c].astype(np.float64).to_numpy()
    for c in dict.fromkeys([*s.label_columns, *(c for c in ("patient", "slide") if c in it.columns)]):
        obs[c] = pd.Categorical(it[c].astype("string").to_numpy(dtype=object, na_value=None))
    return ad.AnnData(obs=obs)


def _patches(s: ImageSetSample, g: PatchGeometry | FitGeometry, ps: float | None, context: float,
             keep_jpeg: bool, workers: int | None, stats: dict[str, int]) -> Iterator[list[np.ndarray | bytes]]:
    """Each item's patch (or its source JPEG's bytes), in table order, a batch at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from hestdata.curation.items import item_region, load_rgb, render_region
    from hestdata.store.codecs import jpeg_passthrough

    it = s.items
    p = g.patch_size_px
    boxes = it[list(BOX)].to_numpy(np.float64) if "x0" in it.columns else None
    files = it["file"].tolist()
    sizes = it[["image_width_px", "image_height_px"]].to_numpy(np.int64)
    whole_ok = keep_jpeg and boxes is None and (g.pixel_size_um is None or
                                                   (ps is not None and abs(ps - g.pixel_size_um) < 1e-9 * ps))

    def one(i: int) -> tuple[np.ndarray | bytes, bool, bool]:
        w, h = int(sizes[i][0]), int(sizes[i][1])
        box = None if boxes is None else tuple(boxes[i])
        r = item_region(w, h, box, p, g.pixel_size_um, ps, context)
        if whole_ok and (w, h) == (p, p):
            data = Path(files[i]).read_bytes()
            if jpeg_passthrough(data, p):
                return data, False, True
        try:
            return render_region(load_rgb(Path(files[i])), r, p), r.partial, False
        except ValueError as exc:
            raise InputError(files[i], f"item {it.index[i]}: {exc}") from None

    with ThreadPoolExecutor(workers or None, thread_name_prefix="hestdata-items") as pool:
        for a in range(0, len(it), BATCH):
            out = list(pool.map(one, range(a, min(a + BATCH, len(it)))))
            stats["partial"] += sum(o[1] for o in out)
            stats["kept"] += sum(o[2] for o in out)
            yield [o[0] for o in out]


def _centres_um(s: ImageSetSample, ps: float | None) -> np.ndarray:
    it = s.items
    if ps is None:
        return np.full((len(it), 2), np.nan)
    if "x0" in it.columns:
        b = it[list(BOX)].to_numpy(np.float64)
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1) * ps
    return it[["image_width_px", "image_height_px"]].to_numpy(np.float64) / 2 * ps


def _label_counts(table: Any, columns: list[str]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    counts, missing = {}, {}
    for c in columns:
        v = table.obs[c]
        counts[c] = {str(k): int(n) for k, n in v.value_counts(sort=True).items() if n}
        missing[c] = int(v.isna().sum())
    return counts, missing


def convert_image_set(req: stages.Request, s: ImageSetSample, o: ImageSetOptions, publish_root: bool) -> Path:
    """The image collection's pipeline: items table, patch arrays, metadata (format 3), commit."""
    from hestdata.io import progress
    from hestdata.store import layout as L
    from hestdata.store.sample import SampleWriter

    ps = declared_pixel_size(s)
    ps_um = ps.value if ps is not None else None
    geoms = [parse_geometry(g) for g in o.patches]
    for g in geoms:
        if g.pixel_size_um is not None and ps is None:
            raise InputError(req.where, f"geometry {g.name} needs the collection's pixel size, which is not declared",
                             "declare it (--pixel-size-um, or a pixel_size_um manifest column), or use a fit "
                             f"geometry such as {g.patch_size_px}px")
    if "x0" in s.items.columns and ps is None and (s.items["x1"] <= s.items["x0"]).any():
        raise InputError(req.where, "items given by a centre alone need a µm geometry and a declared pixel size")
    table = item_table(s)
    boxed = "x0" in s.items.columns
    prefix = "cells-" if s.kind == "cells" else ""
    with SampleWriter(req.root, s.sample_id, overwrite=req.overwrite) as w:
        w.write_table(table, region=None, name=L.ITEMS_TABLE)
        pqc: dict[str, PatchQC] = {}
        kept: dict[str, int] = {}
        partial = 0
        n = len(s.items)
        for g in geoms:
            name = prefix + g.name
            stats = {"partial": 0, "kept": 0}
            pw = w.patch_writer(name, n, g.patch_size_px, o.jpeg_quality, workers=o.workers)
            for batch in progress.track(_patches(s, g, ps_um, o.box_context, o.keep_jpeg, o.workers, stats),
                                        f"{s.sample_id} {name}", n, weight=len):
                pw.append(batch)
            pw.finish(np.arange(n), _centres_um(s, ps_um),
                      {"pixel_size_um": g.pixel_size_um, "fit": g.pixel_size_um is None, "item_kind": s.kind,
                       "box_context": o.box_context if boxed else None}, table=L.ITEMS_TABLE)
            pqc[name] = PatchQC(n_patches=n, n_skipped_off_image=0, n_skipped_low_tissue=0,
                                n_partial_outside_image=stats["partial"], min_tissue_fraction=0.0,
                                source_pixel_size_um=ps_um, jpeg_quality=o.jpeg_quality)
            kept[name] = stats["kept"]
            partial = max(partial, stats["partial"])
        labels, missing = _label_counts(table, s.label_columns)
        c = s.counts
        cq = CollectionQC(kind=s.kind, n_images=c.get("n_images", 0), n_items=n,
                          n_boxes_degenerate=c.get("n_boxes_degenerate", 0),
                          n_boxes_filtered=c.get("n_boxes_filtered", 0),
                          n_images_without_boxes=c.get("n_images_without_boxes", 0), n_items_partial=partial,
                          box_context=o.box_context if boxed else None, jpeg_kept=kept, labels=labels,
                          n_unlabelled=missing)
        qc = QC(n_obs=n, n_genes=0, counts_integer=True, patches=pqc, collection=cq, warnings=req.warnings)
        meta = stages.sample_metadata(req, pixel_size_um=ps, qc=qc)  # format 3: stages.format_version
        return stages.commit_and_publish(w, req, meta, publish_root)


def convert_images(images: str | Path, root: str | Path, *, manifest: str | Path | None = None,
                   boxes: str | Path | None = None, overwrite: bool = False, metadata: dict[str, Any] | None = None,
                   progress: bool = True, **options: Any) -> list[Path]:
    """Convert a whole image collection into ``root`` — every sample its grouping gives — and publish them as one
    catalog version (what was written before a failure is published too); returns the sample paths.

    ``options`` are the ``images`` source's (``group_by``, ``sample_prefix``, ``item_kind``, ``box_classes``,
    ``pixel_size_um``, ``patches``, ``box_context``, ``keep_jpeg``, …), e.g.
    ``convert_images("BCCD/JPEGImages", "ROOT", boxes="BCCD/Annotations", group_by="image")``."""
    from hestdata.convert import convert_source
    from hestdata.sources.collection import SOURCE

    inputs = {"images": Path(images), "manifest": None if manifest is None else Path(manifest),
              "boxes": None if boxes is None else Path(boxes)}
    opts = SOURCE.parse_options(options)
    return convert_source(SOURCE, inputs, SOURCE.sample_ids(inputs, opts), root, options=opts, overwrite=overwrite,
                          metadata=metadata, progress=progress)
