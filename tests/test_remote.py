"""Download, push, streaming and integrity against real loopback servers (moto S3, an HTTP server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import hestdata
from hestdata.remote import download as dl_mod
from tests.conftest import make_bucket
from tests.synth import synthetic_sample


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("remote") / "root"
    for i, organ in enumerate(("skin", "skin", "lung")):
        s = synthetic_sample(f"r{i}", n=12 + 4 * i, seed=i)
        hestdata.convert(s, r, patches=["32px_2um", "64px_0.5um"], min_tissue_fraction=0, shard_patches=8,
                         metadata={"organ": organ, "patient": f"p{i}"})
    return r


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_push_then_download_subset_from_s3(local_root, s3_server, tmp_path):
    url, opts, log = s3_server
    work = _copy(local_root, tmp_path / "work")
    remote = "s3://hest-remote/v1"
    make_bucket("hest-remote", opts)
    rep = hestdata.push(work, remote, storage_options=opts)
    sample_files = {p.relative_to(work).as_posix() for p in (work / "samples").rglob("*") if p.is_file()}
    assert {p for p in rep.uploaded if p.startswith("samples/")} == sample_files and rep.unchanged == 0
    assert rep.uploaded[-1] == "hestdata.json"  # the pointer last
    again = hestdata.push(work, remote, storage_options=opts)
    assert again.uploaded == [] and again.unchanged == len(sample_files)
    # change one sample: only its files and the catalog travel
    hestdata.convert(synthetic_sample("r1", n=16, seed=99), work, patches=["32px_2um", "64px_0.5um"],
                     min_tissue_fraction=0, shard_patches=8, overwrite=True, metadata={"organ": "skin"})
    log.clear()
    third = hestdata.push(work, remote, storage_options=opts)
    assert third.uploaded and all(p.startswith(("samples/r1.zarr/", "catalog/")) or p == "hestdata.json"
                                  for p in third.uploaded)
    assert third.samples_changed == ["r1"]
    # the unchanged samples cost nothing: no request names them
    assert not any("r0.zarr" in ln or "r2.zarr" in ln for ln in log.lines)

    log.clear()
    dest = tmp_path / "dest"
    out = hestdata.download(remote, dest, where=pl.col("organ") == "skin", elements=["patches", "expression"],
                            patches=["32px_2um"], storage_options=opts, workers=4)
    cat = hestdata.open_catalog(out)
    assert cat["id"].to_list() == ["r0", "r1"]
    assert cat["patch_arrays"].to_list() == [["32px_2um"], ["32px_2um"]]
    assert cat["elements"].to_list() == [["expression", "patches"]] * 2
    gets = [ln for ln in log.lines if "GET /hest-remote/" in ln]
    assert gets and not any("/images/he/" in g or "/shapes/" in g or "64px_0.5um" in g or "r2.zarr" in g for g in gets)
    assert hestdata.validate(out).ok, hestdata.validate(out).violations
    meta = hestdata.read_metadata(out / "samples" / "r0.zarr")
    assert meta.image is None and meta.missing_elements == ["image", "points", "shapes"]
    from hestdata.remote.download import element_of

    assert element_of("points/transcripts/points.parquet/part.0.parquet") == ("points", None)
    ds = hestdata.PatchDataset(out, patch="32px_2um", decode="cpu")
    assert len(ds) == 12 + 16
    import spatialdata

    with pytest.warns(UserWarning, match="annotating 'spots'"):  # the spots were not downloaded: spatialdata says so
        sd = spatialdata.read_zarr(out / "samples" / "r0.zarr")
    assert "expression" in sd.tables and not sd.images
    # the streamed remote root agrees
    root = hestdata.open_root(remote, storage_options=opts)
    assert root.sample_ids == ["r0", "r1", "r2"] and root.metadata("r2").qc.n_obs == 20
    assert len(hestdata.PatchDataset(root, patch="32px_2um", decode="none")) == 12 + 16 + 20


def test_http_download_resumes_after_interruption(local_root, http_server, tmp_path, monkeypatch):
    base, www, log = http_server
    _copy(local_root, www / "root")
    monkeypatch.setattr(dl_mod, "CHUNK_BYTES", 4096)
    got: list[int] = []

    class Interrupt(Exception):
        pass

    def stop_midway(rel: str, n: int) -> None:
        got.append(n)
        if sum(got) > 60_000:
            raise Interrupt

    dest = tmp_path / "dest"
    with pytest.raises(hestdata.IntegrityError, match="failed to download"):
        hestdata.download(f"{base}/root", dest, ids=["r2"], progress=stop_midway, workers=1)
    first = sum(got)
    assert not (dest / "samples" / "r2.zarr").exists()  # nothing half-visible
    assert [p for p in (dest / "samples" / ".dl-r2.zarr").rglob("*") if p.is_file()]  # what arrived is kept
    second: list[int] = []
    hestdata.download(f"{base}/root", dest, ids=["r2"], progress=lambda r, n: second.append(n), workers=2)
    manifest = json.loads((www / "root" / "samples" / "r2.zarr" / "manifest.json").read_text())["files"]
    total = sum(size for size, _ in manifest.values())
    assert first + sum(second) <= total + 4096  # at most the interrupted chunk is fetched twice
    assert hestdata.validate(dest).ok
    assert any("Range" in ln or "bytes=" in ln for ln in log.lines)
    a = hestdata.open_sample(dest / "samples" / "r2.zarr").patches("32px_2um")["images"][:]
    b = hestdata.open_sample(local_root / "samples" / "r2.zarr").patches("32px_2um")["images"][:]
    assert np.array_equal(a, b)


def test_checksum_failure_removes_file_and_commits_nothing(local_root, http_server, tmp_path):
    base, www, _ = http_server
    root = _copy(local_root, www / "root")
    shard = next((root / "samples" / "r0.zarr" / "hestdata/patches/32px_2um/images/c").rglob("*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    with pytest.raises(hestdata.IntegrityError, match="sha256 differs") as e:
        hestdata.download(f"{base}/root", dest, ids=["r0", "r1"], workers=2)
    assert "r0.zarr" in str(e.value)
    assert not (dest / "samples" / "r0.zarr").exists()
    assert not list((dest / "samples").rglob("*.part"))
    assert hestdata.open_catalog(dest)["id"].to_list() == ["r1"]  # the good sample completed


@pytest.mark.parametrize("bad", ["../../escaped.txt", "/abs/escaped.txt", "images/../../../escaped.txt",
                                 "..\\..\\x"])
def test_malicious_manifest_is_rejected(local_root, tmp_path, bad):
    """A remote whose sample manifest names paths outside the sample (and whose catalog vouches for it, as an
    attacker controlling the remote would arrange) is refused before anything is written."""
    import hashlib

    from hestdata.store import versions

    src = _copy(local_root, tmp_path / "src")
    mpath = src / "samples" / "r0.zarr" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"][bad] = [3, "0" * 64]
    mpath.write_text(json.dumps(m))
    row = hestdata.Root.open(src).row("r0")
    row["sha256"] = hashlib.sha256(mpath.read_bytes()).hexdigest()
    versions.commit(src, {"r0": row}, set(), None)
    dest = tmp_path / "sub" / "dest"
    with pytest.raises(hestdata.IntegrityError, match="unsafe path"):
        hestdata.download(f"file://{src}", dest)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/abs/escaped.txt").exists()
    assert not dest.exists() or not any(dest.rglob("*.json"))


def test_named_remote_and_redaction(local_root, tmp_path, monkeypatch):
    from hestdata.store.remotes import redact

    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[remotes.lab]\nurl = "file://{local_root}"\nstorage_options = {{ secret = "s3cr3t" }}\n')
    monkeypatch.setenv("HESTDATA_CONFIG", str(cfg))
    monkeypatch.setenv("HESTDATA_REMOTE", "lab")
    out = hestdata.download(None, tmp_path / "dest", ids=["r1"], storage_options=None)
    assert hestdata.open_catalog(out)["id"].to_list() == ["r1"]
    assert redact({"secret": "s3cr3t", "client_kwargs": {"aws_session_token": "t", "region_name": "x"}}) == \
        {"secret": "***", "client_kwargs": {"aws_session_token": "***", "region_name": "x"}}
    with pytest.raises(hestdata.InputError, match="neither a URL"):
        hestdata.download("nosuchremote", tmp_path / "d2")


def test_cli_push_and_download(local_root, tmp_path):
    from typer.testing import CliRunner

    from hestdata.cli import app

    runner = CliRunner()
    pub = tmp_path / "published"
    r = runner.invoke(app, ["push", str(local_root), f"file://{pub}"])
    assert r.exit_code == 0 and "pushed" in r.output, r.output
    r = runner.invoke(app, ["download", f"file://{pub}", str(tmp_path / "d"), "--where", "organ = 'lung'",
                            "--only", "expression,patches", "--patch", "32px_2um"])
    assert r.exit_code == 0, r.output
    assert "1 sample(s) present" in r.output
    cat = hestdata.open_catalog(tmp_path / "d")
    assert cat["id"].to_list() == ["r2"] and cat["patch_arrays"].to_list() == [["32px_2um"]]
    r = runner.invoke(app, ["download", f"file://{pub}", str(tmp_path / "e"), "--id", "nope"])
    assert r.exit_code == 1 and "unknown sample id" in r.output
