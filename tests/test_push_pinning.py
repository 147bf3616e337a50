"""A reader never mixes versions: a push interrupted at every object boundary, then the remote streamed by a
dataset opened before the push and by one opened after — each serves the old version whole (patches, counts,
metadata) or fails with an integrity error naming the file; never old patches with new counts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import hestdata
from hestdata.errors import HestdataError
from hestdata.loader.dataset import as_tensors
from tests.conftest import make_bucket
from tests.synth import synthetic_sample

OPTS = dict(patches=["32px_2um"], min_tissue_fraction=0, shard_patches=8)


def _read(ds) -> tuple[float, float]:
    """(sum of all raw targets, sum of all patch pixels) of a dataset."""
    b = as_tensors(ds.load_block(np.arange(len(ds))))
    return float(b["expression"].sum()), float(b["image"].double().sum())


class Interrupted(Exception):
    pass


def test_streaming_during_an_interrupted_push_never_mixes_versions(s3_server, tmp_path, monkeypatch):
    from hestdata.remote import push as push_mod

    _, opts, _ = s3_server
    make_bucket("hest-pin", opts)
    work = tmp_path / "work"
    hestdata.convert(synthetic_sample("s", n=8, seed=1), work, **OPTS)
    v1 = tmp_path / "v1"
    shutil.copytree(work, v1)
    hestdata.convert(synthetic_sample("s", n=8, seed=2), work, overwrite=True, **OPTS)  # new counts and patches
    local_v1 = _read(hestdata.PatchDataset(v1, patch="32px_2um", decode="cpu", targets="raw"))
    local_v2 = _read(hestdata.PatchDataset(work, patch="32px_2um", decode="cpu", targets="raw"))
    assert local_v1[0] != local_v2[0] and local_v1[1] != local_v2[1]

    real_put = push_mod._put
    n_objects = None
    k = 0
    outcomes = {"old": 0, "refused": 0}
    url = "s3://hest-pin/r"
    hestdata.push(v1, url, storage_options=opts)
    sent: list[tuple] = []
    while n_objects is None or k < n_objects:
        for fs, is_local, _src, dst, target, rel in sent:  # back to the old version: its bytes where v2's went,
            if (v1 / rel).is_file():  # and nothing of v2's own (so that every boundary is tried from one state)
                real_put(fs, is_local, str(v1 / rel), dst, target, rel)
            else:
                fs.rm(dst)
        sent.clear()
        before = hestdata.PatchDataset(hestdata.open_root(url, storage_options=opts), patch="32px_2um",
                                       decode="cpu", targets="raw")  # opened, nothing read yet
        calls = {"n": 0}

        def put(*a, _calls=calls, _k=k):
            if _calls["n"] == _k:
                raise Interrupted()
            _calls["n"] += 1
            sent.append(a)
            return real_put(*a)

        monkeypatch.setattr(push_mod, "_put", put)
        try:
            hestdata.push(work, url, storage_options=opts)
            n_objects = calls["n"]  # the push that was not interrupted: every boundary has been tried
            monkeypatch.setattr(push_mod, "_put", real_put)
            break
        except Interrupted:
            pass
        monkeypatch.setattr(push_mod, "_put", real_put)

        def after():
            return hestdata.PatchDataset(hestdata.open_root(url, storage_options=opts), patch="32px_2um",
                                         decode="cpu", targets="raw")

        for make in (lambda _b=before: _b, after):
            try:
                got = _read(make())
            except HestdataError as exc:  # a file of the new version under the old manifest: refused, named
                assert "s.zarr" in str(exc), exc
                outcomes["refused"] += 1
                continue
            assert got == pytest.approx(local_v1), (k, got)  # the old version, whole
            outcomes["old"] += 1
        k += 1
    assert n_objects is not None and n_objects > 3 and k == n_objects, (n_objects, k)
    assert outcomes["old"] > 0  # the boundaries before the first changed file serve the old version
    final = hestdata.PatchDataset(hestdata.open_root(url, storage_options=opts),
                                  patch="32px_2um", decode="cpu", targets="raw")
    assert _read(final) == pytest.approx(local_v2)  # and a completed push serves the new one


def test_a_local_dataset_keeps_the_version_it_opened_across_an_overwrite(tmp_path, monkeypatch):
    """An overwrite keeps the replaced version (``samples/.old-<id>-<digest>.zarr``) for a day: datasets opened
    before it — one that had read the sample already, one that had read nothing — go on serving the version they
    opened, patches and counts, whole; a dataset opened after serves the new one. Past the retention the old
    version is removed by the next write, and a dataset still holding it refuses (never serves the new folder
    under the old catalog row)."""
    from hestdata.errors import IntegrityError
    from hestdata.store import layout as L

    root = tmp_path / "root"
    hestdata.convert(synthetic_sample("s", n=8, seed=1), root, **OPTS)
    read_first = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu", targets="raw")
    v1 = _read(read_first)
    lazy = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu", targets="raw")  # nothing read yet
    hestdata.convert(synthetic_sample("s", n=8, seed=2), root, overwrite=True, **OPTS)
    kept = sorted(p.name for p in (root / "samples").glob(f"{L.RETIRED_PREFIX}*"))
    assert len(kept) == 1 and kept[0].startswith(".old-s-"), kept
    for ds in (read_first, lazy):
        assert _read(ds) == pytest.approx(v1)  # the version it opened, whole
    v2 = _read(hestdata.PatchDataset(root, patch="32px_2um", decode="cpu", targets="raw"))
    assert v2 != v1
    assert hestdata.validate(root).ok and hestdata.open_catalog(root)["id"].to_list() == ["s"]
    # past the retention: the next write removes it, and a dataset that still needs it refuses
    stale = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu", targets="raw")
    monkeypatch.setenv("HESTDATA_KEEP_OLD_S", "0")
    hestdata.convert(synthetic_sample("s", n=8, seed=3), root, overwrite=True, **OPTS)
    assert not list((root / "samples").glob(f"{L.RETIRED_PREFIX}*"))
    for ds in (stale, read_first, lazy):  # opened at v2 and never read; reading v1's removed copy
        with pytest.raises(IntegrityError, match="changed under it|no longer kept"):
            _read(ds)
    assert _read(hestdata.PatchDataset(root, patch="32px_2um", decode="cpu", targets="raw")) not in (v1, v2)
