"""The docs hold together without building them: every page is in the nav, every relative link points at a file
(and an anchor, where it names one, at a heading of that file), and the API reference lists every export."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _nav_pages(nav: list) -> set[str]:
    out: set[str] = set()
    for item in nav:
        for v in (item.values() if isinstance(item, dict) else [item]):
            out |= _nav_pages(v) if isinstance(v, list) else {v}
    return out


def _anchors(page: Path) -> set[str]:
    """mkdocs' heading ids: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+\s+(.*)$", page.read_text(), flags=re.M)
    return {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", h.strip().lower())) for h in heads}


def test_every_page_is_in_the_nav():
    nav = _nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == nav, f"not in the nav: {sorted(pages - nav)}; in the nav but missing: {sorted(nav - pages)}"


def test_relative_links_resolve():
    bad = []
    for page in [*DOCS.rglob("*.md"), REPO / "README.md"]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve()
            if not dest.exists():
                bad.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{page.relative_to(REPO)}: {target} (no heading #{anchor})")
    assert not bad, "\n".join(bad)


def test_the_reference_lists_every_export():
    import hestdata

    ref = (DOCS / "reference.md").read_text()
    missing = [n for n in hestdata.__all__ if n != "__version__" and not re.search(rf"^::: [\w.]+\.{n}$", ref, re.M)]
    assert not missing, f"exports missing from docs/reference.md: {missing}"
