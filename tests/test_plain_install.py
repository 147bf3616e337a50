"""The plain install (`pip install hestdata`, no extras), as the README describes it: every README command either
works or fails with one line that names the extra to install, and results render without torch.

Runs where torch is absent (``nox -s compat``: Python 3.12, spatialdata 0.8, no extras); skipped elsewhere."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_readme import _blocks, workdir  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                                reason="torch is installed: this checks the plain install")


def _hestdata(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hestdata.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_readme_commands_work_or_name_the_extra(workdir):  # noqa: F811
    (block,) = _blocks("bash")
    commands = [c.replace("\\\n", " ") for c in block.replace("\\\n", " ").splitlines() if c.startswith("hestdata")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "D": "../shared/data/st_legacy/her2st"}
    needs_ml = 0
    for cmd in commands:
        out = subprocess.run(["bash", "-c", cmd], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        if out.returncode == 0:
            continue
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and "Traceback" not in out.stderr, (cmd, out.stderr[-2000:])
        assert lines[0].startswith("error:"), (cmd, lines)
        # the extra named, or a consequence of an earlier command that named it (no leaderboard without a run)
        assert "pip install 'hestdata[ml]'" in lines[0] or needs_ml, (cmd, lines)
        needs_ml += "pip install 'hestdata[ml]'" in lines[0]
    assert 0 < needs_ml < len(commands)  # convert/info/validate work; the benchmark names its extra


def test_the_leaderboard_renders_without_torch(tmp_path):
    from hestdata.bench.leaderboard import append_rows

    root = tmp_path / "root"
    root.mkdir()
    row = {"task": "t", "task_type": "expression", "encoder": "e", "fingerprint": "f" * 64, "metric": "pearson_mean",
           "folds": ["A", "B"], "fold_values": [0.2, 0.3], "mean": 0.25, "std": 0.05, "date": "2026-12-04",
           "ci_low": 0.2, "ci_high": 0.3, "data_version": "d" * 64, "versions": "{}"}
    append_rows(root, [row])
    out = _hestdata("bench", "leaderboard", str(root), "--html", str(tmp_path / "lb.html"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "| e |" in out.stdout and (tmp_path / "lb.html").read_text().count("<table") == 1
    assert "torch" not in sys.modules


def _docs_commands() -> list[tuple[str, str]]:
    import re

    docs = Path(__file__).resolve().parents[1] / "docs"
    out = []
    for page in sorted(docs.rglob("*.md")):
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip().startswith("hestdata "):
                    out.append((page.name, line.strip()))
    return out


def test_docs_commands_work_or_fail_in_one_line(tmp_path):
    """Every ``hestdata`` command in the docs, run as written in an empty folder, offline and without extras: its
    inputs are not there and the network is not either, so most fail — each with one ``error:`` line, never a
    traceback."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HESTDATA_RETRIES": "1", "AWS_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true",
           "HF_HUB_OFFLINE": "1", "AWS_ACCESS_KEY_ID": "none", "AWS_SECRET_ACCESS_KEY": "none"}
    commands = _docs_commands()
    assert len(commands) > 20
    bad = []
    for page, cmd in commands:
        try:
            out = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=120)
        except subprocess.TimeoutExpired:
            bad.append(f"{page}: {cmd}: ran past 120 s")
            continue
        lines = out.stderr.strip().splitlines()
        if "Traceback" in out.stderr or (out.returncode and (out.returncode != 1 or len(lines) != 1
                                                             or not lines[0].startswith("error:"))):
            bad.append(f"{page}: {cmd}: exit {out.returncode}: {out.stderr[-600:]}")
    assert not bad, "\n".join(bad)
