"""Marker names → the canonical vocabulary (``hestdata/data/markers.tsv``).

Order of resolution for each channel: a user mapping (``channel,marker`` CSV) → exact canonical name → alias
(case-, space-, hyphen- and underscore-insensitive: PD-L1 = PDL1 = pd_l1) → the target that an IMC panel gives
for the channel's metal tag (``Pr141`` → ``Cytokeratin 5``) → the channel name stripped of IMC decorations
(``Laminin_681((851))Sm147`` → ``Laminin``). Anything else is an error that lists the closest vocabulary names.
"""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from hestdata.errors import InputError

_METAL = re.compile(r"([A-Z][a-z]?)(\d{2,3})$|^(\d{2,3})([A-Z][a-z]?)$")


@dataclass(frozen=True)
class Marker:
    marker_id: int
    name: str
    nuclear: bool


def _key(s: str) -> str:
    return re.sub(r"[\s\-_./]+", "", s.strip().upper())


@cache
def vocabulary() -> tuple[dict[str, Marker], dict[str, Marker]]:
    """(canonical name -> Marker, normalised alias/name key -> Marker)."""
    text = resources.files("hestdata").joinpath("data/markers.tsv").read_text()
    by_name: dict[str, Marker] = {}
    by_key: dict[str, Marker] = {}
    for row in csv.DictReader(text.splitlines(), delimiter="\t"):
        m = Marker(int(row["marker_id"]), row["name"], row["nuclear"] == "1")
        by_name[m.name] = m
        for a in [m.name, *(x for x in row["aliases"].split("|") if x)]:
            by_key.setdefault(_key(a), m)
    return by_name, by_key


def metal_tag(text: str) -> str | None:
    """The metal tag in a channel name ('Pr141', '141Pr', 'Cytoker_651((3356))Pr141' → 'Pr141')."""
    tail = re.split(r"[_()\s]+", text.strip())
    for tok in reversed([t for t in tail if t]):
        m = _METAL.search(tok)
        if m:
            return f"{m.group(1)}{m.group(2)}" if m.group(1) else f"{m.group(4)}{m.group(3)}"
    return None


def read_panel(path: str | Path) -> dict[str, str]:
    """IMC panel CSV (``Metal Tag``, ``Target`` columns, as in steinbock / ImcSegmentationPipeline): metal -> target."""
    import pandas as pd

    p = Path(path)
    try:
        df = pd.read_csv(p)
    except Exception as exc:
        raise InputError(p, f"cannot read panel: {exc}") from exc
    cols = {c.lower().replace(" ", "_"): c for c in df.columns}
    metal = cols.get("metal_tag") or cols.get("channel") or cols.get("metal")
    target = cols.get("target") or cols.get("name") or cols.get("marker")
    if not metal or not target:
        raise InputError(p, f"panel needs 'Metal Tag' and 'Target' columns, has {list(df.columns)}")
    return {str(m).strip(): str(t).strip() for m, t in zip(df[metal], df[target], strict=True) if str(m) != "nan"}


def read_mapping(path: str | Path) -> dict[str, str]:
    """User mapping CSV: ``channel,marker`` rows (header optional) overriding everything else."""
    p = Path(path)
    out = {}
    with open(p) as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or (i == 0 and [c.lower() for c in row[:2]] == ["channel", "marker"]):
                continue
            if len(row) < 2:
                raise InputError(p, f"line {i + 1}: expected 'channel,marker'")
            out[row[0].strip()] = row[1].strip()
    return out


def resolve(name: str, *, panel: dict[str, str] | None = None, mapping: dict[str, str] | None = None,
            where: str | Path | None = None) -> Marker:
    """The canonical marker of one channel name (see the module docstring for the order)."""
    by_name, by_key = vocabulary()
    candidates = []
    if mapping and name in mapping:
        candidates.append(mapping[name])
    candidates.append(name)
    metal = metal_tag(name)
    if panel and metal and metal in panel:
        candidates.append(panel[metal])
    stripped = re.split(r"_\d|\(\(", name)[0]
    if stripped != name:
        candidates.append(stripped)
    for c in candidates:
        if c.strip().upper() in by_name:
            return by_name[c.strip().upper()]
        if _key(c) in by_key:
            return by_key[_key(c)]
    close = difflib.get_close_matches(_key(stripped), list(by_key), n=4, cutoff=0.6)
    names = sorted({by_key[k].name for k in close})
    hint = (f"closest: {', '.join(names)}; " if names else "") + \
        "name it in a 'channel,marker' CSV passed as --mapping (mapping= in Python)"
    raise InputError(where, f"unknown marker {name!r}" + (f" (metal {metal})" if metal else ""), hint)


DROP = {"-", "drop", "none", ""}


def resolve_all(names: list[str], **kw: object) -> list[Marker | None]:
    """Markers of every channel; ``None`` for channels the mapping drops (value ``-``/``drop``)."""
    mapping = kw.get("mapping") or {}
    out = [None if str(mapping.get(n, "x")).strip().lower() in DROP else resolve(n, **kw)  # type: ignore[arg-type]
           for n in names]
    seen: dict[str, str] = {}
    for n, m in zip(names, out, strict=True):
        if m is None:
            continue
        if m.name in seen:
            raise InputError(kw.get("where"), f"channels {seen[m.name]!r} and {n!r} both map to {m.name}")  # type: ignore[arg-type]
        seen[m.name] = n
    return out


def marker_stats(image: np.ndarray) -> list[dict[str, float]]:
    """Per channel: the scale to [0, 1] (dtype max for integers, the channel max for floats) and mean, std,
    p1, p99 of the scaled values."""
    out = []
    for ch in image:
        if np.issubdtype(ch.dtype, np.integer):
            scale = float(np.iinfo(ch.dtype).max)
        else:
            m = float(np.nanmax(ch)) if ch.size else 0.0
            scale = m if m > 0 else 1.0
        v = ch.astype(np.float64) / scale
        out.append({"scale": scale, "mean": float(v.mean()), "std": float(v.std()),
                    "p1": float(np.percentile(v, 1)), "p99": float(np.percentile(v, 99))})
    return out
