"""The command line and the demo, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from tests.conftest import her2st_inputs, shared

runner = CliRunner()


def test_help_everywhere():
    for args in ([], ["convert"], ["convert", "visium"], ["convert", "st"], ["convert", "anndata"],
                 ["convert", "visium-hd"], ["info"], ["validate"], ["demo"]):
        r = runner.invoke(app, [*args, "--help"])
        assert r.exit_code == 0, (args, r.output)
        assert "Usage" in r.output


def test_convert_visium_info_validate(tmp_path):
    d = shared("visium", "seurat_mouse_brain_anterior")
    root = tmp_path / "root"
    r = runner.invoke(app, ["convert", "visium", str(d), "--out", str(root), "--id", "anterior", "--no-patches",
                            "--meta", "organ=brain", "--meta", "patient=m1"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "2695 spots" in r.output
    r = runner.invoke(app, ["info", str(root)])
    assert r.exit_code == 0 and "anterior" in r.output and "1 sample" in r.output
    r = runner.invoke(app, ["info", str(root / "samples" / "anterior.zarr")])
    assert r.exit_code == 0 and '"organ": "brain"' in r.output
    r = runner.invoke(app, ["validate", str(root)])
    assert r.exit_code == 0 and "valid" in r.output
    # a lowres-only sample asked for 0.5 µm/px patches: exit 1, one line, the cause named
    r = runner.invoke(app, ["convert", "visium", str(d), "--out", str(root), "--id", "anterior2"])
    assert r.exit_code == 1
    err = r.output.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "best available image" in err[0]
    assert not (root / "samples" / "anterior2.zarr").exists()


def test_convert_st_subprocess_fails_in_one_line(tmp_path):
    """``python -m hestdata.cli``: a missing input is one line on stderr and exit code 1 (a conversion run this way
    as written, with its progress bars, is tests/test_readme.py's)."""
    counts, _, image = her2st_inputs("C3")
    cmd = [sys.executable, "-m", "hestdata.cli", "convert", "st", str(counts), "--spots", str(tmp_path / "nope.tsv"),
           "--image", str(image), "--out", str(tmp_path / "root"), "--id", "C3", "--meta", "organ=breast"]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.tsv'}: spot file not found"]
    assert not (tmp_path / "root" / "samples").exists() or not any((tmp_path / "root" / "samples").iterdir())


def test_demo_offline(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output
    assert "loader: one epoch of" in r.output and "pairs/s" in r.output
    assert "| color-stats |" in r.output and "| random-vit-s16 |" in r.output  # the baseline leaderboard
    assert (out / "overview.png").stat().st_size > 10_000
    cat = hestdata.open_catalog(out / "root")
    assert cat["synthetic"].to_list() == [True, True] and cat["patient"].to_list() == ["P0", "P1"]
    first = hestdata.read_metadata(out / "root" / "samples" / f"{cat['id'][0]}.zarr")
    assert 20 < first.qc.n_obs_in_tissue <= cat["n_patches"][0] <= cat["n_obs"][0]  # every marked spot patched
    assert "next:" in r.output and "hestdata validate" in r.output
    assert hestdata.validate(out / "root").ok
    meta = hestdata.read_metadata(out / "root" / "samples" / "demo_synthetic_ihc_0.zarr")
    assert meta.pixel_size_um.trusted == "embedded" and meta.pixel_size_um.value == 0.5  # from TIFF tags
    assert not meta.pixel_size_um.flagged  # the simulated grid agrees with the tags


def test_demo_on_real_visium(tmp_path):
    d = shared("visium", "seurat_mouse_brain_anterior")
    r = runner.invoke(app, ["demo", "--data", str(d), "--out", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    assert "converting without patches" in r.output and "best available image" in r.output
    assert Path(tmp_path / "demo" / "overview.png").exists()


def test_defaults_a_newcomer_can_use(tmp_path):
    """bench embed/export take the patch array the root holds; a default-true option can be turned off; the
    demo's next steps name a hestdata the shell can find."""
    import polars as pl
    import typer

    from hestdata.cli import default_patch
    from hestdata.demo import hestdata_command

    cat = lambda *arrays: pl.DataFrame({"patch_arrays": [list(a) for a in arrays]})  # noqa: E731
    assert default_patch(cat(["224px_1.14286um"], ["224px_1.14286um"])) == "224px_1.14286um"  # slides only
    assert default_patch(cat(["224px_0.5um", "cells-32px_0.5um"], ["224px_0.5um"])) == "224px_0.5um"
    for bad, words in ((cat(["64px_1um"], ["32px_2um"]), "--patch: 64px_1um (1 sample(s)), 32px_2um"),
                       (cat([], []), "no sample of the root holds a patch array")):
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(typer.Exit):
            default_patch(bad)
        assert words in err.getvalue(), err.getvalue()
    r = runner.invoke(app, ["convert", "visium", "--help"])
    assert "--no-pseudobulk" in r.output
    h = hestdata_command()
    assert h == "hestdata" or Path(h.split()[0]).exists()


def test_library_warnings_take_the_warning_channel(capsys, monkeypatch):
    import warnings

    from hestdata.cli import _one_line_warning

    monkeypatch.delenv("HESTDATA_DEBUG", raising=False)
    monkeypatch.setattr(warnings, "showwarning", _one_line_warning)
    warnings.warn_explicit("spot file has\n  two headers", UserWarning, "/lib/x.py", 12)
    warnings.warn_explicit("old API", DeprecationWarning, "/lib/y.py", 3)
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: spot file has two headers", "warning: DeprecationWarning: old API"]


def test_every_command_has_the_one_line_error_contract():
    """Each command's callback goes through handle_errors (functools.wraps marks it), so no command can print a
    traceback for a failure a user can cause (a missing extra, a bad file, the network)."""
    from hestdata.cli import app, bench_app, convert_app

    unwrapped = [f"{group} {c.name or c.callback.__name__}" for group, t in (("", app), ("bench", bench_app),
                                                                            ("convert", convert_app))
                 for c in t.registered_commands if not hasattr(c.callback, "__wrapped__")]
    assert not unwrapped, unwrapped
