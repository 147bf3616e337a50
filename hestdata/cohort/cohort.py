"""Cohort descriptor (YAML): name, licence, citation, defaults, and samples with their inputs.

```yaml
name: her2st
license: "CC BY 4.0"
citation: "Andersson et al., Nat Commun 12, 6012 (2021)"
defaults: {technology: st, organ: breast, species: Homo sapiens, patches: ["224px_0.5um"]}
samples:
  - id: her2st_B4
    inputs: {counts: ST-cnts/B4.tsv.gz, spots: ST-spotfiles/B4_selection.tsv, image: ST-imgs/B/B4/BT10737_D2_HE.jpg}
    metadata: {patient: B}
```

Relative input paths are resolved against the YAML file's folder. ``hestdata/schemas/cohort.schema.json`` is
generated from these models (``python -m hestdata.cohort.cohort``) and shipped.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hestdata.errors import InputError, SchemaError
from hestdata.metadata import SAMPLE_ID_PATTERN


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Defaults(_M):
    """Values every sample inherits unless it sets its own."""

    technology: str | None = Field(default=None, description="source name (see `hestdata.list_sources()`)")
    organ: str | None = None
    species: Literal["Homo sapiens", "Mus musculus", "other", "unknown"] | None = None
    disease_state: str | None = None
    oncotree_code: str | None = None
    preservation: Literal["FFPE", "fresh frozen", "unknown"] | None = None
    panel: str | None = None
    patches: list[str] | None = Field(default=None, description="patch geometries (default: the source's)")
    min_tissue_fraction: float | None = Field(default=None, ge=0, le=1)
    pixel_size_um: float | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="source options for every sample whose source takes them")


class SampleSpec(_M):
    """One sample: its id, technology, input files and descriptive metadata."""

    id: str = Field(pattern=SAMPLE_ID_PATTERN)
    technology: str | None = Field(default=None, description="source name (see `hestdata.list_sources()`)")
    inputs: dict[str, str]
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="source options, checked against the source's options model")
    metadata: dict[str, str | bool | None] = Field(default_factory=dict)
    patches: list[str] | None = None
    pixel_size_um: float | None = Field(default=None, gt=0)


class Cohort(_M):
    """A cohort to register."""

    name: str = Field(pattern=SAMPLE_ID_PATTERN)
    license: str
    citation: str | None = None
    source_url: str | None = None
    description: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    samples: list[SampleSpec] = Field(min_length=1)


def generated_schema() -> dict[str, Any]:
    s = Cohort.model_json_schema()
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["$id"] = "https://hestdata.org/schemas/cohort.schema.json"
    return s


def load_cohort(path: str | Path, *, allow_outside: bool = False) -> tuple[Cohort, Path]:
    """Parse and validate a cohort YAML; every violation (schema, sources, inputs, options) is reported at once,
    before anything is converted. Inputs must lie under the YAML's folder unless ``allow_outside``.
    Returns (cohort, base folder)."""
    import jsonschema
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "cohort file not found")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InputError(p, f"invalid YAML: {exc}") from exc
    schema = json.loads(resources.files("hestdata").joinpath("schemas/cohort.schema.json").read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(map(str, e.path)))
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
    if not problems:
        cohort = Cohort.model_validate(doc)
        problems += _sample_problems(cohort, p.parent.resolve(), allow_outside)
    if problems:
        raise SchemaError(p, problems)
    return cohort, p.parent.resolve()


def sample_options(cohort: Cohort, s: SampleSpec, source: Any) -> dict[str, Any]:
    """A sample's options: cohort defaults its source takes, then the sample's own (which always apply)."""
    d = cohort.defaults
    fields = source.options.model_fields
    own = set(s.options) | {source.options.aliases[k] for k in s.options if k in source.options.aliases}
    merged = {k: v for k, v in d.options.items() if k in fields and k not in own}
    for k in ("patches", "min_tissue_fraction", "pixel_size_um"):
        if getattr(d, k) is not None and k in fields and k not in own:
            merged[k] = getattr(d, k)
    merged.update(s.options)
    if s.patches is not None:
        merged["patches"] = s.patches
    if s.pixel_size_um is not None:
        merged["pixel_size_um"] = s.pixel_size_um
    return merged


def _sample_problems(cohort: Cohort, base: Path, allow_outside: bool) -> list[str]:
    """Unknown sources, missing/unknown inputs, unknown or ill-typed options, duplicate ids."""
    from hestdata.sources.registry import get_source

    problems: list[str] = []
    seen: set[str] = set()
    used: set[str] = set()
    for i, s in enumerate(cohort.samples):
        at = f"samples/{i} ({s.id})"
        if s.id in seen:
            problems.append(f"samples/{i}/id: duplicate sample id {s.id!r}")
        seen.add(s.id)
        for k, v in s.inputs.items():
            resolved = (base / v).resolve()
            if not allow_outside and resolved != base and base not in resolved.parents:
                problems.append(f"{at}: input {k} ({v}) lies outside the cohort folder {base} "
                                "(pass --allow-outside-inputs to allow it)")
            elif not resolved.exists():
                problems.append(f"{at}: input {k} not found: {base / v}")
        tech = s.technology or cohort.defaults.technology
        if tech is None:
            problems.append(f"samples/{i}: no technology (set it on the sample or in defaults)")
            continue
        try:
            src = get_source(tech)
            src.check_inputs(s.inputs)
            src.parse_options(sample_options(cohort, s, src))
        except InputError as exc:
            problems.append(f"{at}: {exc.reason}" + (f" ({exc.hint})" if exc.hint else ""))
            continue
        used.update(src.options.model_fields)
    unknown = sorted(set(cohort.defaults.options) - used)
    if unknown and used:
        problems.append(f"defaults/options: {unknown} taken by no source of this cohort")
    return problems


if __name__ == "__main__":
    target = resources.files("hestdata").joinpath("schemas/cohort.schema.json")
    with resources.as_file(target) as out:
        out.write_text(json.dumps(generated_schema(), indent=2) + "\n")
        print(f"wrote {out}")
