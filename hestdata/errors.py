"""Exception hierarchy: every error names the file and what is wrong with it.

``HestdataError`` is the root; the CLI turns any of them into a one-line message and a non-zero exit.
"""

from __future__ import annotations

from pathlib import Path


class HestdataError(Exception):
    """Base class of all errors raised on purpose by hestdata."""


class InputError(HestdataError):
    """A source file is missing, unreadable or inconsistent.

    ``path`` is the offending file (or folder), ``reason`` what is wrong, ``hint`` what to do about it.
    """

    def __init__(self, path: str | Path | None, reason: str, hint: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        self.hint = hint
        msg = reason if self.path is None else f"{self.path}: {reason}"
        if hint:
            msg = f"{msg} ({hint})"
        super().__init__(msg)


class SchemaError(HestdataError):
    """Metadata or a store does not conform to the specification; ``violations`` lists every problem."""

    def __init__(self, where: str | Path, violations: list[str]) -> None:
        self.where = str(where)
        self.violations = list(violations)
        head = f"{where}: {len(self.violations)} violation(s) of the hestdata specification"
        super().__init__(head + "".join(f"\n  - {v}" for v in self.violations))


class IntegrityError(HestdataError):
    """Stored bytes do not match their recorded size or checksum."""


class HestdataWarning(UserWarning):
    """A doubt recorded at conversion (flagged pixel size, skipped spots, …): also kept in the sample's QC."""


class StoreError(HestdataError):
    """A store cannot be written or read (e.g. an existing sample and no ``overwrite``)."""


def require_extra(module: str, extra: str, what: str) -> None:
    """Raise a clear :class:`HestdataError` when an optional dependency (installed by an extra) is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise HestdataError(f"{what} needs {module}, which is not installed: pip install 'hestdata[{extra}]'")


def is_disk_full(exc: BaseException) -> bool:
    """An OS error saying the device (or the user's quota) is full."""
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
