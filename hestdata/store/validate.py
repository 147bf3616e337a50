"""Check a root or a sample against the store specification and report every violation (not just the first)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hestdata.store import layout as L
from hestdata.store.recovery import leftovers

OBS_COLUMNS = ("x_um", "y_um", "in_tissue", "array_row", "array_col", "pxl_col_in_fullres", "pxl_row_in_fullres")
VAR_COLUMNS = ("original_name", "gene_id", "feature_type")


@dataclass
class ValidationReport:
    """Outcome of :func:`validate`.

    ``violations`` are errors: the store breaks its specification (``ok`` is False). ``warnings`` are doubts a
    curator should look at — a patch array holding no patches, a flagged pixel size (evidence that disagreed by
    more than 5 %), an image–spot mismatch converted on request; ``strict_ok`` fails on them too.
    """

    path: Path
    kind: str  # "root" or "sample"
    violations: list[str] = field(default_factory=list)
    n_samples: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def strict_ok(self) -> bool:
        return not self.violations and not self.warnings

    def raise_if_invalid(self, strict: bool = False) -> None:
        """Raise :class:`~hestdata.errors.SchemaError` listing every violation (and warning, when ``strict``)."""
        from hestdata.errors import SchemaError

        problems = self.violations + (self.warnings if strict else [])
        if problems:
            raise SchemaError(self.path, problems)


def _open_metadata(sample: Any, bad: Callable[[str], None]) -> tuple[Any, Any] | None:
    """The sample's Zarr group and typed metadata, or None after reporting why they cannot be read."""
    from hestdata.errors import HestdataError
    from hestdata.ids import SAMPLE_FORMAT_VERSION
    from hestdata.metadata import schema_violations

    path = sample.local_path
    try:
        root = sample.group()
    except Exception as exc:
        bad(f"not a readable Zarr v3 group ({type(exc).__name__})")
        return None
    attrs = dict(root.attrs)
    if "spatialdata_attrs" not in attrs:
        bad("root attrs lack 'spatialdata_attrs' (not a SpatialData store)")
    raw = attrs.get(L.META_KEY)
    if raw is None:
        bad(f"root attrs lack '{L.META_KEY}' metadata")
        return None
    try:
        meta = sample.metadata  # a newer format names the version to install
    except HestdataError as exc:
        problems = schema_violations(raw) if isinstance(raw, dict) and \
            raw.get("format_version", 1) <= SAMPLE_FORMAT_VERSION else []
        for p in problems or [str(exc)]:
            bad(f"metadata {p}" if problems else p)
        return None
    if meta.id + L.SAMPLE_SUFFIX != path.name:
        bad(f"metadata id {meta.id!r} does not match the folder name")
    return root, meta


def _check_table(root: Any, meta: Any, region: str, bad: Callable[[str], None]) -> None:
    """``tables/expression``: shape and dtype as declared, required obs/var columns, the region it annotates."""
    obs_required = OBS_COLUMNS if region == L.SHAPES_SPOTS else ("x_um", "y_um", "in_tissue")
    try:
        tab = root[f"tables/{L.TABLE}"]
        X = tab["X"]
        shape = tuple(X.attrs.get("shape", getattr(X, "shape", ())))
        if shape != (meta.qc.n_obs, meta.qc.n_genes):
            bad(f"tables/{L.TABLE}/X shape {shape} != metadata ({meta.qc.n_obs}, {meta.qc.n_genes})")
        dtype = X["data"].dtype if hasattr(X, "keys") and "data" in X else X.dtype
        if meta.qc.counts_integer and "int" not in str(dtype):
            bad(f"counts are declared integer but X has dtype {dtype}")
        obs_cols = set(tab["obs"].attrs.get("column-order", []))
        for c in obs_required:
            if c not in obs_cols:
                bad(f"tables/{L.TABLE}/obs lacks column {c!r}")
        var_cols = set(tab["var"].attrs.get("column-order", []))
        for c in VAR_COLUMNS:
            if c not in var_cols and L.SCANPY_VAR_NAMES.get(c) not in var_cols:  # scanpy's names from 0.2.1
                bad(f"tables/{L.TABLE}/var lacks column {c!r}")
        tattrs = dict(tab.attrs)
        if tattrs.get("region") != region or tattrs.get("instance_key") != L.INSTANCE_KEY:
            bad(f"tables/{L.TABLE} does not annotate shapes/{region} by {L.INSTANCE_KEY!r}")
        _check_table_values(tab, shape, bad)
    except KeyError as exc:
        bad(f"missing element {exc}")


