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
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hestdata._version import __version__
from hestdata.cohort import DEFAULT_TIMEOUT_S
from hestdata.cohort.cohort import Cohort, SampleSpec, load_cohort, sample_options
from hestdata.io import progress
from hestdata.sources.registry import get_source
from hestdata.store import layout as L


@dataclass
class SampleOutcome:
    id: str
    status: str  # converted | unchanged | refused (id owned by someone else) | failed
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
        return not self.ids("failed") and not self.ids("refused")

    def summary(self) -> str:
        return (f"{self.cohort}: {len(self.ids('converted'))} converted, {len(self.ids('unchanged'))} unchanged, "
                f"{len(self.ids('refused'))} refused, {len(self.ids('failed'))} failed")


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


def convert_task(spec: dict[str, Any], base: str, root: str, overwrite: bool = False,
                 timeout_s: float | None = DEFAULT_TIMEOUT_S) -> SampleOutcome:
    """One Dask task: skip if unchanged, refuse an id owned by someone else, else convert in a child process.

    The conversion runs isolated (a fresh interpreter) so that a crash, an out-of-memory kill or a library that
    hangs (libhdf5 on a corrupt file) loses this sample only: a killed or timed-out conversion is retried once,
    then reported as failed. Nothing is published here (the registration publishes once, at the end)."""
    t0 = time.perf_counter()
    sid = spec["id"]
    try:
        digest = input_hash(spec, base)
        refusal = _ownership(spec, root, digest, overwrite)
        if refusal is not None:
            status, reason = refusal
            return SampleOutcome(sid, status, reason, seconds=time.perf_counter() - t0)
        outcome = None
        for attempt in (1, 2):
            outcome = _run_isolated(spec, base, root, digest, timeout_s)
            if outcome.status != "lost":
                break
            outcome.reason += f" (attempt {attempt} of 2)"
        assert outcome is not None
        if outcome.status == "lost":
            outcome.status = "failed"
        outcome.seconds = time.perf_counter() - t0
        return outcome
    except Exception as exc:  # a failed sample is reported, never fatal for the others
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return SampleOutcome(sid, "failed", f"{type(exc).__name__}: {msg}", time.perf_counter() - t0)


def _ownership(spec: dict[str, Any], root: str, digest: str, overwrite: bool) -> tuple[str, str] | None:
    """("unchanged", "") for an up-to-date sample of this cohort; ("refused", why) for an id that another cohort
    or a plain conversion owns (unless ``overwrite``); None when the conversion may go ahead."""
    from hestdata.store.sample import read_metadata

    existing = L.sample_path(root, spec["id"])
    if not existing.exists():
        return None
    try:
        meta = read_metadata(existing)
    except Exception as exc:
        return None if overwrite else ("refused", f"an unreadable sample with this id exists ({exc}); pass "
                                                  "--overwrite to replace it")
    if meta.input_sha256 == digest:
        return "unchanged", ""
    cohort = spec["metadata"].get("cohort")
    if overwrite or (meta.input_sha256 is not None and meta.cohort == cohort):
        return None  # this cohort's own sample, with changed inputs: convert again
    owner = f"cohort {meta.cohort!r}" if meta.input_sha256 is not None else "a plain conversion (hestdata convert)"
    return "refused", f"id already used by {owner}; pass --overwrite to replace it"


_CONTEXT: Any = None


