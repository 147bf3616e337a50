"""``hestdata.download("hest1k", dest, where=...)``: HEST-1k subsets by query, straight from where they are
published into a store.

``hest1k`` is a built-in remote: ``hf://datasets/MahmoodLab/hest`` through huggingface_hub's fsspec filesystem (a
gated dataset: accept its terms on the Hub and log in with ``huggingface-cli login`` or ``$HF_TOKEN``; the token
is read by huggingface_hub and never printed). Any other fsspec URL holding a HEST-layout folder (an S3 mirror, a
lab share, ``https://``) works the same. The metadata CSV (``HEST_v*.csv``) is read remotely and filtered with
the same query language as catalog queries (hestdata.store.query); only the files each selected sample needs are fetched (in parallel, resumable by
byte range, size-checked, and sha256-checked where the source publishes digests: the Hub's LFS digests, or a
``SHA256SUMS`` file beside the CSV), into ``DEST/.hest-cache/`` in HEST's own layout; then each sample is
converted as a Dask task with the rules of ``convert hest1k`` (pixel size from HEST's metadata, image–spot
agreement, gene ids) and published into DEST. A failed sample is reported and never blocks the others;
technologies not imported yet (Xenium, Visium HD) are refused with the reason, never half-converted.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hestdata.store.remotes import BUILTIN_REMOTES

HEST1K_URL = BUILTIN_REMOTES["hest1k"]
IMPORTED = {"visium": "visium", "spatial transcriptomics": "st", "st": "st"}
NOT_YET = {"xenium": "Xenium entries need transcripts/ and xenium_seg/ imported as a cells sample",
           "visium hd": "Visium HD entries need binned_outputs/ imported as a bins sample"}
CACHE = ".hest-cache"


@dataclass
class HestSelection:
    """What a HEST download would fetch: per sample id, the files (rel, size, sha256 or None); refusals."""

    source: str
    files: dict[str, list[tuple[str, int, str | None]]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(size for fs in self.files.values() for _, size, _ in fs)

    def lines(self) -> list[str]:
        """A dry run's listing: one line per sample, then the total."""
        out = [f"{sid}: {len(fs)} file(s), {sum(s for _, s, _ in fs):,} bytes" for sid, fs in self.files.items()]
        out += [f"{sid}: refused ({why})" for sid, why in self.refused.items()]
        out.append(f"total: {len(self.files)} sample(s), {self.total_bytes:,} bytes")
        return out


