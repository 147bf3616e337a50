"""A full disk during convert and download: a clear error naming the root, nothing half-written left to keep
the disk full, the root unchanged and valid. Runs on a 3 MB tmpfs (skipped where mounting one is not allowed)."""

from __future__ import annotations

import subprocess

import pytest

import hestdata
from hestdata.errors import IntegrityError, StoreError
from tests.synth import synthetic_sample


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # lazy: a traceback may still hold a file open


def _used(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_convert_and_download_on_a_full_disk(small_disk, tmp_path):
    root = small_disk / "root"
    hestdata.convert(synthetic_sample("small", n=8), root, patches=["32px_2um"], min_tissue_fraction=0)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(StoreError, match=r"root: no space left on the device while writing sample 'big'.*nothing"):
        hestdata.convert(synthetic_sample("big", n=120), root, patches=["64px_0.5um"], min_tissue_fraction=0)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # no .tmp- folder, nothing new
    assert hestdata.validate(root).ok
    with pytest.raises(StoreError, match="no space left"):  # a fresh root: not even the folder stays
        hestdata.convert(synthetic_sample("big", n=120), small_disk / "fresh", patches=["64px_0.5um"],
                         min_tissue_fraction=0)
    assert not (small_disk / "fresh").exists()

    src = tmp_path / "src"
    hestdata.convert(synthetic_sample("big", n=120), src, patches=["64px_0.5um"], min_tissue_fraction=0)
    free_before = _used(small_disk)
    with pytest.raises(IntegrityError, match="the disk is full: this sample's partial download was removed"):
        hestdata.download(src, small_disk / "dl")
    assert not list((small_disk / "dl" / "samples").glob(".dl-*"))  # the staging does not keep the disk full
    assert _used(small_disk) == free_before
    assert hestdata.validate(root).ok