def _context() -> Any:
    """A forkserver that has imported the conversion stack (``hestdata.cohort.task``) once per process."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["hestdata.cohort.task"])
        _CONTEXT = ctx
    return _CONTEXT


def _run_isolated(spec: dict[str, Any], base: str, root: str, digest: str, timeout_s: float | None) -> SampleOutcome:
    """Convert in a forked child process; "lost" when it was killed, crashed, or ran past ``timeout_s``."""
    from hestdata.cohort.task import run_job

    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    # the forkserver keeps the environment it started with: the child takes this process's, as it is now
    job = {"spec": spec, "base": base, "root": root, "digest": digest, "environ": dict(os.environ)}
    proc = ctx.Process(target=run_job, args=(job, send), daemon=False)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout_s):  # neither an answer nor the child's death (EOF) within the timeout
            proc.kill()
            proc.join()
            return SampleOutcome(spec["id"], "lost", f"conversion ran past the {timeout_s:g} s timeout")
        try:
            doc = recv.recv()
        except EOFError:  # the child died before answering
            proc.join()
            how = f"killed by signal {-proc.exitcode}" if (proc.exitcode or 0) < 0 else f"exited {proc.exitcode}"
            return SampleOutcome(spec["id"], "lost", f"conversion process {how}")
        proc.join()
        return SampleOutcome(spec["id"], doc["status"], doc.get("reason", ""))
    finally:
        recv.close()


def register_cohort(cohort_file: str | Path, root: str | Path, *, scheduler: str | None = None, n_workers: int = 2,
                    echo: Any = None, overwrite: bool = False, allow_outside_inputs: bool = False,
                    timeout_s: float | None = DEFAULT_TIMEOUT_S) -> RegistrationReport:
    """Validate ``cohort_file``, convert its samples as Dask tasks (one by one in this process when
    ``n_workers=1`` and no ``scheduler``), publish them once; return the report.

    Inputs must lie under the descriptor's folder unless ``allow_outside_inputs``. A sample id that another
    cohort or a plain conversion owns is refused unless ``overwrite``. A lost worker, a crashed or timed-out
    conversion fails that sample only; every converted sample is published and the report is always written."""
    from hestdata.metadata import now_iso
    from hestdata.store.recovery import recover_root

    cohort, base = load_cohort(cohort_file, allow_outside=allow_outside_inputs)
    r = Path(root).resolve()
    (r / L.SAMPLES).mkdir(parents=True, exist_ok=True)
    recover_root(r)
    specs = [_resolve(cohort, s) for s in cohort.samples]
    report = RegistrationReport(cohort.name, str(r), started_at=now_iso())
    try:
        run_tasks(specs, str(base), r, scheduler, n_workers, overwrite, timeout_s, report, echo)
    finally:
        _finish(cohort, base, r, report)
    return report


def run_tasks(specs: list[dict[str, Any]], base: str, r: Path, scheduler: str | None, n_workers: int,
               overwrite: bool, timeout_s: float | None, report: RegistrationReport, echo: Any) -> None:
    """Run one task per sample: on Dask (a given scheduler, or a LocalCluster of ``n_workers`` processes), or, for
    one worker (or one sample) and no scheduler, one after another in this process: each conversion is isolated
    in its own child process either way, and a cluster of one worker would only add its start-up (seconds, and
    an interpreter that imports the conversion stack again). A task whose worker was lost (twice) is a failed
    sample."""

    def record(outcome: SampleOutcome) -> None:
        report.outcomes.append(outcome)
        if echo:
            echo(f"{outcome.id}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else "")
                 + f" [{outcome.seconds:.1f} s]")

    label = f"register {len(specs)} sample(s)"
    if scheduler is None and min(n_workers, len(specs)) <= 1:  # never more worker processes than samples
        for spec in progress.track(specs, label, len(specs)):
            record(convert_task(spec, base, str(r), overwrite, timeout_s))
        return
    from hestdata.distributed import dask_client

    with dask_client(scheduler, n_workers=n_workers) as client:
        from distributed import as_completed

        futures = {client.submit(convert_task, spec, base, str(r), overwrite, timeout_s, pure=False,
                                 key=f"convert-{spec['id']}-{i}"): spec["id"] for i, spec in enumerate(specs)}
        for fut in progress.track(as_completed(list(futures)), label, len(specs)):
            try:
                outcome = fut.result()
            except Exception as exc:  # KilledWorker and friends: this sample only
                outcome = SampleOutcome(futures[fut], "failed", f"{type(exc).__name__}: worker lost ({exc})")
            record(outcome)


def _finish(cohort: Cohort, base: Path, r: Path, report: RegistrationReport) -> None:
    """Publish what was converted, write the descriptor (relative input paths only) and the report."""
    from hestdata.metadata import now_iso
    from hestdata.store.atomic import atomic_write_bytes
    from hestdata.store.publish import publish

    done = {o.id for o in report.outcomes}
    report.outcomes += [SampleOutcome(s.id, "failed", "not run (the registration stopped early)")
                        for s in cohort.samples if s.id not in done]
    publish_outcomes(r, report)
    report.finished_at = now_iso()
    cdir = r / L.COHORTS
    atomic_write_bytes(cdir / f"{cohort.name}.json", (json.dumps(public_descriptor(cohort, base), indent=2) + "\n").encode())
    atomic_write_bytes(cdir / f"{cohort.name}.report.json", (json.dumps(asdict(report), indent=2) + "\n").encode())
    publish(r, [])  # the cohort files join the manifest


def publish_outcomes(r: Path, report: RegistrationReport) -> None:
    """Sort the outcomes, remove what killed conversions left, and publish every converted or unchanged sample."""
    from hestdata.store.publish import publish
    from hestdata.store.recovery import recover_root

    report.outcomes.sort(key=lambda o: o.id)
    recover_root(r, publish=False)  # temporary folders of conversions that were killed
    ready = report.ids("converted") + report.ids("unchanged")
    if ready:
        publish(r, ready)


def public_descriptor(cohort: Cohort, base: Path) -> dict[str, Any]:
    """The descriptor as published: input paths relative to the descriptor's folder, never absolute (inputs
    allowed outside it are recorded by file name only)."""
    import os

    doc = cohort.model_dump(mode="json")
    for s in doc["samples"]:
        for k, v in s["inputs"].items():
            p = (base / v).resolve()
            inside = p == base or base in p.parents
            s["inputs"][k] = os.path.relpath(p, base) if inside else f"<outside the cohort folder>/{p.name}"
    return doc
