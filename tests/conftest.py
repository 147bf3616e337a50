"""Shared fixtures. Real data comes from ``../shared/data`` (see its README); tests that need it are skipped
with a clear reason when it is absent (set ``HESTDATA_SHARED_DATA`` to point elsewhere)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# the suite runs one xdist process per core: math libraries start one thread each, not one per core in each
# process (oversubscription costs more than it gives on small test arrays); subprocesses inherit it
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# transient network errors are still retried (and counted) everywhere, after 10 ms rather than 0.25 s doubling:
# a dead loopback port or a dropped test connection costs the suite milliseconds, not seconds of sleep
os.environ.setdefault("HESTDATA_RETRY_DELAY_S", "0.01")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """Path under the shared data folder; skip the test if it is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared test data not found: {p} (set HESTDATA_SHARED_DATA)")
    return p


HER2ST = ("her2st", "B4", "BT10737_D2_HE.jpg", "B"), ("her2st", "C2", "5714_HE_BT_C2.jpg", "C"), \
    ("her2st", "C3", "5714_HE_BT_D1.jpg", "C")


def her2st_inputs(section: str) -> tuple[Path, Path, Path]:
    base = shared("st_legacy", "her2st")
    img = {s: (f, p) for _, s, f, p in HER2ST}[section]
    return (base / "ST-cnts" / f"{section}.tsv.gz", base / "ST-spotfiles" / f"{section}_selection.tsv",
            base / "ST-imgs" / img[1] / section / img[0])


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Any) -> Path:
    """``build(folder)`` run once per test run — not once per xdist worker — under a file lock in the folder the
    workers share; each worker gets its own copy (tests write embeddings and leaderboards into their roots)."""
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()  # under xdist, each worker's folder sits in the run's folder
    shared_dir = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    done, built = shared_dir / f"{name}.done", shared_dir / f"{name}.built"
    with FileLock(str(shared_dir / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(built, ignore_errors=True)
            build(built)
            done.touch()
    mine = tmp_path_factory.mktemp(name) / "root"
    shutil.copytree(built, mine, symlinks=True)
    return mine


@pytest.fixture(scope="session")
def her2st_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the three her2st sections converted once for the whole run (with their expression-cluster
    labels as the obs column ``label`` where the shared data has them)."""
    import hestdata

    def build(root: Path) -> None:
        for _, section, _, patient in HER2ST:
            counts, spots, image = her2st_inputs(section)
            s = hestdata.read_st(counts, spots=spots, image=image, sample_id=f"her2st_{section}")
            labels = SHARED / "st_legacy" / "her2st_annotated" / "ST-cluster" / "lbl" / f"{section}-cluster-annotation.tsv.gz"
            if labels.is_file():  # expression-cluster labels joined to the spots (tests/test_labels.py)
                s.slide_inputs["labels"] = labels
            hestdata.convert(s, root, metadata={"patient": patient, "organ": "breast", "cohort": "her2st"})

    return built_once(tmp_path_factory, "her2st", build)


@pytest.fixture(scope="session")
def squidpy_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import hestdata

    d = shared("visium", "squidpy_mouse_brain_crop")
    root = tmp_path_factory.mktemp("squidpy") / "root"
    s = hestdata.read_anndata(d / "test_data.h5ad", image=d / "test_img.jpg", sample_id="squidpy_crop")
    return hestdata.convert(s, root)


def leftovers(root: Path) -> list[str]:
    """Everything in root/samples but the versions an overwrite keeps on purpose (``.old-``): committed samples
    and any temporary or trash folder."""
    d = root / "samples"
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".old-")) if d.exists() else []


class RequestLog:
    """Request lines seen by a loopback server (werkzeug's access log)."""

    def __init__(self) -> None:
        import logging

        self.lines: list[str] = []
        outer = self

        class _H(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                outer.lines.append(record.getMessage())

        self.handler = _H()

    def clear(self) -> None:
        self.lines.clear()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on 127.0.0.1; yields (endpoint_url, storage_options, request log)."""
    import logging
    import socket

    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=True)
    server.start()
    log = RequestLog()
    wz = logging.getLogger("werkzeug")
    wz.addHandler(log.handler)
    wz.setLevel(logging.INFO)
    url = f"http://127.0.0.1:{port}"
    opts = {"key": "testing", "secret": "testing", "endpoint_url": url,
            "client_kwargs": {"region_name": "us-east-1"}}
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    yield url, opts, log
    wz.removeHandler(log.handler)
    server.stop()


def make_bucket(bucket: str, storage_options: dict) -> None:
    """Create ``bucket`` on the loopback S3 server if it does not exist."""
    import boto3

    client = boto3.client("s3", endpoint_url=storage_options["endpoint_url"], region_name="us-east-1",
                          aws_access_key_id=storage_options["key"], aws_secret_access_key=storage_options["secret"])
    if bucket not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=bucket)


def upload(local_root: Path, bucket: str, prefix: str, storage_options: dict) -> str:
    """Copy a local root into ``s3://bucket/prefix`` with s3fs; return the URL."""
    import s3fs

    make_bucket(bucket, storage_options)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **storage_options)
    for p in sorted(local_root.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{bucket}/{prefix}/{p.relative_to(local_root).as_posix()}")
    return f"s3://{bucket}/{prefix}"


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server with Range support serving ``tmp_path / 'www'``; yields (base_url, folder, log)."""
    import functools
    import http.server
    import threading

    from RangeHTTPServer import RangeRequestHandler

    www = tmp_path / "www"
    www.mkdir()
    log = RequestLog()

    class Handler(RangeRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            log.lines.append(f"{self.command} {self.path} {self.headers.get('Range', '')}")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www, log
    server.shutdown()


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[str]:
    """The address of one LocalCluster (two worker processes) shared by the registrations of a test module that
    tests the Dask path itself (tests/test_register.py): the cluster's start-up and each worker's forkserver
    (which imports the conversion stack once) are paid once per module, and no idle cluster outlives the module
    to sit beside other tests. Registrations that test what is registered, not how it is spread, run one by one
    in-process (``n_workers=1``: no cluster to start), as do tests that configure conversions through the
    environment (failpoints): a cluster's workers were started before any test set a variable."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                         scheduler_port=0) as cluster:
        yield cluster.scheduler_address



def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything imported while collecting (torch, spatialdata, the conversion stack) lives for the whole run:
    freeze it out of the garbage collector, whose full collections otherwise walk those millions of objects again
    and again (about 0.2 s each)."""
    import gc

    gc.collect()
    gc.freeze()
