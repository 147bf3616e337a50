"""Store format 2 at N=100 beside N=10: the scale benchmark run small, asserting what must not grow with the root (requests,
bytes written per publish, files touched), never wall-clock times."""

from __future__ import annotations

import pytest

from benchmarks import root_scale
from hestdata.store import versions


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = root_scale.main(["--sizes", "10,100", "--repeats", "1", "--whole-validate-max", "10",
                           "--work", str(tmp_path_factory.mktemp("scale"))])
    return {r["n"]: r for r in out}


def test_remote_open_is_three_requests_whatever_the_root_holds(rows):
    for r in rows.values():
        assert r["open_requests"] <= 3 and r["open_bytes"] <= 2_000_000
    assert rows[100]["open_requests"] == rows[10]["open_requests"]
    # the catalog is the only thing that grows: ~86 bytes a row, nothing per file
    assert rows[100]["open_bytes"] < 20 * rows[10]["open_bytes"]


def test_one_sample_operations_do_not_grow_with_the_root(rows):
    small, big = rows[10], rows[100]
    assert big["files_per_sample"] == small["files_per_sample"] <= 300
    # a one-sample publish writes the tail (1 row), the version document and the pointer: not the catalog
    assert big["publish_one_bytes"] <= 1.5 * small["publish_one_bytes"]
    assert big["publish_one_bytes"] < big["catalog_bytes"]
    for key in ("dataset_one_requests", "download_one_requests"):
        assert big[key] == small[key], key
    assert big["push_one_requests"] <= small["push_one_requests"] + 2
    # a push of one changed sample reads the remote catalog and that sample's manifest, nothing of the others
    assert big["push_one_read_bytes"] < big["open_bytes"] + 200_000
    assert "validate_root_s" in small and "validate_root_s" not in big


def test_tail_compaction_keeps_publish_proportional():
    assert versions.compact_rows(200) == 32 and versions.compact_rows(10_000) == 100
