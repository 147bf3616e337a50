"""``hestdata plot ROOT ID``: one converted sample as a figure a reader can use — the H&E (or the first three
markers) in µm with its spots or cells coloured by a gene, a label or whether they were patched, a scale bar, a
title with id, technology and pixel size, a legend or colour bar, and a gallery of stored patches that leaves
out edge patches padded with black."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.errors import InputError
from hestdata.plot.style import gallery, pyplot, save, scale_bar, without_padding
from hestdata.store import layout as L

MAX_IMAGE_PX = 1600


def _level(image: Any, max_px: int) -> tuple[int, np.ndarray]:
    """The finest pyramid level whose longer side fits ``max_px`` (the coarsest if none), as (k, HWC)."""
    from hestdata.curation.levels import thumbnail_level

    paths = [d["path"] for d in image.attrs["ome"]["multiscales"][0]["datasets"]]
    k = thumbnail_level([image[p].shape[1:] for p in paths], max_px)
    return k, np.moveaxis(np.asarray(image[paths[k]][:]), 0, -1)


def _to_rgb(arr: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """RGB as it is, or the first three channels of a multiplex image scaled to their 1–99.5 percentiles."""
    if arr.shape[-1] == 3 and arr.dtype == np.uint8:
        return arr, []
    out = np.zeros(arr.shape[:2] + (3,), np.float32)
    shown = []
    for c, colour in zip(range(min(3, arr.shape[-1])), ("red", "green", "blue"), strict=False):
        lo, hi = np.percentile(arr[..., c], [1, 99.5])
        out[..., c] = np.clip((arr[..., c] - lo) / ((hi - lo) or 1), 0, 1)
        shown.append((names[c] if c < len(names) else str(c), colour))
    return (out * 255).astype(np.uint8), shown


def _pixel_to_um(path: Path, image_name: str, level: int) -> np.ndarray:
    """The 3x3 affine from a level's (x, y) pixels to the sample's µm frame, read by spatialdata."""
    import spatialdata as sd
    from spatialdata.transformations import get_transformation

    import hestdata.store.codecs  # noqa: F401  (patch arrays are in the store)

    el = sd.read_zarr(path, selection=("images",)).images[image_name]
    m = get_transformation(el, L.COORDINATE_SYSTEM).to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    return np.asarray(m, np.float64) @ np.diag([2.0 ** level, 2.0 ** level, 1.0])


def draw_image(ax: Any, s: Any, image_name: str, max_image_px: int = MAX_IMAGE_PX) -> tuple[int, list[tuple[str, str]]]:
    """Draw a sample's image on ``ax`` in its µm frame (the pyramid level that fits ``max_image_px``, placed by
    the image's own transformation); returns the level shown and the multiplex channels drawn (name, colour)."""
    from matplotlib.transforms import Affine2D

    image = s.image(image_name)
    k, arr = _level(image, max_image_px)
    names = [c.get("label", "") for c in image.attrs["ome"].get("omero", {}).get("channels", [])]
    rgb, shown = _to_rgb(arr, names)
    m = _pixel_to_um(s.local_path, image_name, k)
    im = ax.imshow(rgb, interpolation="bilinear")
    im.set_transform(Affine2D(m) + ax.transData)
    corners = m @ np.array([[0, rgb.shape[1], 0, rgb.shape[1]], [0, 0, rgb.shape[0], rgb.shape[0]], [1, 1, 1, 1]])
    ax.set_xlim(corners[0].min(), corners[0].max())
    ax.set_ylim(corners[1].max(), corners[1].min())  # image convention: y down
    ax.set_aspect("equal")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    scale_bar(ax, float(corners[0].max() - corners[0].min()))
    return k, shown


