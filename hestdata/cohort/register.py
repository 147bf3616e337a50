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
from hestdata.cohort.cohort import Cohort, SampleSpec, load_cohort, sample_options
from hestdata.sources.registry import get_source
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
    src = get_source(s.technology or d.technology or "")
    opts = src.parse_options(sample_options(cohort, s, src))
    return {"id": s.id, "technology": src.name, "inputs": dict(s.inputs), "metadata": meta,
            "options": opts.model_dump(mode="json", exclude_unset=True)}


def read_sample(spec: dict[str, Any], base: str) -> Any:
    """Run the source's reader for one resolved spec (inputs relative to ``base``)."""
    src = get_source(spec["technology"])
    return src.read({k: Path(base) / v for k, v in spec["inputs"].items()}, sample_id=spec["id"],
                    options=spec["options"])


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
        sample = read_sample(spec, base)
        opts = get_source(spec["technology"]).parse_options(spec["options"])
        convert(sample, root, options=opts, overwrite=True, metadata=dict(spec["metadata"]), publish_root=False,
                input_sha256=digest)
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
