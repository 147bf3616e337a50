"""Image collections (store format 3): labelled tiles or single-cell images, and cells boxed on fields of view.

Inputs (``hestdata convert images IMAGES …``):

- ``IMAGES``, a folder: either class folders (``<class>/<image>``, ImageNet style: the folder name is the
  ``label``) or images directly in it;
- ``--manifest`` (optional), CSV/TSV/parquet with a ``path`` column (relative to ``IMAGES``) and any label columns;
  reserved columns: ``patient``, ``slide``, ``pixel_size_um`` (declared µm/px), a box ``x0, y0, x1, y1`` or a
  centre ``x, y`` (image pixels). With boxes the items are cells; the manifest's other rows then describe images;
- ``--boxes`` (optional): cell boxes on the images — a folder of Pascal VOC XML files, a COCO JSON file, or a
  CSV/TSV (``path, x0, y0, x1, y1, class``). Each box becomes one cell item with its ``box_class``; the
  manifest's columns for its image are joined to it.

Items are grouped into samples by ``group_by``: ``patient``, ``slide``, ``image`` (one sample per source image: a
field of view) or ``none`` (one sample); ``auto`` takes the first of patient and slide that the manifest has, else
one sample. Pixel coordinates are continuous (pixel ``i`` covers ``[i, i + 1)``); VOC's one-based inclusive
``xmin..xmax`` becomes ``[xmin - 1, xmax)`` (a box with ``xmax == xmin`` is a click, skipped and counted), COCO's ``[x, y, w, h]`` is taken as it is. EXIF orientation is not
applied (as torchvision's ``ImageFolder`` does not): boxes refer to the stored pixel order. Nothing is guessed: a
pixel size is recorded only when declared, and every skipped box or image is counted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from hestdata.errors import InputError
from hestdata.model import ImageSetSample, PixelSizeEvidence
from hestdata.options import ImageSetOptions, UserPixelSize
from hestdata.sources.registry import Source, register_source

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
BOX = ("x0", "y0", "x1", "y1")
RESERVED = frozenset({"path", "patient", "slide", "pixel_size_um", *BOX, "x", "y"})


class ImageSetSourceOptions(ImageSetOptions, UserPixelSize):
    """Options of the ``images`` source: how items are read and grouped, then how they are stored."""

    group_by: Literal["auto", "patient", "slide", "image", "none"] = Field(
        default="auto", description="one sample per patient, slide, image (field of view) or none (one sample); "
                                    "auto: patient, else slide, else one")
    sample_prefix: str = Field(default="", max_length=64, description="prefix of every sample id (e.g. bccd-)")
    box_classes: list[str] = Field(default_factory=list, description="keep only boxes of these classes (e.g. WBC)")
    item_kind: Literal["auto", "tiles", "cells"] = Field(
        default="auto", description="what an item is: auto (cells with boxes, else tiles); cells: single-cell "
                                    "images (arrays named cells-<geometry>)")


@dataclass
class Collection:
    """Every item of a collection before grouping (what one read of the inputs gives)."""

    folder: Path
    items: Any  # pandas.DataFrame: file, image_width_px, image_height_px, [box], label columns, patient, slide
    kind: Literal["tiles", "cells"]
    label_columns: list[str]
    groups: dict[str, Any]  # sample id -> row positions
    group_values: dict[str, str | None]  # sample id -> the patient/slide/image it is (None: the whole collection)
    group_column: str | None
    file_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> degenerate / filtered boxes
    empty_images: dict[str, str | None] = field(default_factory=dict)  # file without items -> its group value

    def sample_counts(self, sample_id: str) -> dict[str, int]:
        """What was left out of one sample's images (boxes skipped; images of its group without any item)."""
        files = set(self.items["file"].iloc[self.groups[sample_id]])
        v = self.group_values[sample_id]
        empty = {f for f, g in self.empty_images.items() if self.group_column is None or g == v}
        out = {k: sum(self.file_counts.get(f, {}).get(k, 0) for f in files | empty)  # boxes left out of images
               for k in ("n_boxes_degenerate", "n_boxes_filtered")}                # that kept none count too
        out["n_images_without_boxes"] = len(empty)
        out["n_images"] = len(files)
        return out


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def scan_folder(folder: Path) -> tuple[list[Path], list[str] | None]:
    """The images of ``folder`` (sorted) and, for class folders, each one's class (the folder name)."""
    if not folder.is_dir():
        raise InputError(folder, "not a folder of images")
    top = sorted(p for p in folder.iterdir() if _is_image(p))
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    nested = {d: sorted(p for p in d.iterdir() if _is_image(p)) for d in subs}
    nested = {d: v for d, v in nested.items() if v}
    if top and nested:
        raise InputError(folder, f"holds images directly ({len(top)}) and in class folders "
                                 f"({', '.join(d.name for d in list(nested)[:3])}): use one layout, or a manifest")
    if nested:
        files = [p for v in nested.values() for p in v]
        return files, [d.name for d, v in nested.items() for _ in v]
    if not top:
        raise InputError(folder, f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or in class folders")
    return top, None


def _read_frame(path: Path) -> Any:
    """A CSV/TSV/parquet file as pandas, every column as strings (numbers parsed where the caller needs them)."""
    import pandas as pd

    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() == ".parquet":
            df = pd.read_parquet(path)
            return df.astype({c: "string" for c in df.columns})
        sep = "\t" if ".tsv" in suffix or ".txt" in suffix else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(path, f"cannot read it as a table ({exc})") from None


def _numbers(df: Any, cols: tuple[str, ...] | list[str], where: Path) -> Any:
    import pandas as pd

    out = df[list(cols)].apply(pd.to_numeric, errors="coerce").astype(float)
    bad = out.isna().any(axis=1) & df[list(cols)].notna().any(axis=1)
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        raise InputError(where, f"{int(bad.sum())} row(s) with a non-numeric {'/'.join(cols)} (first: row "
                                f"{first + 2}: {df.iloc[first][list(cols)].tolist()})")
    return out


def read_manifest(path: Path, folder: Path, known: dict[str, Path]) -> Any:
    """The manifest: ``path`` resolved against ``folder`` (every file must exist), whitespace stripped, empty
    values missing."""
    df = _read_frame(path)
    df.columns = [str(c).strip() for c in df.columns]
    if "path" not in df.columns:
        raise InputError(path, f"a manifest needs a 'path' column (relative to {folder}); columns: {list(df.columns)}")
    for c in df.columns:
        df[c] = df[c].str.strip().replace("", None)
    if df["path"].isna().any():
        raise InputError(path, f"{int(df['path'].isna().sum())} row(s) without a path")
    files = []
    missing = []
    for rel in df["path"]:
        p = known.get(rel) or (folder / rel)
        if not p.is_file():
            missing.append(rel)
        files.append(Path(os.path.abspath(p)))  # symlinks kept: the item's path is its place in the collection
    if missing:
        raise InputError(path, f"{len(missing)} path(s) name no file under {folder}: {', '.join(missing[:5])}"
                               f"{' …' if len(missing) > 5 else ''}")
    df["file"] = [str(f) for f in files]
    present = [c for c in BOX if c in df.columns]
    if present and len(present) != 4:
        raise InputError(path, f"a box needs all of {', '.join(BOX)}; the manifest has only {', '.join(present)}")
    if ("x" in df.columns) != ("y" in df.columns):
        raise InputError(path, "a centre needs both x and y columns")
    return df


def _match(name: str, by_name: dict[str, Path], by_stem: dict[str, Path], where: Path) -> Path:
    p = by_name.get(name) or by_stem.get(Path(name).stem)
    if p is None:
        raise InputError(where, f"names image {name!r}, which is not in the images folder")
    return p


def _voc(folder: Path, by_name: dict[str, Path], by_stem: dict[str, Path]) -> list[dict[str, Any]]:
    """Boxes of a folder of Pascal VOC XML files (one per image)."""
    import xml.etree.ElementTree as ET

    rows = []
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise InputError(folder, "no Pascal VOC .xml files in the boxes folder")
    for xf in files:
        try:
            doc = ET.parse(xf).getroot()
        except ET.ParseError as exc:
            raise InputError(xf, f"not valid XML ({exc})") from None
        name = (doc.findtext("filename") or "").strip() or xf.stem
        img = _match(name, by_name, by_stem, xf)
        size = doc.find("size")
        declared = None
        if size is not None and size.findtext("width") and size.findtext("height"):
            declared = (int(float(size.findtext("width") or 0)), int(float(size.findtext("height") or 0)))
        objs = doc.findall("object")
        if not objs:
            rows.append({"file": img, "declared": declared, "x0": None, "where": xf})
        for o in objs:
            bb = o.find("bndbox")
            if bb is None:
                raise InputError(xf, f"an object ({o.findtext('name')!r}) has no bndbox")
            try:
                x0, y0, x1, y1 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                raise InputError(xf, f"object {o.findtext('name')!r}: a non-numeric box") from None
            rows.append({"file": img, "declared": declared, "x0": x0 - 1, "y0": y0 - 1, "x1": x1, "y1": y1,
                         "box_class": (o.findtext("name") or "").strip() or None, "where": xf,
                         # xmin == xmax: a click, not a box (BCCD has two): zero extent as the annotator wrote it
                         "degenerate": not (x1 > x0 and y1 > y0)})
    return rows


def _coco(path: Path, by_name: dict[str, Path], by_stem: dict[str, Path]) -> list[dict[str, Any]]:
    """Boxes of a COCO JSON file (``images``, ``annotations`` with ``bbox = [x, y, w, h]``, ``categories``)."""
    import json

    try:
        doc = json.loads(path.read_text())
        images = {im["id"]: im for im in doc["images"]}
        cats = {c["id"]: c["name"] for c in doc.get("categories", [])}
        anns = doc["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a COCO file with images and annotations ({exc})") from None
    rows = []
    seen = set()
    for a in anns:
        im = images.get(a.get("image_id"))
        if im is None:
            raise InputError(path, f"annotation {a.get('id')} names image id {a.get('image_id')}, which is not listed")
        x, y, w, h = (float(v) for v in a["bbox"])
        seen.add(im["id"])
        rows.append({"file": _match(str(im["file_name"]), by_name, by_stem, path),
                     "declared": (int(im["width"]), int(im["height"])) if "width" in im else None,
                     "x0": x, "y0": y, "x1": x + w, "y1": y + h, "box_class": cats.get(a.get("category_id")),
                     "where": path})
    for iid, im in images.items():
        if iid not in seen:
            rows.append({"file": _match(str(im["file_name"]), by_name, by_stem, path), "declared": None, "x0": None,
                         "where": path})
    return rows


def _box_table(path: Path, by_name: dict[str, Path], by_stem: dict[str, Path]) -> list[dict[str, Any]]:
    df = _read_frame(path)
    need = {"path", *BOX}
    if not need <= set(df.columns):
        raise InputError(path, f"a box table needs columns {sorted(need)} (and optionally class); has {list(df.columns)}")
    xy = _numbers(df, BOX, path)
    cls = df["class"] if "class" in df.columns else df.get("label")
    return [{"file": _match(str(p), by_name, by_stem, path), "declared": None, **dict(zip(BOX, r, strict=True)),
             "box_class": None if cls is None else cls.iloc[i], "where": path}
            for i, (p, r) in enumerate(zip(df["path"], xy.to_numpy().tolist(), strict=True))]


def read_boxes(path: Path, files: list[Path]) -> list[dict[str, Any]]:
    """Boxes (and images without any) from VOC XML (a folder), COCO JSON or a CSV/TSV table."""
    by_name = {p.name: p for p in files}
    by_stem = {p.stem: p for p in files}
    if path.is_dir():
        return _voc(path, by_name, by_stem)
    if path.suffix.lower() == ".json":
        return _coco(path, by_name, by_stem)
    return _box_table(path, by_name, by_stem)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(path, f"not a readable image ({exc})") from None


def _sanitise(value: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", value.strip()).strip("._-")
    return s or "unnamed"


@lru_cache(maxsize=4)
def _collection_cached(key: tuple[Any, ...]) -> Collection:
    folder, manifest, boxes, group_by, prefix, box_classes, item_kind, _ = key
    return build_collection(Path(folder), Path(manifest) if manifest else None, Path(boxes) if boxes else None,
                            group_by, prefix, list(box_classes), item_kind)


def _key(inputs: dict[str, Path], o: ImageSetSourceOptions) -> tuple[Any, ...]:
    paths = [inputs["images"], inputs.get("manifest"), inputs.get("boxes")]
    folders = [q for p in paths if p is not None and p.is_dir() for q in p.iterdir() if q.is_dir()]  # class folders
    stamp = tuple((str(p), p.stat().st_mtime_ns) for p in [*paths, *folders] if p is not None and p.exists())
    return (*(str(p.resolve()) if p is not None else None for p in paths), o.group_by, o.sample_prefix,
            tuple(o.box_classes), o.item_kind, stamp)


def collection(inputs: dict[str, Path], o: ImageSetSourceOptions) -> Collection:
    """The collection the inputs describe (read once per set of inputs and options: every sample of a
    many-sample conversion reads it from here)."""
    return _collection_cached(_key(inputs, o))


class _Counts:
    """What reading left out, per image file (boxes skipped), for each sample's QC."""

    def __init__(self) -> None:
        self.by_file: dict[str, dict[str, int]] = {}

    def __call__(self, f: str, what: str) -> None:
        c = self.by_file.setdefault(f, {})
        c[what] = c.get(what, 0) + 1


def _boxed_items(base: Any, boxes: Path, manifest: Path | None, files: list[Path], box_classes: list[str],
                 count: _Counts) -> tuple[Any, dict[str, Any], list[str], Any]:
    """One item per kept box, the manifest's row for its image joined; also the sizes the box files declare, the
    images left without any box, and the manifest indexed by file."""
    import pandas as pd

    if all(c in base.columns for c in BOX) or "x" in base.columns:
        raise InputError(manifest, "boxes are given twice: by --boxes and by the manifest's box columns")
    if base["file"].duplicated().any():
        dup = base.loc[base["file"].duplicated(), "path"].iloc[0]
        raise InputError(manifest, f"with --boxes the manifest describes images, one row each; {dup!r} repeats")
    rows = read_boxes(boxes, [Path(f) for f in base["file"]] if manifest is not None else files)
    per_image = base.set_index("file")
    out, declared = [], {}
    for r in rows:
        f = str(r["file"])
        if f not in per_image.index:
            continue  # an image the manifest leaves out
        if r["declared"]:
            declared.setdefault(f, (r["declared"], r["where"]))
        if r.get("x0") is None:
            continue
        if box_classes and r.get("box_class") not in box_classes:
            count(f, "n_boxes_filtered")
        elif r.get("degenerate") or not (r["x1"] > r["x0"] and r["y1"] > r["y0"]):
            count(f, "n_boxes_degenerate")
        else:
            out.append({"file": f, **{k: r[k] for k in BOX}, "box_class": r.get("box_class")})
    items = pd.DataFrame(out, columns=["file", *BOX, "box_class"])
    with_items = set(items["file"])
    empty = [f for f in per_image.index if f not in with_items]
    items = items.join(per_image[[c for c in per_image.columns if c != "file"]], on="file")
    return items, declared, empty, per_image


def _listed_items(base: Any, where: Path, count: _Counts) -> tuple[Any, Literal["tiles", "cells"]]:
    """One item per manifest row (or image): a tile, or a cell where the row has a box or a centre."""
    items = base.copy()
    if all(c in items.columns for c in BOX):
        xy = _numbers(items, BOX, where)
        bad = ~((xy["x1"] > xy["x0"]) & (xy["y1"] > xy["y0"]))
        for f in items.loc[bad.to_numpy(), "file"]:
            count(f, "n_boxes_degenerate")
        items = items.loc[~bad.to_numpy()].copy()
        items[list(BOX)] = xy.loc[~bad.to_numpy()].to_numpy()
        return items, "cells"
    if "x" in items.columns:
        xy = _numbers(items, ("x", "y"), where)
        items["x0"] = items["x1"] = xy["x"].to_numpy()
        items["y0"] = items["y1"] = xy["y"].to_numpy()
        return items.drop(columns=["x", "y"]), "cells"
    return items, "tiles"


def _index_items(items: Any, folder: Path, where: Path | None, declared: dict[str, Any]) -> Any:
    """Image sizes (checked against what box files declare), paths in the collection, path order, item ids."""
    import pandas as pd

    sizes = {f: _image_size(Path(f)) for f in dict.fromkeys(items["file"])}
    for f, (decl, src) in declared.items():
        if f in sizes and tuple(decl) != sizes[f]:
            raise InputError(src, f"says {Path(f).name} is {decl[0]}x{decl[1]} px; the image is "
                                  f"{sizes[f][0]}x{sizes[f][1]} px (boxes would not fall where they were drawn)")
    items["image_width_px"] = [sizes[f][0] for f in items["file"]]
    items["image_height_px"] = [sizes[f][1] for f in items["file"]]
    items["path"] = [Path(f).relative_to(folder).as_posix() if Path(f).is_relative_to(folder)
                     else f for f in items["file"]]
    # items in path order (an image's boxes in the order its file gives them): the same store whatever the format
    items = items.sort_values("path", kind="stable").reset_index(drop=True)
    if "x0" in items.columns:  # several boxes per image: the image's path and the box's number
        k = items.groupby("path").cumcount()
        items.index = pd.Index([f"{p}#{i}" for p, i in zip(items["path"], k, strict=True)], name="item_id")
    else:
        if items["path"].duplicated().any():
            raise InputError(where, f"path {items.loc[items['path'].duplicated(), 'path'].iloc[0]!r} is listed "
                                    "twice (a tile is one row; give boxes for several items per image)")
        items.index = pd.Index(items["path"].tolist(), name="item_id")
    if "pixel_size_um" in items.columns:
        items["pixel_size_um"] = _numbers(items, ["pixel_size_um"], where or folder)["pixel_size_um"]
    return items


def _group_items(items: Any, group_by: str, prefix: str, folder: Path, where: Path
                 ) -> tuple[str | None, dict[str, Any], dict[str, str | None]]:
    """(the grouping column, sample id -> item rows, sample id -> the group's value)."""
    column = {"auto": "patient" if "patient" in items.columns else "slide" if "slide" in items.columns else None,
              "patient": "patient", "slide": "slide", "image": "path", "none": None}[group_by]
    if column is not None and column not in items.columns:
        raise InputError(where, f"group_by {group_by}: the manifest has no {column!r} column")
    groups: dict[str, Any] = {}
    values: dict[str, str | None] = {}
    if column is None:
        sid = prefix + _sanitise(folder.name) if not prefix else prefix.rstrip("-_.") or "collection"
        groups[sid], values[sid] = list(range(len(items))), None
        return column, groups, values
    if items[column].isna().any():
        raise InputError(where, f"{int(items[column].isna().sum())} item(s) have no {column}: give every row one, "
                                "or group_by none")
    for v, idx in items.groupby(column, sort=True).indices.items():
        sid = prefix + _sanitise(Path(str(v)).stem if column == "path" else str(v))
        if sid in groups:
            raise InputError(where, f"{column} values {values[sid]!r} and {v!r} give the same sample id {sid!r}")
        groups[sid], values[sid] = sorted(idx.tolist()), str(v)
    return column, groups, values


def build_collection(folder: Path, manifest: Path | None, boxes: Path | None, group_by: str, prefix: str,
                     box_classes: list[str], item_kind: str = "auto") -> Collection:
    """Read the folder, the manifest and the boxes into items, and group them into samples (module docstring)."""
    import pandas as pd

    folder = Path(os.path.abspath(folder))  # not resolved: a symlinked image keeps its place in the collection
    files, classes = scan_folder(folder)
    count = _Counts()
    if manifest is not None:
        base = read_manifest(manifest, folder, {p.relative_to(folder).as_posix(): p for p in files})
    else:
        base = pd.DataFrame({"path": [p.relative_to(folder).as_posix() for p in files],
                             "file": [str(p) for p in files]})
    if classes and "label" not in base.columns:
        folder_label = {str(p): c for p, c in zip(files, classes, strict=True)}
        base["label"] = [folder_label.get(f) for f in base["file"]]
    if boxes is not None:
        items, declared, empty, per_image = _boxed_items(base, boxes, manifest, files, box_classes, count)
        kind: Literal["tiles", "cells"] = "cells"
    else:
        (items, kind), declared, empty, per_image = _listed_items(base, manifest or folder, count), {}, [], None
    if items.empty:
        raise InputError(boxes or manifest or folder, "no items: every box was left out or the inputs list none")
    if item_kind == "tiles" and kind == "cells":
        raise InputError(boxes or manifest, "boxes make cell items; item_kind tiles cannot hold them")
    kind = "cells" if item_kind == "cells" else kind
    items = _index_items(items, folder, manifest, declared)
    labels = [c for c in items.columns if c not in RESERVED and c not in (
        "file", "image_width_px", "image_height_px", "box_class", *BOX)]
    labels = (["box_class"] if "box_class" in items.columns and items["box_class"].notna().any() else []) + labels
    column, groups, values = _group_items(items, group_by, prefix, folder, manifest or folder)
    empty_images = {f: (None if column in (None, "path") or per_image is None or column not in per_image.columns
                        else per_image.loc[f, column]) for f in empty}
    return Collection(folder, items, kind, labels, groups, values, column, count.by_file, empty_images)


def _discover(inputs: dict[str, Path], options: Any = None) -> list[str]:
    """The sample ids the inputs hold, grouped as the options say."""
    o = options if isinstance(options, ImageSetSourceOptions) else ImageSetSourceOptions()
    return list(collection(inputs, o).groups)


def _read(inputs: dict[str, Path], sample_id: str, o: ImageSetSourceOptions) -> ImageSetSample:
    import difflib

    c = collection(inputs, o)
    if sample_id not in c.groups:
        close = difflib.get_close_matches(sample_id, list(c.groups), n=3)
        raise InputError(inputs["images"], f"the collection has no sample {sample_id!r}",
                         f"did you mean {', '.join(close)}?" if close else
                         f"it holds {len(c.groups)}: {', '.join(list(c.groups)[:5])}{' …' if len(c.groups) > 5 else ''}")
    items = c.items.iloc[c.groups[sample_id]].copy()
    declared = o.pixel_size_um
    if "pixel_size_um" in items.columns and items["pixel_size_um"].notna().any():
        vals = sorted(set(items["pixel_size_um"].dropna().round(9)))
        if len(vals) > 1 or items["pixel_size_um"].isna().any():
            raise InputError(inputs.get("manifest"), f"sample {sample_id}: its items declare different pixel sizes "
                                                     f"({vals[:4]}{' and none' if items['pixel_size_um'].isna().any() else ''}); "
                                                     "a sample has one pixel size — group them apart")
        if declared is None:
            declared = float(vals[0])
    descriptive: dict[str, Any] = {}  # a sample of one patient records it (patient-level tasks and splits)
    if "patient" in items.columns and items["patient"].notna().all() and items["patient"].nunique() == 1:
        descriptive["patient"] = str(items["patient"].iloc[0])
    return ImageSetSample(sample_id=sample_id, technology="images", pixel_size=PixelSizeEvidence(user=declared),
                          source_files=[inputs["images"], *(p for k in ("manifest", "boxes")
                                                           if (p := inputs.get(k)) is not None)],
                          metadata={"descriptive": descriptive}, items=items, kind=c.kind, folder=c.folder,
                          label_columns=list(c.label_columns),
                          counts=c.sample_counts(sample_id))


SOURCE = register_source(Source(
    name="images", summary="image collection: labelled tiles or single-cell images (class folders or a manifest), "
                           "or cell boxes on fields of view (VOC, COCO, CSV)",
    variant="images", technologies=("images",), inputs={"images": "a folder of images (class folders or flat)"},
    optional_inputs={"manifest": "CSV/TSV/parquet: path (relative to IMAGES), label columns, patient, slide, "
                                 "pixel_size_um, box x0,y0,x1,y1 or centre x,y",
                     "boxes": "cell boxes: a folder of Pascal VOC XML, a COCO JSON file, or CSV/TSV "
                              "(path, x0, y0, x1, y1, class)"},
    options=ImageSetSourceOptions, elements=("tables/items", "patches"), reader=_read, discover=_discover))