def _values(sample: Any, table: Any, gene: str | None, label: str | None) -> tuple[np.ndarray | None, str]:
    """Per-observation values to colour by: log1p(CP10k) of ``gene``, or the ``label`` column."""
    if gene is not None:
        names = [str(v) for v in table.var_names]
        if gene not in names:
            close = [n for n in names if n.upper().startswith(gene.upper()[:3])][:8]
            raise InputError(sample.path, f"gene {gene!r} is not in the table ({len(names)} genes"
                                          + (f"; close: {', '.join(close)}" if close else "") + ")")
        X = table.X
        lib = np.asarray(X.sum(axis=1)).ravel()
        col = X[:, names.index(gene)]
        col = np.asarray(col.toarray() if hasattr(col, "toarray") else col, np.float64).ravel()
        return np.log1p(col / np.maximum(lib, 1) * 1e4), f"{gene} log1p(CP10k)"
    if label is not None:
        if label not in table.obs.columns:
            raise InputError(sample.path, f"no column {label!r} in the table; columns: {list(table.obs.columns)}")
        col = table.obs[label]
        return np.where(col.isna().to_numpy(), "no label", col.astype(str).to_numpy()).astype(object), label
    return None, ""


def _draw_obs(ax: Any, fig: Any, xy_um: np.ndarray, diameter_um: float, values: np.ndarray | None, what: str,
              patched: np.ndarray, extra: list[Any]) -> None:
    """Spots/cells as circles of their physical size: a colour bar for numbers, a legend otherwise."""
    from matplotlib.collections import EllipseCollection
    from matplotlib.lines import Line2D

    def circles(sel: np.ndarray, **kw: Any) -> Any:
        d = np.full(int(sel.sum()), diameter_um)
        return ax.add_collection(EllipseCollection(d, d, 0.0, units="xy", offsets=xy_um[sel],
                                                   offset_transform=ax.transData, **kw))

    everything = np.ones(len(xy_um), dtype=bool)
    if values is not None and values.dtype.kind in "fiu":
        coll = circles(everything, cmap="viridis", edgecolors="none", alpha=0.85)
        coll.set_array(values)
        fig.colorbar(coll, ax=ax, fraction=0.035, pad=0.02, label=what)
        if extra:
            ax.legend(handles=extra, loc="upper right", fontsize="small")
        return
    if values is not None:
        cats = sorted(set(values.tolist()))
        cmap = pyplot().get_cmap("tab20", max(1, len(cats)))
        handles = []
        for i, c in enumerate(cats):
            circles(values == c, facecolors=[cmap(i)], edgecolors="none", alpha=0.85)
            handles.append(Line2D([], [], marker="o", ls="", color=cmap(i), label=f"{c} ({int((values == c).sum())})"))
        ax.legend(handles=handles + extra, title=what, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        return
    circles(patched, facecolors="none", edgecolors="#1a9850", linewidths=0.8)
    circles(~patched, facecolors="none", edgecolors="#d73027", linewidths=0.8)
    ax.legend(handles=[Line2D([], [], marker="o", ls="", mfc="none", color="#1a9850", label=f"patched ({patched.sum()})"),
                       Line2D([], [], marker="o", ls="", mfc="none", color="#d73027",
                              label=f"no patch ({(~patched).sum()})")] + extra,
              loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")


def _gallery(ax: Any, group: Any, name: str, n: int) -> None:
    """Up to ``n`` stored patches spread over the array, edge patches padded with black left out."""
    from hestdata.store.sample import read_rows

    imgs_arr = group[L.PATCH_IMAGES]
    total = imgs_arr.shape[0]
    pick = np.unique(np.linspace(0, total - 1, min(total, 4 * n)).astype(int)) if total else np.zeros(0, int)
    imgs = read_rows(imgs_arr, pick)
    unpadded = without_padding(imgs)
    keep = unpadded[:n]
    p = imgs.shape[1] if len(imgs) else 0
    um = float(group.attrs.get("pixel_size_um", 0) or 0)
    ax.set_axis_off()
    if not len(keep):
        ax.set_title(f"{name}: no patch without edge padding among {len(pick)} looked at")
        return
    cols = int(np.ceil(np.sqrt(len(keep))))
    ax.imshow(gallery(imgs[keep], cols))
    ax.set_title(f"patches {name} ({p} px = {p * um:g} µm): {len(keep)} of {total}\n"
                 f"({len(pick) - len(unpadded)} padded edge patches among {len(pick)} left out)",
                 fontsize="medium")
    if um:
        scale_bar(ax, p * um, units_per_um=1 / um, loc="lower right")


def plot_sample(root: str | os.PathLike[str], sample_id: str, out: str | os.PathLike[str], *,
                gene: str | None = None, label: str | None = None, patches: str | None = None,
                n_gallery: int = 16, max_image_px: int = MAX_IMAGE_PX) -> Path:
    """Draw sample ``sample_id`` of a local root into ``out`` (png, svg, pdf); return the path.

    ``gene`` colours the spots/cells by log1p(CP10k) of that gene (colour bar), ``label`` by a table column
    (legend); otherwise they are outlined green where a patch was stored, red where none was. ``patches`` names
    the patch array of the gallery (the first one by default; ``""`` for none)."""
    from hestdata.store.root import Root

    r = Root.open(root)
    if not r.is_local:
        raise InputError(str(root), "plot draws local roots; download the sample first")
    s = r.sample(sample_id)
    if s.variant == "images":  # no image frame: the items by class
        from hestdata.plot.collection import plot_collection

        if gene:
            raise InputError(s.path, "an image collection has no genes to colour; --label picks the rows")
        return plot_collection(s, out, label=label, patches=patches)
    meta = s.metadata
    image_name = L.VARIANT_IMAGE[s.variant] if not s.has("images", L.IMAGE_HE) else L.IMAGE_HE
    arrays = s.patch_arrays()
    name = arrays[0] if patches is None and arrays else patches
    plt = pyplot()
    with_gallery = bool(name)
    fig, axes = plt.subplots(1, 2 if with_gallery else 1, figsize=(15 if with_gallery else 9, 7.5),
                             gridspec_kw={"width_ratios": [3, 2]} if with_gallery else None, squeeze=False)
    ax = axes[0, 0]
    k, shown = draw_image(ax, s, image_name, max_image_px)
    extra = _draw_tissue(ax, s)
    region = L.VARIANT_REGION.get(s.variant)
    if region and s.has("tables", L.TABLE):
        table = s.read_table(L.TABLE)
        xy = table.obs[["x_um", "y_um"]].to_numpy(np.float64)
        patched = np.zeros(len(xy), bool)
        if name:
            idx = np.asarray(s.patch_group(name)[L.PATCH_OBS_INDEX][:])
            patched[idx[(idx >= 0) & (idx < len(xy))]] = True
        diameter = meta.spot_diameter_um or _typical_spacing(xy) * 0.8
        values, what = _values(s, table, gene, label)
        _draw_obs(ax, fig, xy, diameter, values, what, patched, extra)
    elif gene or label:
        raise InputError(s.path, f"a {s.variant} sample has no spots or cells to colour")
    elif extra:
        ax.legend(handles=extra, loc="upper right", fontsize="small")
    if shown:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=c, label=n) for n, c in shown], title="channels", loc="lower left",
                  fontsize="small")
    ps = meta.pixel_size_um.value
    fig.suptitle(f"{sample_id} — {meta.technology}, {ps:.4g} µm/px ({meta.pixel_size_um.trusted}); "
                 f"shown at {ps * 2 ** k:.3g} µm/px", fontsize="large")
    if with_gallery:
        _gallery(axes[0, 1], s.patch_group(name), name, n_gallery)
    return save(fig, out)


def _draw_tissue(ax: Any, s: Any) -> list[Any]:
    """The tissue outline (``shapes/tissue``, Otsu on the thumbnail), dashed; returns its legend entry."""
    if not s.has("shapes", L.SHAPES_TISSUE):
        return []
    import geopandas as gpd
    from matplotlib.lines import Line2D

    style = {"color": "#4d4d4d", "linewidth": 0.8, "linestyle": "--"}
    gpd.read_parquet(s.local_path / "shapes" / L.SHAPES_TISSUE / "shapes.parquet").boundary.plot(ax=ax, **style)
    return [Line2D([], [], label="tissue (Otsu)", **style)]


def _typical_spacing(xy: np.ndarray) -> float:
    """Median nearest-neighbour distance (µm), to size cells or spots without a declared diameter."""
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return 10.0
    d, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(d[:, 1])) or 10.0
