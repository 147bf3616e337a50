"""Dask clusters started by hestdata start quietly: no dashboard port clash, whatever else runs."""

from __future__ import annotations

import logging
import socket
import warnings

from hestdata.distributed import dask_client


def test_no_port_warning_when_8787_is_taken(caplog):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            busy.bind(("127.0.0.1", 8787))
            busy.listen()
        except OSError:
            pass  # already taken by something else: the clash we guard against exists anyway
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            with dask_client(n_workers=1) as client:
                assert client.submit(sum, [1, 2, 3]).result() == 6
    texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if "8787" in t or "already in use" in t], texts
