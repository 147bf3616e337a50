"""Downloads keep working while a push runs: a download that meets a sample the push is half-way through
replacing waits for the push to commit (its pointer) and finishes with the new version whole; without a push
running, or past the wait, it fails naming the push."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

import hestdata
from hestdata.errors import IntegrityError
from hestdata.loader.dataset import as_tensors
from hestdata.store import layout as L
from tests.synth import synthetic_sample

OPTS = dict(patches=["32px_2um"], min_tissue_fraction=0, shard_patches=8)


class Interrupted(Exception):
    pass


def _sums(root) -> tuple[float, float]:
    ds = hestdata.PatchDataset(root, patch="32px_2um", decode="cpu", targets="raw")
    b = as_tensors(ds.load_block(np.arange(len(ds))))
    return float(b["expression"].sum()), float(b["image"].double().sum())


@pytest.fixture()
def half_pushed(tmp_path, monkeypatch):
    """A remote at v1 with a push of v2 interrupted half-way through sample s's files (marker left behind)."""
    from hestdata.remote import push as push_mod

    work = tmp_path / "work"
    hestdata.convert(synthetic_sample("s", n=8, seed=1), work, **OPTS)
    hestdata.convert(synthetic_sample("t", n=8, seed=3), work, **OPTS)  # unchanged by the push
    v1 = tmp_path / "v1"
    shutil.copytree(work, v1)
    hestdata.convert(synthetic_sample("s", n=8, seed=2), work, overwrite=True, **OPTS)
    remote = tmp_path / "remote"
    hestdata.push(v1, str(remote))
    real_put = push_mod._put
    calls = {"n": 0}

    def put(*a):
        calls["n"] += 1
        if calls["n"] > 3:
            raise Interrupted()
        return real_put(*a)

    monkeypatch.setattr(push_mod, "_put", put)
    with pytest.raises(Interrupted):
        hestdata.push(work, str(remote))
    monkeypatch.setattr(push_mod, "_put", real_put)
    assert (remote / L.PUSH_MARKER).is_file()
    return work, v1, remote


def test_a_download_waits_for_a_running_push_and_gets_the_new_version(half_pushed, tmp_path):
    work, v1, remote = half_pushed
    done: dict[str, object] = {}

    def run() -> None:
        try:
            with pytest.warns(hestdata.HestdataWarning, match="push finished"):
                done["dest"] = hestdata.download(str(remote), tmp_path / "dl", push_wait_s=60)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread's assertion
            done["error"] = exc

    th = threading.Thread(target=run)
    th.start()
    time.sleep(1.5)
    assert th.is_alive(), done  # waiting on the push, not failed
    hestdata.push(work, str(remote))  # the push completes
    th.join(60)
    assert not th.is_alive() and "error" not in done, done
    assert not (remote / L.PUSH_MARKER).exists()
    assert _sums(tmp_path / "dl") == pytest.approx(_sums(work))  # the new version, whole
    assert hestdata.validate(tmp_path / "dl").ok


def test_past_the_wait_the_error_names_the_push(half_pushed, tmp_path):
    _, _, remote = half_pushed
    t = time.monotonic()
    with pytest.raises(IntegrityError, match="push to .* has not finished after"):
        hestdata.download(str(remote), tmp_path / "dl", ids=["s"], push_wait_s=0.5)
    assert time.monotonic() - t < 30
    # the unchanged sample downloads during the push as it always did
    hestdata.download(str(remote), tmp_path / "dl2", ids=["t"], push_wait_s=0)
    assert hestdata.validate(tmp_path / "dl2").ok


def test_without_a_push_running_a_damaged_remote_fails_at_once(half_pushed, tmp_path):
    _, _, remote = half_pushed
    (remote / L.PUSH_MARKER).unlink()  # the same half-replaced remote, but nobody says a push is running
    t = time.monotonic()
    with pytest.raises(IntegrityError) as info:
        hestdata.download(str(remote), tmp_path / "dl", ids=["s"], push_wait_s=600)
    assert "has not finished" not in str(info.value) and time.monotonic() - t < 30
