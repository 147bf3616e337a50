"""Dask helpers: a client on a given scheduler, or a LocalCluster of worker processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int = 2, threads_per_worker: int = 1) -> Iterator[Any]:
    """Yield a ``distributed.Client``: connected to ``scheduler`` if given, else to a fresh LocalCluster of
    ``n_workers`` processes (one thread each: conversion is CPU- and memory-bound), closed on exit."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    import dask

    # workers may start processes of their own (each conversion runs isolated in a child process); the scheduler's
    # HTTP server (dashboard, metrics) takes a free port: a fixed 8787 warns whenever another cluster runs
    with dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                         dashboard_address=":0", scheduler_port=0) as cluster, Client(cluster) as client:
        yield client