@dataclass
class HestReport:
    """Outcome of a HEST download: the selection, and per-sample outcomes (converted, unchanged, failed…)."""

    selection: HestSelection
    outcomes: list[Any] = field(default_factory=list)
    dest: Path | None = None

    def ids(self, status: str) -> list[str]:
        return sorted(o.id for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> bool:
        return not self.ids("failed") and not self.ids("refused")


def is_hest_layout(fs: Any, base: str) -> str | None:
    """The metadata CSV of a HEST-layout folder (``HEST_v*.csv``, newest first), or None."""
    from hestdata.errors import StoreError
    from hestdata.io import retry
    from hestdata.io.fs import join

    try:
        names = [p.rsplit("/", 1)[-1] for p in retry.with_retries(lambda: fs.ls(base, detail=False))]
    except (FileNotFoundError, OSError):
        return None
    except Exception as exc:  # e.g. aiohttp's ClientResponseError: a listing refused (4xx) is no HEST layout
        if retry.is_transient(exc):
            raise StoreError(f"{base}: cannot list the folder ({type(exc).__name__}: {exc})") from None
        return None
    csvs = sorted((n for n in names if n.startswith("HEST_v") and n.endswith(".csv")), reverse=True)
    return join(base, csvs[0]) if csvs else None


def read_hest_metadata(fs: Any, csv_path: str) -> Any:
    """The HEST metadata CSV as a polars DataFrame (UTF-8 BOM stripped, ``id`` column required)."""
    import polars as pl

    from hestdata.errors import InputError

    raw = fs.cat_file(csv_path)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        df = pl.read_csv(io.BytesIO(raw), infer_schema_length=10_000)
    except Exception as exc:
        raise InputError(csv_path, f"cannot read the HEST metadata CSV ({exc})") from exc
    if "id" not in df.columns:
        raise InputError(csv_path, "the HEST metadata CSV has no 'id' column")
    return df


def select_ids(meta: Any, where: Any, ids: list[str] | None, limit: int | None, csv_path: str) -> list[str]:
    """Ids chosen by ``where`` (query text in :mod:`hestdata.store.query`'s language, or a polars expression),
    ``ids`` and ``limit``, in CSV order."""
    import polars as pl

    from hestdata.errors import InputError

    if ids is not None:
        unknown = sorted(set(ids) - set(meta["id"].cast(pl.String).to_list()))
        if unknown:
            raise InputError(csv_path, f"unknown HEST id(s) {unknown[:5]}")
        meta = meta.filter(pl.col("id").is_in(list(ids)))
    if where is not None:
        from hestdata.store.query import filter_frame

        meta = filter_frame(meta, where, f"the HEST metadata ({csv_path})")
    out = meta["id"].cast(pl.String).to_list()
    return out[:limit] if limit is not None else out


def _digests(fs: Any, base: str) -> dict[str, str]:
    """sha256 by relative path from a ``SHA256SUMS`` file beside the CSV (``<hex>  <path>`` lines), if any."""
    from hestdata.io.fs import join

    try:
        text = fs.cat_file(join(base, "SHA256SUMS")).decode()
    except (FileNotFoundError, OSError):
        return {}
    out = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            out[parts[1].lstrip("*").strip()] = parts[0].lower()
    return out


def _info(fs: Any, path: str) -> tuple[int, str | None] | None:
    """(size, LFS sha256 if the filesystem publishes one) of a remote file, or None if it is absent."""
    try:
        info = fs.info(path)
    except (FileNotFoundError, OSError):
        return None
    lfs = info.get("lfs") or {}
    sha = lfs.get("sha256") if isinstance(lfs, dict) else None
    return int(info["size"]), sha


def plan_selection(fs: Any, base: str, meta: Any, ids: list[str], patches_from: str) -> HestSelection:
    """The files each selected sample needs (sizes and digests looked up, nothing fetched)."""
    import polars as pl

    from hestdata.io.fs import join

    sel = HestSelection(source=base)
    digests = _digests(fs, base)
    tech = dict(zip(meta["id"].cast(pl.String).to_list(),
                    meta["st_technology"].cast(pl.String).to_list() if "st_technology" in meta.columns
                    else [""] * meta.height, strict=True))
    for sid in ids:
        t = str(tech.get(sid) or "").strip().lower()
        if t in NOT_YET or t not in IMPORTED:
            sel.refused[sid] = NOT_YET.get(t, f"st_technology {tech.get(sid)!r} is not imported")
            continue
        wanted = [f"st/{sid}.h5ad", f"metadata/{sid}.json"]
        wanted.append(next((r for r in (f"wsis/{sid}.tif", f"wsis/{sid}.tiff") if fs.exists(join(base, r))),
                           f"wsis/{sid}.tif"))
        if patches_from == "hest":
            wanted.append(f"patches/{sid}.h5")
        files, missing = [], []
        for rel in wanted:
            info = _info(fs, join(base, rel))
            if info is None:
                missing.append(rel)
            else:
                files.append((rel, info[0], info[1] or digests.get(rel)))
        if missing:
            sel.refused[sid] = f"missing on the remote: {', '.join(missing)}"
        else:
            sel.files[sid] = files
    return sel


def download_hest1k(source: str, dest: str | os.PathLike[str], *, where: Any = None, ids: list[str] | None = None,
                    limit: int | None = None, dry_run: bool = False, patches_from: str = "recut",
                    patches: list[str] | None = None, workers: int = 8, convert_workers: int = 2,
                    storage_options: dict[str, Any] | None = None, overwrite: bool = False,
                    progress: Any = None, echo: Any = None) -> HestReport:
    """Select HEST samples by query, fetch what they need, convert and publish them into ``dest``."""
    from hestdata.errors import InputError
    from hestdata.io.fs import ProcessLocalFS, split_url
    from hestdata.remote.download import Remote

    if patches_from not in ("recut", "hest"):
        raise InputError(None, f"patches_from must be 'recut' or 'hest', got {patches_from!r}")
    protocol, base = split_url(source)
    handle = ProcessLocalFS(protocol, dict(storage_options or {}))
    fs = handle.get()
    csv_path = is_hest_layout(fs, base)
    if csv_path is None:
        raise InputError(source, "not a HEST-1k layout (no HEST_v*.csv at its top)")
    meta = read_hest_metadata(fs, csv_path)
    selection = plan_selection(fs, base, meta, select_ids(meta, where, ids, limit, csv_path), patches_from)
    report = HestReport(selection, dest=Path(dest))
    if dry_run:
        return report
    _fetch_and_convert(Remote(handle, base), report, patches_from, patches, workers, convert_workers, overwrite,
                       progress, echo)
    return report


def _fetch_and_convert(remote: Any, report: HestReport, patches_from: str, patches: list[str] | None,
                       workers: int, convert_workers: int, overwrite: bool, progress: Any, echo: Any) -> None:
    """Fetch every selected sample's files into the cache, then convert the complete ones as Dask tasks."""
    from hestdata.cohort.register import RegistrationReport, SampleOutcome, publish_outcomes, run_tasks
    from hestdata.remote.download import fetch_files
    from hestdata.store.safety import inside

    dest = Path(report.dest or ".")
    cache = dest / CACHE
    (dest / "samples").mkdir(parents=True, exist_ok=True)
    sel = report.selection
    # one HEST-layout folder per sample: its conversion hashes (and reads) its own files only
    plan = [(sid, rel, size, sha, inside(cache, f"{sid}/{rel}")) for sid, files in sel.files.items()
            for rel, size, sha in files]
    failures = fetch_files(remote, plan, progress, workers)
    outcomes = [SampleOutcome(sid, "refused", why) for sid, why in sel.refused.items()]
    outcomes += [SampleOutcome(sid, "failed", f"download: {why}") for sid, why in failures.items()]
    options = {"patches_from": patches_from} | ({"patches": patches} if patches is not None else {})
    specs = [{"id": sid, "technology": "hest1k", "inputs": {"dir": f"{CACHE}/{sid}"}, "metadata": {"cohort": "hest1k"},
              "options": {**options, "hest_id": sid}} for sid in sel.files if sid not in failures]
    reg = RegistrationReport("hest1k", str(dest.resolve()))
    if specs:
        run_tasks(specs, str(dest.resolve()), dest.resolve(), None, convert_workers, overwrite, None, reg, echo)
    publish_outcomes(dest.resolve(), reg)
    report.outcomes = outcomes + reg.outcomes


def download(source: str | os.PathLike[str] | None, dest: str | os.PathLike[str], *, ids: list[str] | None = None,
             where: Any = None, elements: list[str] | None = None, patches: list[str] | None = None,
             workers: int = 8, storage_options: dict[str, Any] | None = None, progress: Any = None,
             overwrite: bool = False, limit: int | None = None, dry_run: bool = False, patches_from: str = "recut",
             convert_workers: int = 2, echo: Any = None, push_wait_s: float = 900.0) -> Any:
    """Download a subset of a root — ours (returns the local root's path) or a HEST-1k layout, e.g. the
    built-in ``"hest1k"`` remote (returns a :class:`HestReport`; ``dry_run`` lists ids and sizes only).

    ``where`` is query text (``"organ = 'Bowel' and st_technology = 'Visium'"``, hestdata.store.query) or a polars expression over the
    catalog / HEST metadata CSV; ``ids`` and ``limit`` narrow it. For our layout see
    :func:`hestdata.remote.download.download` (``elements``, ``patches``, ``overwrite``); for HEST, ``patches``
    are geometries to cut and ``patches_from="hest"`` keeps HEST's own patches.

    ``workers`` is the number of files fetched at once (threads: downloads wait on the network); a HEST-1k
    download also converts what it fetched on ``convert_workers`` processes (a conversion holds an image level in
    memory, so keep it at the cores and memory you have). ``push_wait_s``: how long a download from one of our
    roots waits for a push that is replacing the samples it fetches (then resumes against the new version).
    """
    from hestdata.errors import InputError
    from hestdata.io.fs import ProcessLocalFS, join, split_url
    from hestdata.remote.download import download as download_root
    from hestdata.store.remotes import resolve_remote

    url, opts = resolve_remote(source, storage_options)
    protocol, base = split_url(url)
    fs = ProcessLocalFS(protocol, opts).get()
    from hestdata.store import layout as L

    is_root = any(fs.exists(join(base, f)) for f in (L.ROOT_POINTER, L.MANIFEST))
    if not is_root and is_hest_layout(fs, base):
        if elements is not None:
            raise InputError(url, "elements= applies to hestdata roots; a HEST-1k download converts whole samples")
        return download_hest1k(url, dest, where=where, ids=ids, limit=limit, dry_run=dry_run,
                               patches_from=patches_from, patches=patches, workers=workers, convert_workers=convert_workers,
                               storage_options=opts, overwrite=overwrite, progress=progress, echo=echo)
    if dry_run or limit is not None:
        raise InputError(url, "dry_run and limit apply to HEST-1k layouts")
    return download_root(url, dest, ids=ids, where=where, elements=elements, patches=patches, workers=workers,
                         storage_options=opts, progress=progress, overwrite=overwrite, push_wait_s=push_wait_s)
