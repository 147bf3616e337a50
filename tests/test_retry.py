"""Retries with capped backoff: transient errors (resets, 5xx, throttling) are retried, 4xx and checksum
mismatches never; a download completes from a loopback server that fails the first attempts."""

from __future__ import annotations

import errno
import functools
import http.server
import shutil
import threading
from collections import Counter

import numpy as np
import pytest

import hestdata
from hestdata.errors import IntegrityError
from hestdata.io import retry
from tests.synth import synthetic_sample


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def test_what_is_transient():
    assert retry.is_transient(ConnectionResetError())
    assert retry.is_transient(TimeoutError())
    assert retry.is_transient(OSError(errno.ECONNRESET, "reset"))
    assert retry.is_transient(_Status(503)) and retry.is_transient(_Status(429))
    assert retry.is_transient(OSError("An error occurred (SlowDown) when calling the GetObject operation"))
    try:  # a wrapped reset: the cause counts
        try:
            raise ConnectionResetError("peer")
        except ConnectionResetError as inner:
            raise RuntimeError("read failed") from inner
    except RuntimeError as outer:
        assert retry.is_transient(outer)
    for never in (FileNotFoundError("x"), PermissionError("x"), _Status(404), _Status(403),
                  IntegrityError("sha256 differs"), ValueError("bad")):
        assert not retry.is_transient(never), never


def test_backoff_is_capped_and_attempts_counted():
    assert all(retry.backoff_s(a) <= retry.MAX_DELAY_S for a in range(1, 40))
    assert retry.backoff_s(1) <= retry.BASE_DELAY_S < retry.backoff_s(6)
    calls, slept = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert retry.with_retries(flaky, attempts=5, sleep=slept.append) == "ok" and len(calls) == 3 and len(slept) == 2
    calls.clear()

    def always() -> None:
        calls.append(1)
        raise ConnectionResetError("reset")

    with pytest.raises(ConnectionResetError):
        retry.with_retries(always, attempts=3, sleep=slept.append)
    assert len(calls) == 3  # gives up after the cap
    missing = []

    def gone() -> None:
        missing.append(1)
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        retry.with_retries(gone, attempts=5, sleep=slept.append)
    assert missing == [1]  # a 404 is not retried


@pytest.fixture
def flaky_server(tmp_path):
    """A loopback HTTP server (Range support) whose first ``fail[0]`` GETs of every path answer 503."""
    from RangeHTTPServer import RangeRequestHandler

    www = tmp_path / "www"
    www.mkdir()
    gets: Counter = Counter()
    fail = [2]
    lock = threading.Lock()

    class Handler(RangeRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                gets[self.path] += 1
                n = gets[self.path]
            if n <= fail[0]:
                self.send_error(503, "try again")
                return
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www, gets, fail
    server.shutdown()


def test_download_and_stream_survive_a_server_failing_the_first_attempts(flaky_server, tmp_path, monkeypatch):
    monkeypatch.setattr(retry, "BASE_DELAY_S", 0.001)
    base, www, gets, fail = flaky_server
    src = tmp_path / "src"
    hestdata.convert(synthetic_sample("f0", n=10), src, patches=["32px_2um"], min_tissue_fraction=0,
                     shard_patches=4)
    shutil.copytree(src, www / "root")
    dest = tmp_path / "dest"
    hestdata.download(f"{base}/root", dest, workers=2)
    assert hestdata.validate(dest).ok
    manifest_files = [p for p in (www / "root" / "samples" / "f0.zarr").rglob("*") if p.is_file()]
    assert all(gets[f"/root/{p.relative_to(www / 'root').as_posix()}"] >= 3 for p in manifest_files)  # retried
    ds = hestdata.PatchDataset(f"{base}/root", patch="32px_2um", decode="cpu")  # streaming, every GET fails twice
    local = hestdata.PatchDataset(dest, patch="32px_2um", decode="cpu")
    assert len(ds) == len(local) and np.array_equal(ds[3]["image"].numpy(), local[3]["image"].numpy())


def test_missing_and_corrupt_files_are_not_retried(flaky_server, tmp_path, monkeypatch):
    monkeypatch.setattr(retry, "BASE_DELAY_S", 0.001)
    base, www, gets, fail = flaky_server
    fail[0] = 0
    src = tmp_path / "src"
    hestdata.convert(synthetic_sample("g0", n=8), src, patches=["32px_2um"], min_tissue_fraction=0, shard_patches=4)
    root = shutil.copytree(src, www / "root")
    shard = next(p for p in (root / "samples/g0.zarr/hestdata/patches/32px_2um/images/c").rglob("*") if p.is_file())
    good = shard.read_bytes()
    data = bytearray(good)
    data[5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 differs"):
        hestdata.download(f"{base}/root", tmp_path / "dest", workers=1)
    key = f"/root/{shard.relative_to(root).as_posix()}"
    assert gets[key] == 1  # a checksum mismatch is data, not the network: one request
    shard.write_bytes(good)
    (root / "samples/g0.zarr/zarr.json").unlink()
    before = gets["/root/samples/g0.zarr/zarr.json"]
    with pytest.raises(hestdata.HestdataError, match="zarr.json"):
        hestdata.download(f"{base}/root", tmp_path / "dest2", workers=1)
    assert gets["/root/samples/g0.zarr/zarr.json"] == before + 1  # a 404: one request
