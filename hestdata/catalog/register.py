"""``hestdata register COHORT.yaml --root ROOT``: convert a cohort sample by sample as Dask tasks.

Each task hashes its inputs (file contents, the sample's spec, the cohort defaults, the hestdata version); a
sample already in the root with the same hash is *unchanged* and skipped, so re-running is idempotent and
resumes after a crash. Each sample is written atomically by its task; the catalog and manifest are updated once
at the end, under the root lock, so a registration killed mid-run leaves the previous catalog intact, and two
registrations into one root serialise their publication. A report lists converted, unchanged and failed
samples with reasons; it and the validated descriptor are stored in ``ROOT/cohorts/``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hestdata._version import __version__
from hestdata.catalog.cohort import Cohort, SampleSpec, load_cohort
from hestdata.store import layout as L


@dataclass
class SampleOutcome:
    id: str
    status: str  # converted | unchanged | failed
    reason: str = ""
    seconds: float = 0.0


@dataclass
class RegistrationReport:
    cohort: str
    root: str
    outcomes: list[SampleOutcome] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""

    def ids(self, status: str) -> list[str]:
        return [o.id for o in self.outcomes if o.status == status]

    @property
    def ok(self) -> bool:
        return not self.ids("failed")

    def summary(self) -> str:
        return (f"{self.cohort}: {len(self.ids('converted'))} converted, {len(self.ids('unchanged'))} unchanged, "
                f"{len(self.ids('failed'))} failed")


def _hash_path(h: Any, p: Path) -> None:
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
    for f in files:
        h.update(f"{f.relative_to(p.parent) if p.is_file() else f.relative_to(p)}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            while b := fh.read(1 << 20):
                h.update(b)


def input_hash(spec: dict[str, Any], base: str) -> str:
    """sha256 over the sample's resolved spec (incl. defaults), its input files' contents and hestdata's version."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in spec.items() if k != "inputs"}, sort_keys=True).encode())
    h.update(__version__.encode())
    for key in sorted(spec["inputs"]):
        h.update(f"\0input:{key}\0".encode())
        _hash_path(h, Path(base) / spec["inputs"][key])
    return h.hexdigest()


def _resolve(cohort: Cohort, s: SampleSpec) -> dict[str, Any]:
    d = cohort.defaults
    meta = {k: v for k, v in {"organ": d.organ, "species": d.species, "disease_state": d.disease_state,
                              "oncotree_code": d.oncotree_code, "preservation": d.preservation,
                              "panel": d.panel}.items() if v is not None}
    meta.update({"cohort": cohort.name, "license": cohort.license})
    if cohort.citation:
        meta["citation"] = cohort.citation
    if cohort.source_url:
        meta["source_url"] = cohort.source_url
    meta.update({k: v for k, v in s.metadata.items() if v is not None})
    return {"id": s.id, "technology": s.technology or d.technology, "inputs": dict(s.inputs),
            "options": dict(s.options), "metadata": meta, "patches": s.patches if s.patches is not None else d.patches,
            "min_tissue_fraction": d.min_tissue_fraction, "pixel_size_um": s.pixel_size_um or d.pixel_size_um}


def read_sample(spec: dict[str, Any], base: str) -> Any:
    """Run the reader for one resolved spec (inputs relative to ``base``)."""
    b = Path(base)
    inp = {k: b / v for k, v in spec["inputs"].items()}
    sid, ps, opts, tech = spec["id"], spec["pixel_size_um"], spec["options"], spec["technology"]
    if tech == "visium":
        from hestdata.sources.visium import read_visium

        return read_visium(inp["outs"], sample_id=sid, image=inp.get("image"), pixel_size_um=ps)
    if tech == "visium_hd":
        from hestdata.sources.visium_hd import read_visium_hd

        return read_visium_hd(inp["path"], sample_id=sid, image=inp.get("image"), pixel_size_um=ps,
                              bin_size_um=opts.get("bin_size_um"))  # type: ignore[arg-type]
    if tech == "st":
        from hestdata.sources.st_legacy import read_st

        return read_st(inp["counts"], spots=inp["spots"], image=inp["image"], sample_id=sid, pixel_size_um=ps)
    if tech == "anndata":
        from hestdata.sources.anndata_image import read_anndata

        return read_anndata(inp["h5ad"], image=inp["image"], sample_id=sid, pixel_size_um=ps,
                            technology=str(opts.get("technology", "visium")),
                            library_id=opts.get("library_id"))  # type: ignore[arg-type]
    if tech == "hest1k":
        from hestdata.sources.hest1k import read_hest1k

        return read_hest1k(inp["dir"], str(opts.get("hest_id", sid)), sample_id=sid, pixel_size_um=ps)
    raise ValueError(f"unknown technology {tech!r}")


