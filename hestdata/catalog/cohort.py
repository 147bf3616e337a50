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
generated from these models (``python -m hestdata.catalog.cohort``) and shipped.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hestdata.errors import InputError, SchemaError

CohortTechnology = Literal["visium", "visium_hd", "st", "anndata", "hest1k", "xenium", "multiplex", "wsi"]
REQUIRED_INPUTS: dict[str, tuple[str, ...]] = {
    "visium": ("outs",), "visium_hd": ("path",), "st": ("counts", "spots", "image"), "anndata": ("h5ad", "image"),
    "hest1k": ("dir",), "xenium": ("dir",), "multiplex": ("image",), "wsi": ("slide",),
}
OPTIONAL_INPUTS: dict[str, tuple[str, ...]] = {
    "visium": ("image",), "visium_hd": ("image",), "st": (), "anndata": (), "hest1k": (),
    "xenium": ("he_image", "he_alignment"), "multiplex": ("panel", "markers_csv", "mapping"), "wsi": (),
}


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Defaults(_M):
    """Values every sample inherits unless it sets its own."""

    technology: CohortTechnology | None = None
    organ: str | None = None
    species: Literal["Homo sapiens", "Mus musculus", "other", "unknown"] | None = None
    disease_state: str | None = None
    oncotree_code: str | None = None
    preservation: Literal["FFPE", "fresh frozen", "unknown"] | None = None
    panel: str | None = None
    patches: list[str] = Field(default_factory=lambda: ["224px_0.5um"])
    min_tissue_fraction: float = Field(default=0.15, ge=0, le=1)
    pixel_size_um: float | None = Field(default=None, gt=0)


class SampleSpec(_M):
    """One sample: its id, technology, input files and descriptive metadata."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    technology: CohortTechnology | None = None
    inputs: dict[str, str]
    options: dict[str, str | int | float | bool] = Field(default_factory=dict,
                                                          description="reader options, e.g. bin_size_um, library_id")
    metadata: dict[str, str | bool | None] = Field(default_factory=dict)
    patches: list[str] | None = None
    pixel_size_um: float | None = Field(default=None, gt=0)


class Cohort(_M):
    """A cohort to register."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
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


def load_cohort(path: str | Path) -> tuple[Cohort, Path]:
    """Parse and validate a cohort YAML; every violation is reported at once. Returns (cohort, base folder)."""
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
        seen: set[str] = set()
        for i, s in enumerate(cohort.samples):
            if s.id in seen:
                problems.append(f"samples/{i}/id: duplicate sample id {s.id!r}")
            seen.add(s.id)
            tech = s.technology or cohort.defaults.technology
            if tech is None:
                problems.append(f"samples/{i}: no technology (set it on the sample or in defaults)")
                continue
            need = set(REQUIRED_INPUTS[tech])
            allowed = need | set(OPTIONAL_INPUTS[tech])
            if need - set(s.inputs):
                problems.append(f"samples/{i} ({s.id}): {tech} needs input(s) {sorted(need - set(s.inputs))}")
            if set(s.inputs) - allowed:
                problems.append(f"samples/{i} ({s.id}): unknown input(s) {sorted(set(s.inputs) - allowed)} for {tech}")
            for k, v in s.inputs.items():
                if not (p.parent / v).exists():
                    problems.append(f"samples/{i} ({s.id}): input {k} not found: {p.parent / v}")
    if problems:
        raise SchemaError(p, problems)
    return cohort, p.parent.resolve()


if __name__ == "__main__":
    target = resources.files("hestdata").joinpath("schemas/cohort.schema.json")
    with resources.as_file(target) as out:
        out.write_text(json.dumps(generated_schema(), indent=2) + "\n")
        print(f"wrote {out}")
