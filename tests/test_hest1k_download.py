"""``hestdata.download("hest1k", where=...)``: HEST-1k subsets by query from a loopback S3 mirror (moto)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from tests.conftest import upload
from tests.hest_layout import HEST_MPP, add_section, write_csv

BREAST_ST = "organ = 'Breast' and st_technology = 'Spatial Transcriptomics'"
PATCHES = ["112px_1um"]  # the fixture's images are reduced 2x (1.38 µm/px) to keep the tests fast


@pytest.fixture(scope="module")
def hest_local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HEST layout: two her2st sections, a Xenium entry (not imported yet) and a brain entry (filtered out)."""
    root = tmp_path_factory.mktemp("hestdl") / "hest"
    root.mkdir()
    rows = [add_section(root, "C2", "SPA_C2", scale=2), add_section(root, "C3", "SPA_C3", patches=False, scale=2)]
    rows.append({"dataset_title": "xenium", "id": "XEN_1", "organ": "Breast", "species": "Homo sapiens",
                 "st_technology": "Xenium", "pixel_size_um_estimated": 0.2125, "license": "CC BY 4.0"})
    rows.append({"dataset_title": "brain", "id": "MB_1", "organ": "Brain", "species": "Mus musculus",
                 "st_technology": "Visium", "license": "CC BY 4.0"})
    write_csv(root, rows)
    return root


def _upload(local: Path, opts: dict, bucket: str) -> str:
    return upload(local, bucket, "hest", opts)


@pytest.fixture(scope="module")
def hest_s3(hest_local, s3_server) -> tuple[str, dict, object]:
    url, opts, log = s3_server
    return _upload(hest_local, opts, "hest-mirror"), opts, log


def test_hest1k_resolves_to_the_hub_without_contacting_it(monkeypatch):
    import fsspec
    from huggingface_hub import HfFileSystem
    from huggingface_hub.hf_file_system import parse_hf_uri

    from hestdata.io.fs import split_url
    from hestdata.store.remotes import resolve_remote

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url, opts = resolve_remote("hest1k")
    assert url == "hf://datasets/MahmoodLab/hest" and opts == {}
    protocol, path = split_url(url)
    assert protocol == "hf" and fsspec.get_filesystem_class(protocol) is HfFileSystem
    uri = parse_hf_uri(f"hf://{path}/HEST_v1_1_0.csv")
    assert uri.type == "dataset" and uri.id == "MahmoodLab/hest" and uri.path_in_repo == "HEST_v1_1_0.csv"


def test_dry_run_lists_ids_sizes_and_total_and_fetches_nothing(hest_s3, tmp_path):
    url, opts, log = hest_s3
    log.clear()
    rep = hestdata.download(url, tmp_path / "dest", where="organ = 'Breast'", dry_run=True, storage_options=opts)
    assert sorted(rep.selection.files) == ["SPA_C2", "SPA_C3"] and "Xenium" in rep.selection.refused["XEN_1"]
    assert rep.selection.total_bytes == sum(s for f in rep.selection.files.values() for _, s, _ in f)
    lines = rep.selection.lines()
    assert lines[-1].startswith("total: 2 sample(s)") and any("XEN_1: refused" in ln for ln in lines)
    gets = [ln for ln in log.lines if "GET /hest-mirror/" in ln and "list-type" not in ln and "?" not in ln]
    assert all("HEST_v1_1_0.csv" in g or "SHA256SUMS" in g for g in gets), gets
    assert not (tmp_path / "dest" / "samples").exists() or not list((tmp_path / "dest" / "samples").iterdir())


def test_query_fetches_only_what_it_needs_and_converts(hest_s3, tmp_path):
    url, opts, log = hest_s3
    log.clear()
    # four parallel transfers; the two conversions one by one in-process (run_tasks' Dask path is tests/test_register's)
    rep = hestdata.download(url, tmp_path / "dest", where=BREAST_ST, storage_options=opts, workers=4, patches=PATCHES,
                            convert_workers=1)
    assert rep.ids("converted") == ["SPA_C2", "SPA_C3"] and rep.ok, rep.outcomes
    gets = " ".join(ln for ln in log.lines if "GET /hest-mirror/" in ln)
    assert "/patches/" not in gets and "MB_1" not in gets and "XEN_1" not in gets  # recut: HEST patches not needed
    dest = tmp_path / "dest"
    assert hestdata.open_catalog(dest)["id"].to_list() == ["SPA_C2", "SPA_C3"] and hestdata.validate(dest).ok
    m = hestdata.read_metadata(dest / "samples" / "SPA_C2.zarr")
    assert m.pixel_size_um.value == pytest.approx(2 * HEST_MPP["C2"]) and "x10" in m.pixel_size_um.unit_confusion
    assert m.organ == "Breast" and m.cohort == "hest1k" and m.qc.genes.n_with_gene_id > 14_000
    again = hestdata.download(url, dest, where=BREAST_ST, storage_options=opts, patches=PATCHES, convert_workers=1)
    assert again.ids("unchanged") == ["SPA_C2", "SPA_C3"]  # idempotent: nothing converted twice


