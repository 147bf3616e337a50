"""Every figure in docs/figures is made by docs/tutorials/make_figures.py — or, for the image-collection page, by
benchmarks/bccd.py (its FIGURES; that run takes minutes and is recorded in RESULTS.md); this runs make_figures.py
(at a small explanation size) so the command keeps working and each figure comes out. It runs in the test's own
process (the script's ``main``, as ``python make_figures.py`` calls it): a fresh interpreter would only import
torch and the conversion stack again."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_figures_regenerates_every_docs_figure(tmp_path):
    shared("st_legacy", "her2st")  # skips without the shared data
    out = tmp_path / "figures"
    spec = importlib.util.spec_from_file_location("make_figures", REPO / "docs" / "tutorials" / "make_figures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--out", str(out), "--explain-patches", "4", "--sections", "B4,C3", "--grid", "128px_2um",
                 "--pretrain-encoder", "color-stats", "--pretrain-epochs", "2"])
    made = sorted(p.name for p in out.glob("*.jpg"))
    from PIL import Image

    sys.path.insert(0, str(REPO))
    from benchmarks.bccd import FIGURES

    docs = sorted(p.name for p in (REPO / "docs" / "figures").glob("*.jpg"))
    assert sorted([*made, *FIGURES]) == docs  # every figure in docs/ has a maker
    for name in FIGURES:
        im = np.asarray(Image.open(REPO / "docs" / "figures" / name))
        assert max(im.shape[:2]) <= 1200 and im.std() > 10, name
    for name in made:
        im = np.asarray(Image.open(out / name))
        assert max(im.shape[:2]) <= 1200 and im.std() > 10, name  # a picture, not a blank page