def _check_table_values(tab: Any, shape: tuple[int, ...], bad: Callable[[str], None]) -> None:
    """The stored counts themselves: a sound CSR structure, finite non-negative values, unique obs ids."""
    import numpy as np
    from anndata.io import read_elem

    from hestdata.curation.counts import check_csr_arrays, check_unique_ids
    from hestdata.errors import InputError

    X = tab["X"]
    try:
        if hasattr(X, "keys") and {"data", "indices", "indptr"} <= set(X.keys()):
            data = X["data"][:]
            check_csr_arrays(data, X["indices"][:], X["indptr"][:], (int(shape[0]), int(shape[1])),
                             f"tables/{L.TABLE}/X", "stored count matrix")
        else:
            data = np.asarray(X[:]).ravel()
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            bad(f"tables/{L.TABLE}/X holds NaN or infinite values")
        if data.size and data.min() < 0:
            bad(f"tables/{L.TABLE}/X holds negative counts")
        check_unique_ids(read_elem(tab["obs"]).index, f"tables/{L.TABLE}/obs", "obs id")
    except InputError as exc:
        bad(str(exc))


def _check_shapes(path: Path, meta: Any, region: str, declared_missing: bool, bad: Callable[[str], None]) -> None:
    """The shapes the table annotates: one row per table row."""
    import pyarrow.parquet as pq

    spots = path / "shapes" / region / "shapes.parquet"
    if declared_missing:
        if spots.exists():
            bad("shapes are declared missing but present")
    elif not spots.is_file():
        bad(f"missing shapes/{region}")
    else:
        n = pq.ParquetFile(spots).metadata.num_rows
        if n != meta.qc.n_obs:
            bad(f"shapes/{region} has {n} rows, table has {meta.qc.n_obs}")


def _check_image(root: Any, meta: Any, image_name: str, bad: Callable[[str], None]) -> None:
    """The main image: level count, level-0 shape and µm scale as the metadata says."""
    try:
        img = root[f"images/{image_name}"]
        ms = img.attrs["ome"]["multiscales"][0]
        if len(ms["datasets"]) != meta.image.n_levels:
            bad(f"images/{image_name} has {len(ms['datasets'])} levels, metadata says {meta.image.n_levels}")
        s0 = img[ms["datasets"][0]["path"]]
        if tuple(s0.shape[1:]) != (meta.image.height_px, meta.image.width_px):
            bad(f"images/{image_name} level 0 shape {s0.shape} != metadata {meta.image.height_px}x{meta.image.width_px}")
        tr = ms["coordinateTransformations"][0]
        scale = (tr["transformations"][0] if tr["type"] == "sequence" else tr)["scale"]
        if abs(scale[-1] - meta.image.pixel_size_um) > 1e-9 * max(1.0, scale[-1]):
            bad(f"images/{image_name} transform scale {scale[-1]} != pixel size {meta.image.pixel_size_um}")
    except (KeyError, IndexError) as exc:
        bad(f"images/{image_name} missing or malformed ({exc})")


def _check_patches(root: Any, meta: Any, bad: Callable[[str], None]) -> None:
    """Every patch array: shapes as declared, and obs_index rows inside the table it points to."""
    from hestdata.store.consolidated import open_child

    for name, pqc in meta.qc.patches.items():
        try:
            g = open_child(root, f"{L.PATCH_GROUP}/{name}")
            imgs, idx, cen = g[L.PATCH_IMAGES], g[L.PATCH_OBS_INDEX], g[L.PATCH_CENTERS]
        except KeyError as exc:
            bad(f"patch array {name}: missing {exc}")
            continue
        p = int(g.attrs.get("patch_size_px", -1))
        expect = (pqc.n_patches, len(meta.markers), p, p) if meta.markers else (pqc.n_patches, p, p, 3)
        if tuple(imgs.shape) != expect:
            bad(f"patch array {name}: images shape {imgs.shape} != {expect}")
        if idx.shape != (pqc.n_patches,) or cen.shape != (pqc.n_patches, 2):
            bad(f"patch array {name}: obs_index {idx.shape} / centers_um {cen.shape} do not match {pqc.n_patches} patches")
            continue
        v = idx[:]
        table = g.attrs.get("obs_index_table")
        prefix = f"tables/{L.TABLE}_"
        n_rows = (meta.qc.tables.get(table[len(prefix):]) if table and table.startswith(prefix)
                  else meta.qc.n_obs if table else None)
        if len(v) and n_rows is not None and (v.min() < 0 or v.max() >= n_rows):
            bad(f"patch array {name}: obs_index outside [0, {n_rows}) of {table}")


