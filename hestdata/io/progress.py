"""Progress bars for long steps (rich): drawn only when stderr is a terminal, silent under ``--quiet``
(``HESTDATA_QUIET=1``), in logs and in pipes.

Every bar of a process joins one shared live display, so a bar opened while another runs (a sample's patches
inside a cohort registration) is one more line instead of rich's "only one live display" error. Bars are safe to
advance from threads. ``HESTDATA_PROGRESS=1`` draws them even without a terminal (for tests and ``script``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
QUIET_ENV = "HESTDATA_QUIET"
FORCE_ENV = "HESTDATA_PROGRESS"

_lock = threading.RLock()
_live: Any = None
_users = 0
_silenced = 0


def enabled() -> bool:
    """Whether bars are drawn now: a terminal (or ``HESTDATA_PROGRESS=1``), not quiet, not silenced."""
    if _silenced or os.environ.get(QUIET_ENV, "") not in ("", "0"):
        return False
    return os.environ.get(FORCE_ENV, "") == "1" or sys.stderr.isatty()


@contextmanager
def silenced() -> Iterator[None]:
    """No bars inside this block (an API call with ``progress=False``)."""
    global _silenced
    with _lock:
        _silenced += 1
    try:
        yield
    finally:
        with _lock:
            _silenced -= 1


def _display() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Amount(ProgressColumn):  # "12/40" for items, "3.1/9.0 MB" for bytes, "…" while the total is unknown
        def render(self, task: Any) -> Text:
            if task.fields.get("bytes"):
                done, total = task.completed / 1e6, (task.total or 0) / 1e6
                return Text(f"{done:.1f}/{total:.1f} MB" if task.total else f"{done:.1f} MB")
            return Text(f"{int(task.completed)}/{int(task.total)}" if task.total else f"{int(task.completed)}")

    console = Console(stderr=True, force_terminal=True if os.environ.get(FORCE_ENV) == "1" else None)
    return Progress(TextColumn("{task.description}"), BarColumn(), Amount(), TimeElapsedColumn(),
                    console=console, transient=True)


@contextmanager
def bar(label: str, total: float | None = None, *, bytes_: bool = False) -> Iterator[Callable[[float], None]]:
    """A bar for ``label`` (a spinner-like pulse while ``total`` is None); yields ``advance(n)``."""
    global _live, _users
    if not enabled():
        yield lambda n=1: None
        return
    with _lock:
        if _live is None:
            _live = _display()
            _live.start()
        _users += 1
        live = _live
        task = live.add_task(label, total=total, bytes=bytes_)
        live.refresh()  # drawn at least once, however short the step

    def advance(n: float = 1) -> None:
        live.advance(task, n)

    try:
        yield advance
    finally:
        with _lock:
            live.remove_task(task)
            _users -= 1
            if _users == 0:
                live.stop()
                _live = None


def track(items: Iterable[T], label: str, total: float | None = None,
          weight: Callable[[T], float] | None = None) -> Iterator[T]:
    """Iterate ``items`` with a bar; each item advances it by ``weight(item)`` (1 by default)."""
    with bar(label, total) as advance:
        for item in items:
            yield item
            advance(weight(item) if weight is not None else 1)
