"""``hestdata convert <source>``: one command per registered source, built from the source's contract.

The first required input is the positional argument, the other inputs are ``--name`` options, and every field
of the source's options model becomes a flag (``patches`` -> ``--patch``, repeatable). Flags left out take the
model's defaults, so the CLI, cohort files and :func:`hestdata.convert` share one set of defaults and checks.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from hestdata.sources.registry import SLIDE_INPUTS, Source

_COMMON = ("out", "sample_id", "overwrite", "meta", "no_patches")


def _flag(src: Source, name: str) -> str:
    return "--" + src.options.flags.get(name, name).replace("_", "-")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _metavar(name: str, ann: Any) -> str:
    if name in ("patches", "cell_patches"):
        return "GEOMETRY"
    if name.endswith("_um") and typing.get_origin(ann) is tuple:
        return "X,Y" if len(typing.get_args(ann)) == 2 else "A,B,C,D,E,F"
    if name.endswith("_um"):
        return "UM"
    if typing.get_origin(ann) is list:  # repeatable: one value per flag
        return {int: "INTEGER", float: "NUMBER"}.get(typing.get_args(ann)[0], "TEXT")
    return {int: "INTEGER", float: "NUMBER", str: "TEXT"}.get(ann, "")


def _option_param(src: Source, name: str, field: Any) -> inspect.Parameter:
    """A typer option for one options-model field (default None: the model's default applies)."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    base = args[0] if typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1 else ann
    default = field.get_default(call_default_factory=True)
    shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
    help_ = _sentence(field.description or name) + ("" if default in (None, []) else f" (default: {shown})")
    kw: dict[str, Any] = {"help": help_, "show_default": False}
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        choices = enum.Enum(f"{name}_choices", {str(v): str(v) for v in typing.get_args(base)}, type=str)
        typ: Any = choices | None
    elif origin is list:
        typ = list[typing.get_args(base)[0]] | None
        kw["help"] += "; repeatable"
    elif origin is tuple:
        typ = str | None
    elif base is bool:
        typ = bool | None
    else:
        typ = base | None
    mv = _metavar(name, base)
    if mv:
        kw["metavar"] = mv
    flag = _flag(src, name)
    if base is bool:  # both spellings, so an option that defaults to true can be turned off (--no-pseudobulk)
        flag = f"{flag}/--no-{flag[2:]}"
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[typ, typer.Option(flag, **kw)])


def _input_params(src: Source) -> list[inspect.Parameter]:
    req = list(src.inputs)
    params = [inspect.Parameter(req[0], inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=Annotated[Path, typer.Argument(help=_sentence(src.inputs[req[0]]) + ".",
                                                                          metavar=req[0].upper(), show_default=False)])]
    for name in req[1:]:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[
            Path, typer.Option("--" + name.replace("_", "-"), metavar="PATH", help=_sentence(src.inputs[name]) + ".")]))
    slide = {} if src.variant == "images" else {k: v for k, v in SLIDE_INPUTS.items() if k not in src.inputs}
    for name, help_ in {**src.optional_inputs, **slide}.items():  # a collection has no slide-level inputs
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Path | None, typer.Option("--" + name.replace("_", "-"), metavar="PATH", help=_sentence(help_) + ".")]))
    return params


def _common_params(src: Source) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    ids = (Annotated[list[str] | None, typer.Option("--id", metavar="ID", help="Sample id, repeatable (default: every sample the "
                                                                  "input holds).")]
           if src.discover else Annotated[str, typer.Option("--id", metavar="ID", help="Sample id (letters, digits, '.', '_', '-').")])
    params = [
        inspect.Parameter("out", kw, annotation=Annotated[Path, typer.Option(
            "--out", "-o", metavar="ROOT", help="Root folder to write into (created if needed).")]),
        inspect.Parameter("sample_id", kw, default=None if src.discover else inspect.Parameter.empty, annotation=ids),
        inspect.Parameter("overwrite", kw, default=False, annotation=Annotated[bool, typer.Option(
            "--overwrite", help="Replace an existing sample with the same id.")]),
        inspect.Parameter("meta", kw, default=None, annotation=Annotated[list[str] | None, typer.Option(
            "--meta", metavar="FIELD=VALUE", help="Metadata field=value, repeatable (organ=brain).")]),
    ]
    if "patches" in src.options.model_fields and src.variant != "images":  # a collection's items are its patches
        params.append(inspect.Parameter("no_patches", kw, default=False, annotation=Annotated[bool, typer.Option(
            "--no-patches", help="Write no patch arrays.")]))
    return params


def run_convert(src: Source, values: dict[str, Any], echo: Any) -> list[Path]:
    """Read and convert with the CLI's values; returns the written sample paths."""
    from hestdata.cli.common import meta_fields
    from hestdata.convert import convert_source

    inputs = {k: values.pop(k) for k in dict.fromkeys([*src.inputs, *src.optional_inputs, *SLIDE_INPUTS]) if k in values}
    out, sid, overwrite = values.pop("out"), values.pop("sample_id"), values.pop("overwrite")
    fields = meta_fields(values.pop("meta"))
    if values.pop("no_patches", False):
        values["patches"] = []
    opts = src.parse_options({k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items() if v is not None})
    ids = (sid or src.sample_ids(inputs, opts)) if src.discover else [sid]
    return convert_source(src, inputs, ids, out, options=opts, overwrite=overwrite, metadata=fields, on_sample=echo)


def make_command(src: Source, echo: Any) -> Any:
    """A typer command function for ``src`` (its signature is built from the source's contract)."""
    params = _input_params(src) + _common_params(src)
    params += [_option_param(src, n, f) for n, f in src.options.model_fields.items() if n not in _COMMON]

    def command(*args: Any, **kwargs: Any) -> None:
        bound = inspect.Signature(params).bind(*args, **kwargs)
        run_convert(src, dict(bound.arguments), echo)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = src.summary[:1].upper() + src.summary[1:] + "."
    command.__name__ = f"convert_{src.name}"
    return command
