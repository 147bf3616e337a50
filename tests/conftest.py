"""Shared fixtures. Real data comes from ``../shared/data`` (see its README); tests that need it are skipped
with a clear reason when it is absent (set ``HESTDATA_SHARED_DATA`` to point elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """Path under the shared data folder; skip the test if it is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared test data not found: {p} (set HESTDATA_SHARED_DATA)")
    return p


HER2ST = ("her2st", "B4", "BT10737_D2_HE.jpg", "B"), ("her2st", "C2", "5714_HE_BT_C2.jpg", "C"), \
    ("her2st", "C3", "5714_HE_BT_D1.jpg", "C")


def her2st_inputs(section: str) -> tuple[Path, Path, Path]:
    base = shared("st_legacy", "her2st")
    img = {s: (f, p) for _, s, f, p in HER2ST}[section]
    return (base / "ST-cnts" / f"{section}.tsv.gz", base / "ST-spotfiles" / f"{section}_selection.tsv",
            base / "ST-imgs" / img[1] / section / img[0])


@pytest.fixture(scope="session")
def her2st_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the three her2st sections converted once for the whole session."""
    import hestdata

    root = tmp_path_factory.mktemp("her2st") / "root"
    for _, section, _, patient in HER2ST:
        counts, spots, image = her2st_inputs(section)
        s = hestdata.read_st(counts, spots=spots, image=image, sample_id=f"her2st_{section}")
        hestdata.convert(s, root, metadata={"patient": patient, "organ": "breast", "cohort": "her2st"})
    return root


@pytest.fixture(scope="session")
def squidpy_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import hestdata

    d = shared("visium", "squidpy_mouse_brain_crop")
    root = tmp_path_factory.mktemp("squidpy") / "root"
    s = hestdata.read_anndata(d / "test_data.h5ad", image=d / "test_img.jpg", sample_id="squidpy_crop")
    return hestdata.convert(s, root)


def leftovers(root: Path) -> list[str]:
    """Anything in root/samples that is not a committed sample (temporary or trash folders)."""
    d = root / "samples"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []
