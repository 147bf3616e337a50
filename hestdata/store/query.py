"""Catalog filters: a condition on the catalog's columns, given as a polars expression or a string."""

from __future__ import annotations

from typing import Any

from hestdata.errors import InputError


def as_expr(where: Any) -> Any:
    """A polars expression for ``where`` (a polars expression, or an SQL condition string)."""
    if not isinstance(where, str):
        return where
    import polars as pl

    try:
        return pl.sql_expr(where)
    except Exception as exc:
        raise InputError(None, f"--where {where!r} is not a valid condition on the catalog ({exc})") from None
