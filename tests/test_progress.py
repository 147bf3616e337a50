"""Progress bars: drawn only on a terminal (or when forced), never under --quiet; nested and threaded bars share
one live display."""

from __future__ import annotations

import io
import threading

import pytest

from hestdata.io import progress


@pytest.fixture
def forced(monkeypatch, capsys):
    """Bars forced on; ``forced()`` returns what they drew on stderr."""
    monkeypatch.setenv(progress.FORCE_ENV, "1")
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    return lambda: capsys.readouterr().err


def test_bars_only_on_a_terminal_and_never_quiet(monkeypatch):
    monkeypatch.delenv(progress.FORCE_ENV, raising=False)
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a pipe or a log
    assert not progress.enabled()
    monkeypatch.setenv(progress.FORCE_ENV, "1")
    assert progress.enabled()
    monkeypatch.setenv(progress.QUIET_ENV, "1")  # --quiet wins
    assert not progress.enabled()
    monkeypatch.delenv(progress.QUIET_ENV)
    with progress.silenced():  # convert(progress=False)
        assert not progress.enabled()
    assert progress.enabled()


def test_nested_and_threaded_bars_share_one_display(forced):
    seen = []

    def worker(k: int) -> None:
        seen.extend(progress.track(range(50), f"inner {k}", 50))

    with progress.bar("outer", 4) as advance:
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
            advance(1)
    assert sorted(seen) == sorted(list(range(50)) * 4)  # every item passes through, once
    text = forced()
    assert "outer" in text and all(f"inner {k}" in text for k in range(4))
    assert progress._live is None and progress._users == 0  # the display is closed when the last bar ends


def test_quiet_draws_nothing(forced, monkeypatch):
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    assert list(progress.track(range(3), "hidden", 3)) == [0, 1, 2]
    with progress.bar("hidden too", 10, bytes_=True) as advance:
        advance(5)
    assert "hidden" not in forced()
