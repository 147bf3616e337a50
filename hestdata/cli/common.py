"""What every command shares: the one-line error contract and ``--meta`` parsing."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer


def fail(msg: str) -> None:
    """Print ``error: msg`` in red on stderr and exit 1."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


# the extra that provides each optional module (the exact pip line goes into the error)
EXTRA_OF = {"torch": "ml", "timm": "ml", "sklearn": "ml", "matplotlib": "ml", "torchvision": "gpu",
            "litdata": "bench-peers", "streaming": "bench-peers", "webdataset": "bench-peers"}
PIP_OF = {"huggingface_hub": "pip install huggingface_hub", "openpyxl": "pip install openpyxl",
          "s3fs": "pip install s3fs", "gcsfs": "pip install gcsfs"}


def debug_enabled() -> bool:
    """``--debug`` (or ``HESTDATA_DEBUG=1``): let the traceback through instead of the one-line error."""
    import os

    return os.environ.get("HESTDATA_DEBUG", "") not in ("", "0")


def describe(exc: BaseException) -> str:
    """The one line for an exception that reached the CLI: ours as they are; the families user input and the
    network raise (missing module, YAML, pickle/checkpoint, polars, HTTP/S3, HDF5/TIFF/JSON via ValueError and
    OSError) named with a hint; anything else as its type and message, with ``--debug`` for the traceback."""
    import pickle

    from hestdata.errors import HestdataError, SchemaError

    if isinstance(exc, SchemaError):
        return str(exc)
    if isinstance(exc, HestdataError):
        return str(exc).splitlines()[0]
    if isinstance(exc, ModuleNotFoundError | ImportError):
        mod = (getattr(exc, "name", None) or "").split(".")[0]
        if mod in EXTRA_OF:
            return f"{mod} is not installed ({exc}) (pip install 'hestdata[{EXTRA_OF[mod]}]')"
        if mod in PIP_OF:
            return f"{mod} is not installed ({PIP_OF[mod]})"
        return f"{type(exc).__name__}: {exc}"
    name = type(exc).__module__.split(".")[0]
    if name == "yaml":
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return f"YAML{where}: {' '.join(str(problem).split())} (only plain YAML is read: no !!python tags)"
    if isinstance(exc, pickle.UnpicklingError):
        return f"checkpoint refused: {str(exc).splitlines()[0]} (only weights are loaded: torch.load(weights_only=True))"
    if name == "polars":
        return f"table: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    if name in ("httpx", "httpcore", "requests", "urllib3", "aiohttp", "botocore", "huggingface_hub"):
        return f"network: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} " \
               "(check the URL, your connection and credentials)"
    if isinstance(exc, OSError):  # unreachable servers, permissions, full disks: one line naming the path
        where = exc.filename or ""
        return f"{where}: {exc.strerror or exc}" if where else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} " \
           "(run with --debug for the traceback, and please report it)"


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn any exception into ``error: <what>: reason (hint)`` and exit code 1 (:func:`describe`); with
    ``--debug`` the traceback is shown instead."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if debug_enabled():
                raise
            fail(" ".join(describe(exc).split("\n")[0].split()) if not _schema(exc) else describe(exc))

    return wrapper


def _schema(exc: BaseException) -> bool:
    from hestdata.errors import SchemaError

    return isinstance(exc, SchemaError)


def meta_fields(meta: list[str] | None) -> dict[str, Any]:
    """``--meta field=value`` options as a dict (``synthetic`` as a boolean)."""
    fields: dict[str, Any] = {}
    for item in meta or []:
        if "=" not in item:
            fail(f"--meta expects field=value, got {item!r}")
        k, v = item.split("=", 1)
        fields[k.strip()] = v.strip()
    if "synthetic" in fields:
        fields["synthetic"] = fields["synthetic"].lower() in ("1", "true", "yes")
    return fields
