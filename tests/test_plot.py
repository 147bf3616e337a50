"""hestdata plot: a figure of a converted sample with what a reviewer asks for — title with id, technology and
pixel size, µm axes and a scale bar, a colour bar or legend — and a gallery without black padding bands."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from hestdata.cli import app
from hestdata.plot.style import nice_length_um, without_padding


def test_padding_and_scale_bar_helpers():
    rng = np.random.default_rng(0)
    patches = rng.integers(30, 255, (4, 16, 16, 3), dtype=np.uint8)
    patches[1, :, :3] = 0  # reaches past the left edge of the image: a black band
    patches[2, -1, :] = 0  # one black bottom row
    patches[3, 5:9, 5:9] = 0  # black inside (a dark nucleus), not a band at the border
    assert without_padding(patches).tolist() == [0, 3]
    assert [nice_length_um(x) for x in (6400.0, 112.0, 0.9, 1000.0)] == [1000.0, 20.0, 0.1, 200.0]


def test_plot_a_sample_by_gene_and_by_patch_status(her2st_root, tmp_path):
    from PIL import Image

    out = tmp_path / "c3.png"
    r = CliRunner().invoke(app, ["plot", str(her2st_root), "her2st_C3", "--gene", "ERBB2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    im = np.asarray(Image.open(out).convert("RGB"))
    assert im.shape[1] > 1000 and im.std() > 20
    svg = tmp_path / "c3.svg"  # the same figure as SVG: its text says what it shows
    r = CliRunner().invoke(app, ["plot", str(her2st_root), "her2st_C3", "--out", str(svg)])
    assert r.exit_code == 0, r.output
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        from hestdata.plot import plot_sample

        plot_sample(her2st_root, "her2st_C3", svg)
    text = svg.read_text()
    for words in ("her2st_C3", "µm/px", "x (µm)", "1 mm", "patched (", "tissue (Otsu)", "patches 224px_0.5um"):
        assert words in text, words
    bad = CliRunner().invoke(app, ["plot", str(her2st_root), "her2st_C3", "--gene", "ERBB", "--out", str(out)])
    assert bad.exit_code == 1 and "gene 'ERBB' is not in the table" in bad.output and "ERBB2" in bad.output


def test_plot_refuses_an_unknown_sample(her2st_root, tmp_path):
    r = CliRunner().invoke(app, ["plot", str(her2st_root), "nope", "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
