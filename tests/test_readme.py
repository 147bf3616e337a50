"""The README cannot drift: its examples marked ``<!-- readme-test -->`` run against the shared data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    text = README.read_text()
    return re.findall(rf"<!-- readme-test -->\n```{lang}\n(.*?)```", text, flags=re.S)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder whose ``../shared/data`` is the shared data, as beside a fresh clone."""
    if not SHARED.exists():
        pytest.skip(f"shared test data not found: {SHARED}")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(SHARED.resolve())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.slow
def test_readme_shell_examples_run_as_written(workdir):
    (block,) = _blocks("bash")
    # progress bars forced on (no terminal here): a conversion draws a bar per long stage on stderr
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HESTDATA_PROGRESS": "1"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=workdir, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "hestdata 0." in out.stdout and "ROOT: 2 sample(s)" in out.stdout and "valid (root, 2 sample(s))" in out.stdout
    assert "color-stats" in out.stdout and "pearson_mean" in out.stdout
    assert "180 spots" in out.stdout and "patches 224px_0.5um: 180" in out.stdout
    for stage in ("her2st_C3 he pyramid", "her2st_C3 tissue", "her2st_C3 224px_0.5um"):
        assert stage in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
def test_readme_python_example_runs_as_written(workdir, capsys):
    (block,) = _blocks("python")
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'xenium'" in printed and "(64, 3, 224, 224) True" in printed
