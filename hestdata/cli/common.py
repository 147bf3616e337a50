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


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn any HestdataError (and ValueError from argument parsing) into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hestdata.errors import HestdataError, SchemaError

        try:
            return fn(*args, **kwargs)
        except SchemaError as exc:
            fail(str(exc))
        except HestdataError as exc:
            fail(str(exc).splitlines()[0])
        except ValueError as exc:
            fail(str(exc))
        except OSError as exc:  # unreachable servers, permissions, full disks: one line naming the path
            where = exc.filename or ""
            fail(f"{where}: {exc.strerror or exc}" if where else f"{type(exc).__name__}: {exc}")

    return wrapper


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
