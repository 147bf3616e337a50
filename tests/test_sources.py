"""The source registry and the one conversion pipeline: every technology through the same contract."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from hestdata.cohort.cohort import load_cohort
from hestdata.cohort.register import register_cohort
from hestdata.sources import registry
from hestdata.sources.registry import get_source
from tests.conftest import her2st_inputs, shared
from tests.synth import synthetic_sample

# derived from the registry's own table, so adding a source touches no test list (docs/sources.md); each module in
# hestdata/sources/ that registers a source must be in it
BUILTIN = sorted(registry._BUILTIN)
DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_list_sources_and_contracts():
    assert hestdata.list_sources() == BUILTIN
    registering = {p.stem for p in Path(registry.__file__).parent.glob("*.py")
                   if "register_source(Source(" in p.read_text() or "register_source(\n" in p.read_text()}
    assert registering <= {m.rsplit(".", 1)[1] for m in registry._BUILTIN.values()}, registering
    for name in BUILTIN:
        src = get_source(name)
        assert src.name == name and src.variant in ("spots", "cells", "channels", "slide", "images")
        assert src.inputs and src.options.model_config.get("extra") == "forbid"
    assert get_source("visium-hd") is get_source("visium_hd")
    with pytest.raises(hestdata.InputError, match="unknown source 'visum'.*visium"):
        get_source("visum")


def test_unknown_option_names_option_and_source():
    with pytest.raises(hestdata.InputError, match=r"unknown option 'no_such_option' for source 'xenium'"):
        get_source("xenium").parse_options({"no_such_option": 3})
    with pytest.raises(hestdata.InputError, match=r"option 'grid' for source 'xenium'"):
        get_source("xenium").parse_options({"grid": "triangle"})
    with pytest.raises(hestdata.InputError, match="unknown option 'min_qv' for spots samples"):
        hestdata.convert(synthetic_sample(), "unused-root", min_qv=3)
    with pytest.raises(TypeError, match="hestdata Sample"):
        hestdata.convert(object(), "unused-root")  # type: ignore[arg-type]


def test_convert_callable_even_after_the_package_is_imported(tmp_path):
    import hestdata.convert as module

    assert callable(module)
    path = module(synthetic_sample("c1"), tmp_path / "root", patches=[])
    assert hestdata.validate(tmp_path / "root").ok and path.name == "c1.zarr"


def test_id_rule_is_the_same_for_every_technology(tmp_path):
    root = tmp_path / "R"
    svs = shared("wsi", "CMU-1-Small-Region.svs")
    r = CliRunner().invoke(app, ["convert", "wsi", str(svs), "--out", str(root), "--id", "nested/evil"])
    assert r.exit_code == 1 and "sample id 'nested/evil' is invalid" in r.output
    assert not (root / "samples" / "nested").exists()
    assert not (root / "samples").exists() or list((root / "samples").iterdir()) == []
    for name, inputs in [("xenium", {"dir": shared("xenium", "sfe_jurkat_raji")}), ("wsi", {"slide": svs})]:
        with pytest.raises(hestdata.InputError, match="is invalid"):
            get_source(name).read(inputs, sample_id="../up", options={"pixel_size_um": 1.7})
    s = get_source("wsi").read({"slide": svs}, sample_id="ok")
    s.sample_id = "a" * 200  # a reader that let a bad id through is still stopped before writing
    with pytest.raises(hestdata.InputError, match="is invalid"):
        hestdata.convert(s, root)
    assert not (root / "samples").exists() or not list((root / "samples").iterdir())
    for reserved in ("CON", "nul", "aux.txt", "Com3", "lpt9.x"):  # Windows device names, whatever the case
        s.sample_id = reserved
        with pytest.raises(hestdata.InputError, match="Windows reserves"):
            hestdata.convert(s, root)
    s.sample_id = "console"  # only the whole first part counts
    assert hestdata.convert(s, root).name == "console.zarr"


def test_every_source_has_a_cli_command_with_its_options():
    runner = CliRunner()
    r = runner.invoke(app, ["convert", "--help"])
    assert r.exit_code == 0
    for name in BUILTIN:
        assert name.replace("_", "-") in r.output
    r = runner.invoke(app, ["convert", "xenium", "--help"], env={"COLUMNS": "200"})
    for flag in ("--grid", "--min-qv", "--he-affine-um", "--pseudospot-um", "--he-image", "--patch"):
        assert flag in r.output, flag


def _cohort(tmp_path: Path, samples: list[dict], defaults: dict | None = None) -> Path:
    p = tmp_path / "cohort.yaml"
    p.write_text(yaml.safe_dump({"name": "c", "license": "CC0", "defaults": defaults or {}, "samples": samples}))
    return p


def test_cohort_options_are_typed_per_source_before_conversion(tmp_path):
    x = str(shared("xenium", "sfe_jurkat_raji"))
    svs = str(shared("wsi", "CMU-1-Small-Region.svs"))
    bad = _cohort(tmp_path, [
        {"id": "x", "technology": "xenium", "inputs": {"dir": x}, "options": {"no_such_option": 3}},
        {"id": "w", "technology": "wsi", "inputs": {"slide": svs}, "options": {"min_tissue_fraction": 2}},
        {"id": "v", "technology": "nosuch", "inputs": {"dir": x}},
    ])
    with pytest.raises(hestdata.SchemaError) as e:
        load_cohort(bad)
    text = str(e.value)
    assert "unknown option 'no_such_option' for source 'xenium'" in text
    assert "option 'min_tissue_fraction' for source 'wsi'" in text and "unknown source 'nosuch'" in text
    root = tmp_path / "root"
    with pytest.raises(hestdata.SchemaError):
        register_cohort(bad, root)
    assert not (root / "hestdata.json").exists()


def test_cohort_options_reach_the_conversion(tmp_path):
    """Xenium grid/min_qv/he_affine_um and WSI patches/min_tissue_fraction given in a cohort are honoured."""
    x = shared("xenium", "sfe_jurkat_raji")
    svs = str(shared("wsi", "CMU-1-Small-Region.svs"))
    he = tmp_path / "he.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)).save(he)
    cohort = _cohort(tmp_path, [
        {"id": "x", "technology": "xenium", "inputs": {"dir": str(x), "he_image": str(he)}, "pixel_size_um": 1.7,
         "options": {"image_origin_um": "1000,1000", "grid": "hex", "min_qv": 30, "pseudospot_um": [100],
                     "he_affine_um": [4.0, 0, 1000, 0, 4.0, 1000], "patches": ["16px_4um"]}},
        {"id": "w", "technology": "wsi", "inputs": {"slide": svs},
         "options": {"patches": ["64px_4um"], "min_tissue_fraction": 0.8}},
    ])
    rep = register_cohort(cohort, tmp_path / "root", n_workers=1, allow_outside_inputs=True)  # one by one, in-process
    assert rep.ok, [o.reason for o in rep.outcomes]
    root = tmp_path / "root"
    mx = hestdata.read_metadata(root / "samples" / "x.zarr")
    assert set(mx.qc.patches) == {"cells-16px_4um", "pseudospots_100um-16px_4um"}
    assert mx.variant == "cells"
    sd = hestdata.open_sample(root / "samples" / "x.zarr").sdata
    assert "radius" in sd.shapes["pseudospots_100um"].columns  # hex grid: circles
    xs = get_source("xenium").read({"dir": x}, sample_id="x", options={"pixel_size_um": 1.7,
                                                                       "image_origin_um": "1000,1000"})
    from hestdata.curation.pseudospots import make_pseudospots

    genes = list(xs.cells.var_names)
    ref = make_pseudospots(xs.transcripts, genes, 100, "hex", 30)
    default = make_pseudospots(xs.transcripts, genes, 100, "square", 20)
    stored = sd.tables["expression_pseudospots_100um"]
    assert stored.n_obs == len(ref.centres_um) == mx.qc.tables["pseudospots_100um"]
    assert int(stored.X.sum()) == int(ref.counts.sum()) != int(default.counts.sum())  # min_qv 30 and hex applied
    mw = hestdata.read_metadata(root / "samples" / "w.zarr")
    assert set(mw.qc.patches) == {"64px_4um"} and mw.qc.patches["64px_4um"].min_tissue_fraction == 0.8
    assert mw.variant == "slide"


def _docs_block(page: str, marker: str) -> str:
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if marker in b)


def test_the_smallest_real_source_from_the_docs(tmp_path):
    """docs/sources.md's example source, run as written on the real her2st C3 section."""
    counts, spots, image = her2st_inputs("C3")
    cnt = pd.read_csv(counts, sep="\t", index_col=0)
    sp = pd.read_csv(spots, sep="\t")
    sp.index = [f"{x}x{y}" for x, y in zip(sp["x"], sp["y"], strict=True)]
    both = cnt.index.intersection(sp.index)
    table = pd.concat([sp.loc[both, ["pixel_x", "pixel_y"]].set_axis(["x_px", "y_px"], axis=1),
                       cnt.loc[both].iloc[:, :300]], axis=1)
    table.index.name = "barcode"
    table.to_csv(tmp_path / "spots.csv")
    namespace: dict = {}
    exec(compile(_docs_block("sources.md", "SPOTS_CSV"), "docs/sources.md", "exec"), namespace)
    assert "spots_csv" in hestdata.list_sources()
    src = get_source("spots_csv")
    s = src.read({"table": tmp_path / "spots.csv", "image": image}, sample_id="c3csv",
                 options={"pixel_size_um": 0.69})
    path = hestdata.convert(s, tmp_path / "root", options=src.parse_options({"patches": ["112px_1um"]}),
                            metadata={"patient": "C"})
    m = hestdata.read_metadata(path)
    assert m.qc.n_obs == len(both) and m.qc.patches["112px_1um"].n_patches == len(both)
    assert m.variant == "spots" and hestdata.validate(tmp_path / "root").ok
    ref = hestdata.convert(hestdata.read_st(counts, spots=spots, image=image, sample_id="c3", pixel_size_um=0.69),
                           tmp_path / "ref", patches=["112px_1um"])
    a = hestdata.open_sample(path).patches("112px_1um")["images"][:]
    b = hestdata.open_sample(ref).patches("112px_1um")["images"][:]
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 1.0  # same spots, same pixels


def test_entry_point_sources_appear_in_the_cli(tmp_path):
    """A source published by another package (entry point group hestdata.sources) gets its convert command."""
    pkg = tmp_path / "site"
    (pkg / "labfmt").mkdir(parents=True)
    (pkg / "labfmt" / "__init__.py").write_text(textwrap.dedent(_docs_block("sources.md", "SPOTS_CSV"))
                                                .replace("SPOTS_CSV = register_source(Source(", "SPOTS_CSV = (Source("))
    dist = pkg / "labfmt-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: labfmt\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hestdata.sources]\nspots_csv = labfmt:SPOTS_CSV\n")
    env = {"PYTHONPATH": f"{pkg}{':' + sys.path[0] if sys.path[0] else ''}", "COLUMNS": "200"}
    import os

    out = subprocess.run([sys.executable, "-m", "hestdata.cli", "convert", "--help"], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "spots-csv" in out.stdout
    out = subprocess.run([sys.executable, "-c", "import hestdata, json; print(json.dumps(hestdata.list_sources()))"],
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert json.loads(out.stdout) == sorted([*BUILTIN, "spots_csv"])