def _doubts(path: Path, meta: Any, warn: list[str]) -> None:
    """Warnings: what is valid by the specification but should be looked at."""
    for name, pqc in meta.qc.patches.items():
        if pqc.n_patches == 0:
            warn.append(f"{path.name}: patch array {name} holds no patches "
                        f"({pqc.n_skipped_off_image} off the image, {pqc.n_skipped_low_tissue} low tissue)")
    ps = meta.pixel_size_um
    if ps is not None and ps.flagged:
        warn.append(f"{path.name}: pixel size flagged: {ps.trusted} {ps.value:.4g} µm/px, embedded {ps.embedded}, "
                    f"estimated {ps.estimated} ({ps.disagreement_pct} % apart)"
                    + (f"; likely {ps.unit_confusion}" if ps.unit_confusion else ""))
    a = getattr(meta.qc, "image_spot_agreement", None)
    if a is not None and a.mismatch:
        warn.append(f"{path.name}: the spots do not agree with the image ({a.n_on_otsu_tissue} of "
                    f"{a.n_in_tissue - a.n_off_image} on tissue, {a.n_off_image} off the image); converted on request")


def _check_files(sample: Any, checksums: bool, bad: Callable[[str], None]) -> None:
    """The sample's files against its own manifest (format 2): every listed file present with its size (and
    sha256), no file the manifest does not list."""
    from hestdata.store.manifest import file_sha256

    path = sample.local_path
    try:
        files = sample.manifest()
    except Exception as exc:
        bad(str(exc))
        return
    for rel, (size, sha) in sorted(files.items()):
        p = path / rel
        if not p.is_file():
            bad(f"{L.SAMPLE_MANIFEST} lists {rel} but it is absent")
        elif p.stat().st_size != size:
            bad(f"{rel}: size {p.stat().st_size} != its manifest's {size}")
        elif checksums and file_sha256(p) != sha:
            bad(f"{rel}: sha256 differs from its manifest")
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_file() and rel != L.SAMPLE_MANIFEST and rel not in files \
                and not any(part.startswith(".") for part in rel.split("/")):
            bad(f"{rel} is not in its {L.SAMPLE_MANIFEST}")


def _validate_sample(sample: Any, out: list[str], warn: list[str] | None = None, checksums: bool = True) -> None:
    """Every element the sample's variant stores (spots, cells, channels, slide), as its metadata declares, and
    (format 2) its files as its manifest lists them."""
    path = sample.local_path

    def bad(msg: str) -> None:
        out.append(f"{path.name}: {msg}")

    in_v2_root = sample.root is not None and sample.root.format_version == 2
    if (path / L.SAMPLE_MANIFEST).is_file() or in_v2_root:
        _check_files(sample, checksums, bad)
    opened = _open_metadata(sample, bad)
    if opened is None:
        return
    root, meta = opened
    if warn is not None:
        _doubts(path, meta, warn)
    variant = L.variant_of(meta)
    region = L.VARIANT_REGION[variant]
    missing = set(meta.missing_elements)
    if region is not None:  # variants with a table: spots and cells
        if "expression" not in missing:
            _check_table(root, meta, region, bad)
        _check_shapes(path, meta, region, "shapes" in missing, bad)
    if meta.image is not None:
        _check_image(root, meta, L.VARIANT_IMAGE[variant], bad)
    _check_patches(root, meta, bad)


