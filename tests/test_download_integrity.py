"""Downloads never destroy local data and never trust what is lying in their staging folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hestdata
from hestdata.remote import download as dl_mod
from tests.synth import synthetic_sample


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("dl") / "remote"
    for i in range(2):
        hestdata.convert(synthetic_sample(f"r{i}", n=12, seed=i), r, patches=["32px_2um"], min_tissue_fraction=0,
                         shard_patches=8, metadata={"patient": f"p{i}"})
    return r


def _count_fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = dl_mod._fetch

    def counting(remote, rel, size, sha, target, progress):  # noqa: ANN001
        if not (target.exists() and target.stat().st_size == size):
            calls.append(rel)
        return real(remote, rel, size, sha, target, progress)

    monkeypatch.setattr(dl_mod, "_fetch", counting)
    return calls


def test_a_different_local_sample_is_never_replaced_without_overwrite(remote, tmp_path):
    dest = tmp_path / "dest"
    mine = hestdata.convert(synthetic_sample("r0", n=12, seed=42), dest, patches=[], metadata={"patient": "mine"})
    with pytest.raises(hestdata.StoreError, match="a different sample 'r0' exists locally.*--overwrite"):
        hestdata.download(remote, dest, ids=["r0"])
    assert hestdata.read_metadata(mine).patient == "mine"
    hestdata.download(remote, dest, ids=["r0"], overwrite=True)
    assert hestdata.read_metadata(mine).patient == "p0" and hestdata.validate(dest).ok


def test_partial_download_never_cuts_a_local_copy_down(remote, tmp_path, monkeypatch):
    dest = tmp_path / "dest"
    hestdata.download(remote, dest)
    full = hestdata.open_catalog(dest)["elements"].to_list()
    calls = _count_fetches(monkeypatch)
    hestdata.download(remote, dest, elements=["expression"])  # complete copies: skipped, nothing fetched or cut
    assert calls == [] and hestdata.open_catalog(dest)["elements"].to_list() == full
    assert hestdata.validate(dest).ok


def test_partial_copies_are_completed_not_refetched(remote, tmp_path, monkeypatch):
    dest = tmp_path / "dest"
    hestdata.download(remote, dest, elements=["expression"])
    assert hestdata.open_catalog(dest)["elements"].to_list() == [["expression"]] * 2
    calls = _count_fetches(monkeypatch)
    hestdata.download(remote, dest, elements=["patches"])
    assert hestdata.open_catalog(dest)["elements"].to_list() == [["expression", "patches"]] * 2
    assert calls and not any("/tables/" in c for c in calls)  # the table was reused from the local copy
    assert hestdata.validate(dest).ok


def test_staging_leftovers_are_verified_before_commit(remote, tmp_path):
    dest = tmp_path / "dest"
    staged = dest / "samples" / ".dl-r0.zarr"
    staged.mkdir(parents=True)
    (staged / "evil.txt").write_text("planted")
    (staged / "zarr.json.part").write_text("garbage from an earlier run")
    hestdata.download(remote, dest, ids=["r0"])
    sample = dest / "samples" / "r0.zarr"
    assert not (sample / "evil.txt").exists() and not list(sample.rglob("*.part"))
    assert hestdata.validate(dest).ok


def test_a_planted_symlink_is_refused(remote, tmp_path):
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    outside.mkdir()
    staged = dest / "samples" / ".dl-r1.zarr"
    staged.mkdir(parents=True)
    os.symlink(outside, staged / "tables")
    with pytest.raises(hestdata.IntegrityError, match="symbolic link|resolves outside"):
        hestdata.download(remote, dest, ids=["r1"])
    assert list(outside.iterdir()) == [] and not (dest / "samples" / "r1.zarr").exists()
    (staged / "tables").unlink()
    os.symlink(outside, dest / "samples" / ".dl-r1.zarr.tmp")
    staged.rmdir()
    os.rename(dest / "samples" / ".dl-r1.zarr.tmp", staged)  # the staging folder itself is a link
    with pytest.raises(hestdata.IntegrityError, match="symbolic link|resolves outside"):
        hestdata.download(remote, dest, ids=["r1"])
    assert list(outside.iterdir()) == []


def test_streaming_never_mixes_two_versions_of_a_root(remote, tmp_path):
    """A dataset pins the manifest it started from; a shard changed under it (a push in progress) is refused."""
    import fsspec
    import numpy as np

    url = "memory://pins/root"
    hestdata.push(remote, url)
    ds = hestdata.PatchDataset(url, patch="32px_2um", decode="cpu")
    first = ds.load_block(np.arange(4))
    assert len(first["index"]) == 4
    fs = fsspec.filesystem("memory")
    for shard in [p for p in fs.find("/pins/root/samples/r1.zarr/hestdata/patches") if "/images/c/" in p]:
        fs.pipe_file(shard, fs.cat_file(shard)[:-10] + b"\0" * 10)  # same size, other bytes
    with pytest.raises(hestdata.HestdataError, match="differs from the manifest this dataset started from"):
        ds.load_block(np.arange(len(ds) - 4, len(ds)))


def test_push_verify_repairs_damaged_remote_objects_and_never_follows_links(remote, tmp_path):
    import fsspec

    url = "memory://repair/root"
    hestdata.push(remote, url)
    fs = fsspec.filesystem("memory")
    victim = next(p for p in fs.find("/repair/root/samples/r0.zarr") if p.endswith("zarr.json"))
    fs.pipe_file(victim, b"")  # zeroed remote object; the remote manifest still claims it
    assert hestdata.push(remote, url).uploaded == []  # the remote manifest alone cannot tell
    rep = hestdata.push(remote, url, verify_remote=True)
    assert len(rep.uploaded) == 1 and victim.endswith(rep.uploaded[0])
    assert hestdata.download(url, tmp_path / "copy") and hestdata.validate(tmp_path / "copy").ok
    import shutil

    work = tmp_path / "work"
    shutil.copytree(remote, work)
    target = next((work / "samples" / "r0.zarr").rglob("zarr.json"))
    secret = tmp_path / "secret.txt"
    secret.write_text("not for upload")
    target.unlink()
    os.symlink(secret, target)
    with pytest.raises(hestdata.IntegrityError, match="symbolic link"):
        hestdata.push(work, "memory://other/root")
    assert not any(b"not for upload" in fs.cat_file(p) for p in fs.find("/other"))


def test_a_server_that_ignores_range_and_streams_on_cannot_exhaust_memory(remote, tmp_path):
    """The server answers every GET with 200 and a body far longer than the file (capped at 256 MiB per response
    so the test stops by itself); the client reads only the bytes it asked for (verified by sha256), never the
    stream."""
    import http.server
    import threading
    import tracemalloc

    served = {"bytes": 0}
    files = {"/" + p.relative_to(remote).as_posix(): p for p in remote.rglob("*") if p.is_file()}

    class Endless(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            p = files.get(self.path)
            if p is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)  # Range ignored, no Content-Length
            self.end_headers()
            data = p.read_bytes()
            if p.suffix in (".json", ".parquet"):
                self.wfile.write(data)
                return
            chunk = data + b"\0" * (1 << 20)
            sent = 0
            try:
                while sent < 256 << 20:  # per response: a global cap would starve the files asked for last
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    served["bytes"] += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tracemalloc.start()
        hestdata.download(f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "dest", workers=2)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        server.shutdown()
    assert peak < 64 << 20, f"client buffered {peak / 2**20:.0f} MiB"
    assert hestdata.validate(tmp_path / "dest").ok
