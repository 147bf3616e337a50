"""The loader benchmarks run from a clean checkout at a tiny size, so they cannot rot: benchmarks/loader.py
(its own her2st root built from ../shared/data) and benchmarks/loader_peers.py (the same patches written into
the peers' formats; the peers that are installed — litdata and webdataset in the test extra — run, local and
from a loopback S3 server). Figures are printed, never asserted: only what each run yields."""

from __future__ import annotations

import pytest

from benchmarks import loader, loader_peers


def test_loader_benchmark_builds_its_data_and_runs(tmp_path, capsys):
    rates = loader.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "(b) PatchDataset+make_loader cpu, 1 workers" in rates and rates["(a) bare simplejpeg decode, in memory"] > 0
    assert "(e, 1 worker) / (b, 1 worker)" in out


def test_peer_benchmark_runs_every_installed_peer(tmp_path):
    peers = [s for s in ("litdata", "webdataset", "mds") if loader_peers.installed(s)]
    if not peers:
        pytest.skip("no peer library installed (pip install -e '.[bench-peers]')")
    got = loader_peers.main(["--quick", "--reps", "1", "--workers", "0", "--work", str(tmp_path),
                             "--systems", ",".join(["hestdata", *peers])])
    n = got["pairs"]["n"]
    assert n > 100 and set(got["pairs"]["bytes"]) == {"hestdata", *peers}
    for source in ("local", "s3"):
        for system in ("hestdata", *peers):
            (run,) = got["results"][f"{source}/0/{system}"]
            assert run["n_first"] == run["n_warm"] == n  # every patch once per epoch, in every format
    assert "hestdata / best peer" in got["report"]