def test_resume_after_a_dropped_connection(hest_s3, tmp_path, monkeypatch):
    from hestdata.remote import download as dl_mod

    url, opts, _ = hest_s3
    monkeypatch.setattr(dl_mod, "CHUNK_BYTES", 1 << 20)
    got: list[int] = []

    class Dropped(Exception):
        pass

    def drop(rel: str, n: int) -> None:
        got.append(n)
        if sum(got) > 2 << 20:
            raise Dropped("connection dropped")

    rep = hestdata.download(url, tmp_path / "dest", ids=["SPA_C3"], storage_options=opts, progress=drop, workers=1,
                            patches=PATCHES)
    assert rep.ids("failed") == ["SPA_C3"] and "connection dropped" in rep.outcomes[0].reason
    assert not (tmp_path / "dest" / "samples" / "SPA_C3.zarr").exists()
    first = sum(got)
    second: list[int] = []
    rep = hestdata.download(url, tmp_path / "dest", ids=["SPA_C3"], storage_options=opts,
                            progress=lambda r, n: second.append(n), workers=1, patches=PATCHES)
    assert rep.ids("converted") == ["SPA_C3"]
    total = rep.selection.total_bytes
    assert first + sum(second) <= total + (1 << 20)  # resumed by byte range: at most one chunk fetched twice


def test_checksum_failure_fails_that_sample_only(hest_local, s3_server, tmp_path):
    _, opts, _ = s3_server
    local = tmp_path / "hest"
    shutil.copytree(hest_local, local)
    sums = []
    for p in sorted(local.rglob("*")):
        if p.is_file() and p.parent.name in ("st", "wsis", "metadata"):
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if p.name == "SPA_C3.h5ad":
                digest = "0" * 64  # the mirror's file differs from the published digest
            sums.append(f"{digest}  {p.relative_to(local).as_posix()}")
    (local / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    url = _upload(local, opts, "hest-sums")
    rep = hestdata.download(url, tmp_path / "dest", where=BREAST_ST, storage_options=opts, patches=PATCHES)
    assert rep.ids("converted") == ["SPA_C2"] and rep.ids("failed") == ["SPA_C3"]
    assert "sha256 differs" in next(o.reason for o in rep.outcomes if o.id == "SPA_C3")
    assert hestdata.validate(tmp_path / "dest").ok


def test_cli_on_a_local_hest_folder_with_hest_patches(hest_local, tmp_path):
    r = CliRunner().invoke(app, ["download", str(hest_local), str(tmp_path / "d"), "--where", BREAST_ST,
                                 "--dry-run"])
    assert r.exit_code == 0 and "SPA_C2:" in r.output and "total: 2 sample(s)" in r.output, r.output
    r = CliRunner().invoke(app, ["download", str(hest_local), str(tmp_path / "d"), "--id", "SPA_C2",
                                 "--patches-from", "hest"])
    assert r.exit_code == 0 and "1 converted" in r.output, r.output
    o = hestdata.open_sample(tmp_path / "d" / "samples" / "SPA_C2.zarr")
    stored = o.patches("224px_0.5um")["images"][:]
    with h5py.File(hest_local / "patches" / "SPA_C2.h5") as f:
        ref = f["img"][:]
    assert stored.shape == ref.shape and np.abs(stored.astype(float) - ref.astype(float)).mean() < 3.0
    r = CliRunner().invoke(app, ["download", str(hest_local), str(tmp_path / "d"), "--id", "XEN_1"])
    assert r.exit_code == 1 and "refused: XEN_1" in r.output and "transcripts/" in r.output
    assert hestdata.open_catalog(tmp_path / "d")["id"].to_list() == ["SPA_C2"]
    assert not (tmp_path / "d" / "samples" / "XEN_1.zarr").exists()
