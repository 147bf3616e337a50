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


def test_peer_benchmark_runs_every_installed_peer(tmp_path, her2st_root):
    import hestdata

    peers = [s for s in ("litdata", "webdataset", "mds") if loader_peers.installed(s)]
    if not peers:
        pytest.skip("no peer library installed (pip install -e '.[bench-peers]')")
    # its --quick root (her2st C2) taken from the session's conversion: building it is the loader test's job above
    hestdata.download(her2st_root, tmp_path / "root", ids=["her2st_C2"], workers=2)
    got = loader_peers.main(["--quick", "--reps", "1", "--workers", "0", "--work", str(tmp_path),
                             "--systems", ",".join(["hestdata", *peers])])
    n = got["pairs"]["n"]
    assert n > 100 and set(got["pairs"]["bytes"]) == {"hestdata", *peers}
    for source in ("local", "s3"):
        for system in ("hestdata", *peers):
            (run,) = got["results"][f"{source}/0/{system}"]
            assert run["n_first"] == run["n_warm"] == n  # every patch once per epoch, in every format
    assert "hestdata / best peer" in got["report"]


def test_gpu_check_runs_its_cpu_parts_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the whole check (benchmarks/gpu_check.py), not this test")
    from benchmarks import gpu_check

    assert gpu_check.main(["--quick", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(3) loader, CPU decode, 0 workers" in out and "not measured (no CUDA device here)" in out


def test_gpu_check_pixel_comparison_fails_on_a_wrong_decode():
    import numpy as np

    from benchmarks import gpu_check

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert gpu_check.compare(a, a)[2]
    assert not gpu_check.compare(a, a[..., ::-1].copy())[2]  # BGR for RGB
    assert not gpu_check.compare(a, np.roll(a, 3, axis=2))[2]  # shifted


def test_her2st_confound_study_runs_both_gene_criteria(her2st_root, tmp_path, capsys):
    """benchmarks/her2st_confound.py at its smallest (the two baselines only) on the session's her2st root: every
    criterion x normalisation cell is computed, and the no-image library-size baseline is the depth confound it
    is meant to show (far better on HEST's raw log1p targets than once they are library-size normalised)."""
    from benchmarks import her2st_confound

    table = her2st_confound.main(["--encoders", "--root", str(her2st_root), "--cache-dir", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert set(table) == {"library-size", "mean-rgb"}
    assert set(table["mean-rgb"]) == {f"{c}/{n}" for c in ("hest", "variance") for n in ("log1p", "cp10k_log1p")}
    lib = table["library-size"]
    assert lib["variance/log1p"] > lib["variance/cp10k_log1p"] + 0.2
    assert "genes shared by the two criteria" in out


def test_her2st_worked_example_runs_every_task(her2st_root, tmp_path):
    """benchmarks/her2st_benchmark.py with the cheapest encoder on a copy of the session's her2st root: the four
    tasks it documents each yield their primary metric."""
    import shutil

    from benchmarks import her2st_benchmark

    root = tmp_path / "root"
    shutil.copytree(her2st_root, root, ignore=shutil.ignore_patterns("embeddings", "leaderboard*"))
    out = her2st_benchmark.main(["--encoders", "color-stats", "--root", str(root), "--cache-dir", str(tmp_path / "c"),
                                 "--tasks", "her2st_expression", "her2st_retrieval", "her2st_slide_expression",
                                 "her2st_slide_retrieval"])
    assert set(out) == {f"color-stats / {t}" for t in ("her2st_expression", "her2st_retrieval",
                                                        "her2st_slide_expression", "her2st_slide_retrieval")}
    assert -1 <= out["color-stats / her2st_expression"]["pearson_mean"] <= 1
    assert 0 <= out["color-stats / her2st_retrieval"]["img2expr_recall@5"] <= 1
    assert (root / "leaderboard.parquet").is_file()


def test_conversion_and_extraction_benchmarks_run_at_their_smallest(her2st_root, tmp_path, capsys):
    """benchmarks/convert.py (one fresh conversion per pipeline, the smallest section) and bench_harness.py (the
    cheapest encoder). convert_scale.py and register_scale.py are not run here: at their smallest they cost
    20-30 s each (mosaic TIFFs, a Dask cluster), more than the suite's budget allows; their code paths are tested
    by tests/test_gigapixel.py and tests/test_register.py."""
    import shutil

    from benchmarks import bench_harness, convert

    convert.main(["--section", "B4", "--repeats", "1"])
    root = tmp_path / "root"
    shutil.copytree(her2st_root, root, ignore=shutil.ignore_patterns("embeddings", "leaderboard*"))
    ratio = bench_harness.main(["--encoder", "color-stats", "--batch-size", "64", "--workers", "0", "--root", str(root)])
    out = capsys.readouterr().out
    assert "time  hestdata / hest-style" in out and "extraction / bare" in out and ratio > 0
