"""A loopback S3 server (moto) that counts what crosses the wire: requests (method, path) and response bytes.

Used by the benchmarks and by the tests that run them at a tiny size. moto is the ``test`` extra's S3 server.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Traffic:
    """Requests seen since the last :meth:`clear`: ``[method, path, response bytes]``.

    A request is counted in the window it *started* in: the server finishes a response (and its count) after
    the client has read it, so counting at the end would put an earlier operation's last request into the
    next window."""

    requests: list[list[Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def clear(self) -> None:
        with self.lock:
            self.requests = []

    def start(self, method: str, path: str) -> list[Any]:
        entry: list[Any] = [method, path, 0]
        with self.lock:
            self.requests.append(entry)
        return entry

    @property
    def n(self) -> int:
        return len(self.requests)

    @property
    def bytes_out(self) -> int:
        return sum(e[2] for e in self.requests)

    def gets(self) -> list[str]:
        return [p for m, p, _ in self.requests if m == "GET"]

    def puts(self) -> list[str]:
        return [p for m, p, _ in self.requests if m == "PUT"]


class _Counting:
    """WSGI middleware: counts each request (when it arrives) and the bytes of its response body."""

    def __init__(self, app: Any, traffic: Traffic) -> None:
        self.app, self.traffic = app, traffic

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            path = f"{path}?{environ['QUERY_STRING']}"
        entry = self.traffic.start(method, path)
        for chunk in self.app(environ, start_response):
            entry[2] += len(chunk)
            yield chunk


class CountingS3:
    """``with CountingS3() as s3:`` a moto server on 127.0.0.1; ``s3.options`` are fsspec storage options,
    ``s3.traffic`` what it served, ``s3.bucket(name)`` creates a bucket."""

    def __init__(self) -> None:
        self.traffic = Traffic()
        self._server: Any = None

    def __enter__(self) -> CountingS3:
        import logging

        wz = logging.getLogger("werkzeug")
        self._log_level = wz.level
        wz.setLevel(logging.ERROR)  # the traffic is counted here, not logged (the level is restored on exit)
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        app = _Counting(DomainDispatcherApplication(create_backend_app), self.traffic)
        self._server = make_server("127.0.0.1", port, app, True, request_handler=MotoRequestHandler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.options = {"key": "testing", "secret": "testing", "endpoint_url": self.url,
                        "client_kwargs": {"region_name": "us-east-1"}}
        return self

    def __exit__(self, *exc: object) -> None:
        import logging

        self._server.shutdown()
        logging.getLogger("werkzeug").setLevel(self._log_level)  # a request log in the same process (the tests')

    def bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=name)

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)
