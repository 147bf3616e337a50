"""Developer sessions: ``nox -s tests``, ``nox -s demo``, ``nox -s lint``, ``nox -s docs``, ``nox -s peers``,
``nox -s compat`` (Python 3.12, spatialdata 0.8), ``nox -s clients`` (squidpy, spatialdata-plot).

Each session builds its own virtual environment with the interpreter that runs nox (Python >= 3.11).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Install hestdata with its test extras and run the whole suite (GPU tests skip without CUDA)."""
    session.log("installing hestdata[test] (PyTorch with CUDA libraries, spatialdata, the peers): about 7 GB and "
                "5-7 minutes of downloads on a fresh machine, seconds when the environment exists")
    session.install("-e", ".[test]")
    # two processes per machine: many tests wait on subprocesses, servers and Dask clusters; one line per finished
    # test (with the run's percentage) so progress shows under load, and the 15 slowest at the end. xdist's own
    # file order (most tests first) is kept: running the longest files first was measured slower (the test
    # processes grow, and every later DataLoader worker fork costs what they have grown to; RESULTS.md)
    session.run("pytest", "-v", "-ra", "-n", "2", "--dist", "loadfile", "--durations=15", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Install hestdata with the loader/benchmark extra and run the offline demo (writes ./hestdata-demo/)."""
    session.log("installing hestdata[ml] (PyTorch, timm, scikit-learn, matplotlib): about 7 GB and 5 minutes of "
                "downloads on a fresh machine, seconds when the environment exists")
    session.install(".[ml]")
    session.run("hestdata", "demo", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff over the package, tests and benchmarks."""
    session.install("ruff")
    session.run("ruff", "check", "hestdata", "tests", "benchmarks", "noxfile.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the mkdocs site into ./site (strict: broken links and anchors fail; docs/reference.md is generated
    from the docstrings by mkdocstrings, which reads the source without importing it)."""
    session.install("mkdocs>=1.6", "mkdocstrings[python]>=0.26")
    session.run("mkdocs", "build", "--strict")


@nox.session
def peers(session: nox.Session) -> None:
    """The loader against litdata, MosaicML streaming and webdataset (benchmarks/loader_peers.py), in an
    environment of its own (MosaicML streaming pins numpy below 2.2)."""
    session.log("installing hestdata[bench-peers] (PyTorch, litdata, MosaicML streaming, webdataset, moto): "
                "several GB and minutes on a fresh machine")
    session.install("-e", ".[bench-peers]")
    session.run("python", "benchmarks/loader_peers.py", *session.posargs)



@nox.session(python=["3.12"])
def compat(session: nox.Session) -> None:
    """The newest scverse stack (spatialdata 0.8 needs Python >= 3.12) with the plain install: stores written and
    read, opened without hestdata, spatial queries, and the README's commands without extras (each works or names
    the extra in one line); tests that need the ``ml`` extra are left out."""
    session.install("-e", ".", "pytest>=8", "spatialdata>=0.8")
    session.run("pytest", "-q", "tests/test_scverse.py", "tests/test_format.py", "tests/test_curation_fidelity.py",
                "tests/test_plain_install.py", "-k", "not 020 and not format1_root_is_read", *session.posargs)


@nox.session
def clients(session: nox.Session) -> None:
    """Our stores in squidpy (spatial graph at the array's pitch, Moran's I) and spatialdata-plot (image and
    spots rendered), the tools users already have (tests/test_clients.py; skipped in the main suite)."""
    session.install("-e", ".[clients]")
    session.run("pytest", "-q", "tests/test_clients.py", *session.posargs)