def _validate_root_v1(root: Path, out: list[str], checksums: bool, warn: list[str] | None = None) -> int:
    """A format-1 root (read as it is; ``hestdata upgrade`` moves it to format 2)."""
    import pyarrow.parquet as pq

    from hestdata.store.catalog import CATALOG_SCHEMA, FORMAT2_COLUMNS
    from hestdata.store.manifest import file_sha256, load_manifest

    samples = sorted(p for p in (root / L.SAMPLES).glob(f"*{L.SAMPLE_SUFFIX}") if L.is_sample_dir(p))
    cat = root / L.CATALOG
    if not cat.is_file():
        out.append(f"{L.CATALOG} missing")
    else:
        try:
            t = pq.read_table(cat)
            missing = [c for c in CATALOG_SCHEMA if c not in t.column_names and c not in FORMAT2_COLUMNS]
            if missing:
                out.append(f"{L.CATALOG} lacks column(s) {missing}")
            ids = t.column("id").to_pylist() if "id" in t.column_names else []
            if len(ids) != len(set(ids)):
                out.append(f"{L.CATALOG} has duplicate ids")
            on_disk = {p.name[: -len(L.SAMPLE_SUFFIX)] for p in samples}
            for sid in sorted(set(ids) - on_disk):
                out.append(f"{L.CATALOG} lists {sid!r} but {L.sample_relpath(sid)} is absent")
            for sid in sorted(on_disk - set(ids)):
                out.append(f"{L.sample_relpath(sid)} is not in {L.CATALOG}")
        except Exception as exc:
            out.append(f"{L.CATALOG} unreadable ({type(exc).__name__}: {exc})")
    try:
        files = load_manifest(root)["files"]
    except Exception as exc:
        out.append(str(exc))
        files = {}
    if not (root / L.MANIFEST).is_file():
        out.append(f"{L.MANIFEST} missing")
    for rel, entry in sorted(files.items()):
        p = root / rel
        if not p.is_file():
            out.append(f"{L.MANIFEST} lists {rel} but it is absent")
        elif p.stat().st_size != entry["size"]:
            out.append(f"{rel}: size {p.stat().st_size} != manifest {entry['size']}")
        elif checksums and file_sha256(p) != entry["sha256"]:
            out.append(f"{rel}: sha256 differs from the manifest")
    listed = set(files)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in listed and p.name not in (L.MANIFEST, L.LOCK) \
                and not any(part.startswith(".") for part in Path(rel).parts) and rel.split("/")[0] not in L.DERIVED:
            out.append(f"{rel} is not in {L.MANIFEST}")
    _check_digests(root, files, out)
    for p in leftovers(root, include_downloads=True):
        out.append(f"{p.relative_to(root).as_posix()}: left over by an interrupted write "
                   f"(run `hestdata repair {root}`)")
    from hestdata.store.root import StoredSample

    for s in samples:
        _validate_sample(StoredSample.open(s), out, warn, checksums)
    return len(samples)


def _check_digests(root: Path, files: dict[str, Any], out: list[str]) -> None:
    """Each catalog row's sha256 is the digest of its sample's manifest entries (catalog and manifest agree).
    Entries are grouped by sample once: linear in the manifest, whatever the number of samples."""
    import hashlib

    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(root / L.CATALOG, columns=["id", "sha256"]).to_pylist()
    except Exception:
        return  # reported above
    by_sample: dict[str, list[str]] = {}
    for path in sorted(files):
        parts = path.split("/", 2)
        if parts[0] == L.SAMPLES and len(parts) > 2:
            e = files[path]
            by_sample.setdefault(parts[1], []).append(f"{path}\t{e['size']}\t{e['sha256']}\n")
    for row in rows:
        lines = by_sample.get(f"{row['id']}{L.SAMPLE_SUFFIX}")
        if lines and hashlib.sha256("".join(lines).encode()).hexdigest() != row["sha256"]:
            out.append(f"{L.CATALOG}: sha256 of {row['id']!r} does not match {L.MANIFEST} (interrupted publication?)")


ROOT_ENTRIES = {L.ROOT_POINTER, L.CATALOG_DIR, L.SAMPLES, L.COHORTS, L.LOCK, *L.DERIVED}


def _validate_root_v2(root: Path, out: list[str], checksums: bool, warn: list[str]) -> int:
    """A format-2 root: its pointer and catalog version, each catalog row against its sample (digest of the
    sample's manifest, the files, the content), samples no row names, the root's own files, leftovers. Linear in
    what the root holds: each sample is read once."""
    from hestdata.errors import HestdataError
    from hestdata.store.catalog import CATALOG_SCHEMA
    from hestdata.store.manifest import file_sha256
    from hestdata.store.pending import pending_ids
    from hestdata.store.root import Root

    try:
        r = Root.open(root)
    except HestdataError as exc:
        out.append(f"{exc} (run `hestdata repair {root}` to rebuild the catalog from the samples)")
        return 0
    missing = [c for c in CATALOG_SCHEMA if c not in r.catalog.columns]
    if missing:
        out.append(f"catalog version {r.version} lacks column(s) {missing}")
    rows = {row["id"]: row for row in r.catalog.to_dicts()}
    on_disk = {p.name[: -len(L.SAMPLE_SUFFIX)] for p in (root / L.SAMPLES).glob(f"*{L.SAMPLE_SUFFIX}")
               if L.is_sample_dir(p)} if (root / L.SAMPLES).is_dir() else set()
    for sid in sorted(set(rows) - on_disk):
        out.append(f"the catalog lists {sid!r} but {L.sample_relpath(sid)} is absent")
    for sid in sorted(on_disk - set(rows)):
        out.append(f"{L.sample_relpath(sid)} is not in the catalog (version {r.version})")
    for sid in pending_ids(root):
        out.append(f"{sid}: committed but its publication was interrupted (run `hestdata repair {root}`)")
    for rel, (size, sha) in sorted(r.root_files().items()):
        p = root / rel
        if not p.is_file() or p.stat().st_size != size or (checksums and file_sha256(p) != sha):
            out.append(f"{rel}: missing or differs from {L.ROOT_POINTER}")
    listed = set(r.root_files())
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or p.name in ROOT_ENTRIES - {L.COHORTS}:
            continue
        if p.name == L.COHORTS and p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                rel = f.relative_to(root).as_posix()
                if rel not in listed and not any(part.startswith(".") for part in rel.split("/")):
                    out.append(f"{rel} is not in {L.ROOT_POINTER}")
            continue
        out.append(f"{p.name} is not part of a hestdata root")
    for p in leftovers(root, include_downloads=True):
        out.append(f"{p.relative_to(root).as_posix()}: left over by an interrupted write "
                   f"(run `hestdata repair {root}`)")
    for sid in sorted(set(rows) & on_disk):
        _validate_sample(r.sample(sid), out, warn, checksums)
    return len(on_disk)


def _validate_root(root: Path, out: list[str], checksums: bool, warn: list[str]) -> int:
    from hestdata.store.root import local_format
    from hestdata.store.upgrade import MARKER

    if (root / MARKER).exists():
        out.append(f"an upgrade to store format 2 was interrupted (run `hestdata upgrade {root}` to finish it)")
        return 0
    if local_format(root) == 2:
        return _validate_root_v2(root, out, checksums, warn)
    return _validate_root_v1(root, out, checksums, warn)


def validate(path: str | Path, *, checksums: bool = True) -> ValidationReport:
    """Validate a root (catalog, every sample against its manifest and the specification) or one
    ``samples/<id>.zarr`` (inside a format-2 root, also against its catalog row).

    ``checksums=False`` skips re-hashing files (sizes are still checked).
    """
    p = Path(path)
    if not p.exists():
        return ValidationReport(p, "unknown", [f"{p}: not found"])
    if p.name.endswith(L.SAMPLE_SUFFIX) or (p / "zarr.json").is_file():
        rep = ValidationReport(p, "sample", n_samples=1)
        _validate_one(p, rep, checksums)
        return rep
    rep = ValidationReport(p, "root")
    rep.n_samples = _validate_root(p, rep.violations, checksums, rep.warnings)
    return rep


def _validate_one(p: Path, rep: ValidationReport, checksums: bool) -> None:
    """One sample; in a format-2 root its catalog row too (one row read: O(the sample), whatever the root)."""
    from hestdata.errors import HestdataError
    from hestdata.store.root import Root, StoredSample, local_format

    root = p.parent.parent
    sid = p.name[: -len(L.SAMPLE_SUFFIX)]
    sample = StoredSample.open(p)
    if p.parent.name == L.SAMPLES and local_format(root) == 2:
        try:
            r = Root.open(root, ids=[sid])  # its row only: O(one row group), whatever the root holds
        except HestdataError as exc:
            rep.violations.append(str(exc))
        else:
            if sid in r:
                sample = r.sample(sid)  # its manifest is checked against the row's digest
            else:
                rep.violations.append(f"{p.name}: not in the catalog of {root} (version {r.version})")
    _validate_sample(sample, rep.violations, rep.warnings, checksums)