def _convert_other(spec: dict[str, Any], base: str, root: str, meta: dict[str, Any], digest: str) -> None:
    """Xenium, multiplex and whole-slide samples (their own converters; options from the sample spec)."""
    b = Path(base)
    inp = {k: b / v for k, v in spec["inputs"].items()}
    opts, sid, ps = spec["options"], spec["id"], spec["pixel_size_um"]
    common = {"overwrite": True, "metadata": meta, "publish_root": False, "input_sha256": digest}
    if spec["technology"] == "xenium":
        from hestdata.convert_xenium import convert_xenium
        from hestdata.sources.xenium import parse_origin, read_xenium

        xs = read_xenium(inp["dir"], sample_id=sid, pixel_size_um=ps,
                         image_origin_um=parse_origin(str(opts["image_origin_um"])) if "image_origin_um" in opts
                         else (0.0, 0.0), he_image=inp.get("he_image"), he_alignment=inp.get("he_alignment"))
        diam = float(opts.get("pseudospot_um", 55.0))
        convert_xenium(xs, root, pseudospot_um=(diam,), patches=spec["patches"], **common)
    elif spec["technology"] == "multiplex":
        from hestdata.convert_multiplex import convert_multiplex
        from hestdata.sources.multiplex import read_multiplex

        ms = read_multiplex(inp["image"], sample_id=sid, panel=inp.get("panel"), markers_csv=inp.get("markers_csv"),
                            mapping=inp.get("mapping"), pixel_size_um=ps)
        convert_multiplex(ms, root, patches=spec["patches"], **common)
    else:
        from hestdata.convert_wsi import convert_wsi
        from hestdata.sources.wsi import open_wsi
        from hestdata.units import PatchGeometry

        px, um = int(opts.get("tile_px", 224)), float(opts.get("tile_um", 256.0))
        convert_wsi(open_wsi(inp["slide"], pixel_size_um=ps), root, sid, patches=[PatchGeometry(px, um / px)],
                    min_tissue_fraction=float(opts.get("min_tissue_fraction", 0.5)), **common)


def convert_task(spec: dict[str, Any], base: str, root: str) -> SampleOutcome:
    """One Dask task: skip if unchanged, else read + convert atomically (no catalog update)."""
    from hestdata.convert import convert
    from hestdata.store.sample import read_metadata

    t0 = time.perf_counter()
    sid = spec["id"]
    try:
        digest = input_hash(spec, base)
        existing = L.sample_path(root, sid)
        if existing.exists():
            try:
                if read_metadata(existing).input_sha256 == digest:
                    return SampleOutcome(sid, "unchanged", seconds=time.perf_counter() - t0)
            except Exception:  # unreadable old sample: convert again
                pass
        meta = dict(spec["metadata"])
        if spec["technology"] in ("xenium", "multiplex", "wsi"):
            _convert_other(spec, base, root, meta, digest)
            return SampleOutcome(sid, "converted", seconds=time.perf_counter() - t0)
        sample = read_sample(spec, base)
        convert(sample, root, patches=spec["patches"], overwrite=True, min_tissue_fraction=spec["min_tissue_fraction"],
                metadata=meta, publish_root=False, input_sha256=digest)
        return SampleOutcome(sid, "converted", seconds=time.perf_counter() - t0)
    except Exception as exc:  # a failed sample is reported, never fatal for the others
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return SampleOutcome(sid, "failed", f"{type(exc).__name__}: {msg}", time.perf_counter() - t0)


def register_cohort(cohort_file: str | Path, root: str | Path, *, scheduler: str | None = None, n_workers: int = 2,
                    echo: Any = None) -> RegistrationReport:
    """Validate ``cohort_file``, convert its samples as Dask tasks, publish them once; return the report."""
    from hestdata.distributed import dask_client
    from hestdata.metadata import now_iso
    from hestdata.store.atomic import atomic_write_bytes
    from hestdata.store.catalog import publish

    cohort, base = load_cohort(cohort_file)
    r = Path(root).resolve()
    (r / L.SAMPLES).mkdir(parents=True, exist_ok=True)
    specs = [_resolve(cohort, s) for s in cohort.samples]
    report = RegistrationReport(cohort.name, str(r), started_at=now_iso())
    with dask_client(scheduler, n_workers=n_workers) as client:
        from distributed import as_completed

        futures = [client.submit(convert_task, spec, str(base), str(r), pure=False, key=f"convert-{spec['id']}-{i}")
                   for i, spec in enumerate(specs)]
        for fut in as_completed(futures):
            outcome = fut.result()
            report.outcomes.append(outcome)
            if echo:
                echo(f"{outcome.id}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else "")
                     + f" [{outcome.seconds:.1f} s]")
    report.outcomes.sort(key=lambda o: o.id)
    ready = report.ids("converted") + report.ids("unchanged")
    if ready:
        publish(r, ready)
    report.finished_at = now_iso()
    cdir = r / L.COHORTS
    descriptor = cohort.model_dump(mode="json")
    atomic_write_bytes(cdir / f"{cohort.name}.json", (json.dumps(descriptor, indent=2) + "\n").encode())
    atomic_write_bytes(cdir / f"{cohort.name}.report.json",
                       (json.dumps(asdict(report), indent=2) + "\n").encode())
    publish(r, [])  # the cohort files join the manifest
    return report
