"""The error contract of every command: one line ``error: <file>: reason``, exit code 1, nothing left behind.

The list walks the bad inputs found by hand, then a seeded fuzz pass corrupts headers and numbers of each
reader's text inputs: every outcome must be a conversion or a one-line error — never a traceback.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from tests.conftest import her2st_inputs, shared
from tests.synth import synthetic_sample

runner = CliRunner()


def _one_line_error(args: list[str], *must_contain: str) -> str:
    r = runner.invoke(app, args)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code == 1, (args, r.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    for s in must_contain:
        assert s in lines[0], (s, lines[0])
    return lines[0]


def _no_sample_written(root: Path) -> None:
    samples = root / "samples"
    assert not samples.exists() or [p.name for p in samples.iterdir()] == [], list(samples.iterdir())
    assert not (root / "hestdata.json").exists()


def _converted_or_one_line_error(r: object, root: Path) -> None:
    """A fuzzed input either converts into a valid root or fails with one clean line, leaving nothing."""
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    if r.exit_code:
        lines_out = [ln for ln in r.output.strip().splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines_out) == 1 and lines_out[0].startswith("error: "), r.output
        _no_sample_written(root)
    else:
        assert hestdata.validate(root).ok


@pytest.fixture(scope="module")
def c3_quarter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """her2st C3's H&E at a quarter of its side (2.5k px) and its spot file with pixel positions to match: the
    errors tested here are in the text inputs, and a conversion of the full 92-megapixel image would add a
    second per case without reaching any other line of the readers."""
    import pandas as pd
    from PIL import Image

    _, spots, image = her2st_inputs("C3")
    d = tmp_path_factory.mktemp("c3_quarter")
    with Image.open(image) as im:
        im.reduce(4).save(d / "C3_quarter.jpg", quality=90)
    table = pd.read_csv(spots, sep="\t")
    table[["pixel_x", "pixel_y"]] /= 4
    table.to_csv(d / "C3_selection.tsv", sep="\t", index=False)
    return d / "C3_selection.tsv", d / "C3_quarter.jpg"


@pytest.fixture
def st_inputs(tmp_path: Path, c3_quarter: tuple[Path, Path]) -> tuple[Path, Path, Path]:
    counts = her2st_inputs("C3")[0]
    spots, image = c3_quarter
    c, s = tmp_path / "C3.tsv.gz", tmp_path / "C3_selection.tsv"
    shutil.copy(counts, c)
    shutil.copy(spots, s)
    return c, s, image


def _st(st_inputs: tuple[Path, Path, Path], root: Path, *extra: str) -> list[str]:
    c, s, img = st_inputs
    return ["convert", "st", str(c), "--spots", str(s), "--image", str(img), "--out", str(root), "--id", "c3",
            "--no-patches", *extra]


def test_bad_numbers_in_the_spot_file(st_inputs, tmp_path):
    _, spots, _ = st_inputs
    lines = spots.read_text().splitlines()
    for bad in ("inf", "nan", "x1"):
        cols = lines[2].split("\t")
        cols[4] = bad  # pixel_x
        spots.write_text("\n".join(lines[:2] + ["\t".join(cols)] + lines[3:]) + "\n")
        _one_line_error(_st(st_inputs, tmp_path / "R"), str(spots), "pixel_x")
        _no_sample_written(tmp_path / "R")


def test_counts_and_spots_swapped(st_inputs, tmp_path):
    c, s, img = st_inputs
    _one_line_error(["convert", "st", str(s), "--spots", str(c), "--image", str(img), "--out", str(tmp_path / "R"),
                     "--id", "c3"], str(s), "spot file", "swapped")
    _no_sample_written(tmp_path / "R")


def test_bad_ids_options_and_destinations(tmp_path):
    svs = shared("wsi", "CMU-1-Small-Region.svs")
    root = tmp_path / "R"
    _one_line_error(["convert", "wsi", str(svs), "--out", str(root), "--id", "s", "--tile-px", "0"], "tile_px")
    _one_line_error(["convert", "wsi", str(svs), "--out", str(root), "--id", "a" * 300], "is invalid")
    _one_line_error(["convert", "wsi", str(svs), "--out", str(root), "--id", "../x"], "is invalid")
    _no_sample_written(root)
    hestdata.convert(synthetic_sample("a"), root, patches=[])
    (tmp_path / "FILE").write_text("")
    _one_line_error(["download", str(root), str(tmp_path / "FILE")], str(tmp_path / "FILE"), "is a file")
    _one_line_error(["download", str(root), str(tmp_path / "D"), "--where", "organ = = 'x'"], "--where")
    _one_line_error(["download", "http://127.0.0.1:9/nothing", str(tmp_path / "D")], "http://127.0.0.1:9/nothing")
    _one_line_error(["convert", "st", str(tmp_path / "FILE"), "--spots", str(tmp_path / "FILE"), "--image",
                     str(tmp_path / "FILE"), "--out", str(tmp_path / "FILE"), "--id", "x"], "FILE")
    _one_line_error(["validate", str(tmp_path / "missing")], "missing")


def test_bad_visium_side_files(tmp_path):
    outs = tmp_path / "outs"
    shutil.copytree(shared("visium", "seurat_mouse_brain_anterior"), outs)
    sf = outs / "spatial" / "scalefactors_json.json"
    doc = json.loads(sf.read_text())
    sf.write_text(json.dumps({**doc, "tissue_lowres_scalef": 0}))
    _one_line_error(["convert", "visium", str(outs), "--out", str(tmp_path / "R"), "--id", "v", "--no-patches"],
                    str(sf), "tissue_lowres_scalef")
    _no_sample_written(tmp_path / "R")


def test_truncated_mtx_barcodes(tmp_path):
    src = shared("visium_hd", "visiumio_mouse_brain")
    d = tmp_path / "hd"
    shutil.copytree(src, d)
    mtx = next(p for p in d.rglob("filtered_feature_bc_matrix") if p.is_dir())
    for h5 in d.rglob("*.h5"):
        h5.unlink()  # force the MTX path
    bc = next(mtx.glob("barcodes.tsv*"))
    data = gzip.compress(bc.read_bytes()) if bc.suffix != ".gz" else bc.read_bytes()
    target = bc.with_name("barcodes.tsv.gz")
    bc.unlink()
    target.write_bytes(data[: len(data) // 2])
    _one_line_error(["convert", "visium-hd", str(d), "--out", str(tmp_path / "R"), "--id", "hd", "--no-patches"],
                    str(target))
    _no_sample_written(tmp_path / "R")


def test_non_tiff_morphology(tmp_path):
    d = tmp_path / "xen"
    shutil.copytree(shared("xenium", "sfe_jurkat_raji"), d)
    for p in d.glob("morphology*.ome.tif"):
        p.write_text("not a tiff")
    _one_line_error(["convert", "xenium", str(d), "--out", str(tmp_path / "R"), "--id", "x", "--pixel-size-um", "1.7",
                     "--image-origin-um", "1000,1000"], "morphology", "cannot read")
    _no_sample_written(tmp_path / "R")


@pytest.mark.parametrize("seed", range(12))
def test_fuzzed_st_inputs_convert_or_fail_in_one_line(st_inputs, tmp_path, seed):
    """Corrupt a few cells of the spot file and counts header at random: a conversion or one clean line."""
    rng = random.Random(seed)
    c, s, img = st_inputs
    lines = s.read_text().splitlines()
    junk = ["", "NaN", "-1", "1e308", "inf", "abc", "0", "-0.5", "9" * 30, "\x00"]
    for _ in range(3):
        i = rng.randrange(0, len(lines))
        cols = lines[i].split("\t")
        cols[rng.randrange(len(cols))] = rng.choice(junk)
        lines[i] = "\t".join(cols)
    s.write_text("\n".join(lines) + "\n")
    if seed % 3 == 0:  # corrupt the counts header or a count too
        rows = gzip.decompress(c.read_bytes()).decode().splitlines()
        r = rng.randrange(0, min(len(rows), 20))
        cells = rows[r].split("\t")
        cells[rng.randrange(1, len(cells))] = rng.choice(junk + ["TP53"])
        rows[r] = "\t".join(cells)
        c.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode(), compresslevel=1))
    root = tmp_path / "R"
    r = runner.invoke(app, _st(st_inputs, root))
    _converted_or_one_line_error(r, root)


@pytest.mark.parametrize("seed", range(8))
def test_fuzzed_visium_side_files_convert_or_fail_in_one_line(tmp_path, seed):
    """Corrupt cells of the Visium positions file and values of its scale factors: a conversion or one line."""
    rng = random.Random(100 + seed)
    outs = tmp_path / "outs"
    shutil.copytree(shared("visium", "seurat_mouse_brain_anterior"), outs)
    pos = outs / "spatial" / "tissue_positions_list.csv"
    lines = pos.read_text().splitlines()
    junk = ["", "NaN", "-1", "1e308", "inf", "abc", "0", "2.5", "9" * 30]
    for _ in range(3):
        i = rng.randrange(len(lines))
        cols = lines[i].split(",")
        cols[rng.randrange(len(cols))] = rng.choice(junk)
        lines[i] = ",".join(cols)
    pos.write_text("\n".join(lines) + "\n")
    if seed % 2:
        sf = outs / "spatial" / "scalefactors_json.json"
        doc = json.loads(sf.read_text())
        doc[rng.choice(sorted(doc))] = rng.choice([0, -1, "x", None, 1e308, float("nan")])
        sf.write_text(json.dumps(doc))
    root = tmp_path / "R"
    r = runner.invoke(app, ["convert", "visium", str(outs), "--out", str(root), "--id", "v", "--no-patches"])
    _converted_or_one_line_error(r, root)


def test_every_exception_family_is_one_line_at_the_cli(tmp_path, monkeypatch):
    """The families user input and the network raise, each mapped at the CLI boundary to one line with a hint;
    anything else to its type with --debug for the traceback (which --debug then shows)."""
    import pickle

    import polars as pl
    import yaml

    from hestdata.cli.common import describe

    class ConnectError(Exception):  # what an HTTP client raises offline
        __module__ = "httpx"

    class EndpointConnectionError(Exception):
        __module__ = "botocore.exceptions"

    cases = {
        ModuleNotFoundError("No module named 'torch'", name="torch"): "pip install 'hestdata[ml]'",
        ModuleNotFoundError("No module named 'huggingface_hub'", name="huggingface_hub"): "pip install huggingface_hub",
        pickle.UnpicklingError("Weights only load failed: GLOBAL os.system"): "weights_only=True",
        pl.exceptions.ColumnNotFoundError("unable to find column 'x'"): "table: ColumnNotFoundError",
        ConnectError("[Errno -2] Name or service not known"): "network: ConnectError",
        EndpointConnectionError("Could not connect to the endpoint URL"): "check the URL",
        FileNotFoundError(2, "No such file or directory", "/x/y.h5"): "/x/y.h5: No such file or directory",
        json.JSONDecodeError("Expecting value", "{", 1): "Expecting value",
        RuntimeError("boom\nsecond line"): "unexpected RuntimeError: boom (run with --debug",
    }
    try:
        yaml.safe_load("a: !!python/object/apply:os.system ['true']")
    except yaml.YAMLError as exc:
        cases[exc] = "YAML (line 1)"
    for exc, want in cases.items():
        line = describe(exc)
        assert want in line and "\n" not in line, (type(exc), line)

    task = tmp_path / "evil.yaml"
    task.write_text("name: evil\ntype: expression\nsamples: \"id = 'x'\"\ngroup_by: patient\n"
                    "options: !!python/object/apply:os.system ['echo pwned']\n")
    r = runner.invoke(app, ["bench", "run", "--root", str(tmp_path), "--encoder", "color-stats", "--task", str(task)])
    last = r.output.strip().splitlines()[-1]
    assert r.exit_code == 1 and "Traceback" not in r.output and last.startswith("error: YAML (line 5): ")
    assert "could not determine a constructor" in last and "no !!python tags" in last
    monkeypatch.setattr("hestdata.cli.common.debug_enabled", lambda: True)
    r = runner.invoke(app, ["bench", "run", "--root", str(tmp_path), "--encoder", "color-stats", "--task", str(task)])
    assert r.exit_code != 0 and type(r.exception).__module__.startswith("yaml")  # --debug: the real exception


def test_a_refused_first_conversion_leaves_no_root_behind(tmp_path):
    import anndata as ad
    import numpy as np

    s = synthetic_sample("neg")
    X = np.asarray(s.expression.X.toarray() if hasattr(s.expression.X, "toarray") else s.expression.X, np.int64)
    X[0, 0] = -5
    s.expression = ad.AnnData(X=X, obs=s.expression.obs, var=s.expression.var)
    root = tmp_path / "new_root"
    with pytest.raises(hestdata.errors.InputError, match="negative"):
        hestdata.convert(s, root)
    assert not root.exists()  # no empty root, no lock file
    good = hestdata.convert(synthetic_sample("ok"), root)
    with pytest.raises(hestdata.errors.InputError, match="negative"):
        hestdata.convert(s, root)
    assert good.is_dir() and hestdata.validate(root).ok  # an existing root is never removed
