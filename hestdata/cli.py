"""The ``hestdata`` command: convert, info, validate, demo.

Every command exits non-zero with a one-line cause on bad input (any :class:`HestdataError`), and long steps
show a progress bar. Heavy imports happen inside the commands, so ``hestdata --help`` is instant.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Curate spatial-omics / pathology samples into SpatialData/Zarr stores.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
convert_app = typer.Typer(help="Convert one sample into ROOT/samples/<ID>.zarr.", no_args_is_help=True)
app.add_typer(convert_app, name="convert")
bench_app = typer.Typer(help="Benchmark image encoders on standardized tasks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn any HestdataError into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hestdata.errors import HestdataError, SchemaError

        try:
            return fn(*args, **kwargs)
        except SchemaError as exc:
            _fail(str(exc))
        except HestdataError as exc:
            _fail(str(exc).splitlines()[0])
        except ValueError as exc:
            _fail(str(exc))

    return wrapper


Out = Annotated[Path, typer.Option("--out", "-o", help="Root folder to write into (created if needed).")]
SampleId = Annotated[str, typer.Option("--id", help="Sample id (letters, digits, '.', '_', '-').")]
PixelSize = Annotated[float | None, typer.Option("--pixel-size-um", help="Override the full-resolution µm/px.")]
Patch = Annotated[list[str] | None, typer.Option("--patch", help="Patch geometry, repeatable (default 224px_0.5um).")]
NoPatches = Annotated[bool, typer.Option("--no-patches", help="Write expression, spots and image only.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing sample with the same id.")]
MinTissue = Annotated[float, typer.Option("--min-tissue-fraction", help="Skip (and count) patches with less tissue.")]
Meta = Annotated[list[str] | None, typer.Option("--meta", help="Metadata field=value, repeatable (organ=brain).")]


def _meta_fields(meta: list[str] | None) -> dict[str, Any]:
    """``--meta field=value`` options as a dict (``synthetic`` as a boolean)."""
    fields: dict[str, Any] = {}
    for item in meta or []:
        if "=" not in item:
            _fail(f"--meta expects field=value, got {item!r}")
        k, v = item.split("=", 1)
        fields[k.strip()] = v.strip()
    if "synthetic" in fields:
        fields["synthetic"] = fields["synthetic"].lower() in ("1", "true", "yes")
    return fields


def _common(sample: Any, out: Path, patch: list[str] | None, no_patches: bool, overwrite: bool,
            min_tissue: float, meta: list[str] | None) -> None:
    from hestdata.convert import convert
    from hestdata.units import DEFAULT_PATCH

    fields = _meta_fields(meta)
    geometries = [] if no_patches else (patch or [DEFAULT_PATCH.name])
    path = convert(sample, out, patches=geometries, overwrite=overwrite, min_tissue_fraction=min_tissue,
                   metadata=fields, progress=sys.stderr.isatty())
    _print_summary(path)


def _print_summary(path: Path) -> None:
    from hestdata.store.sample import read_metadata

    m = read_metadata(path)
    patches = ", ".join(f"{k}: {v.n_patches}" for k, v in m.qc.patches.items()) or "none"
    typer.echo(f"wrote {path}  [{m.technology}, {m.qc.n_obs} spots x {m.qc.n_genes} genes, "
               f"{m.pixel_size_um.value:.4f} µm/px ({m.pixel_size_um.trusted}), patches {patches}]")
    for w in m.qc.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)


@convert_app.command("visium")
@handle_errors
def convert_visium(outs: Annotated[Path, typer.Argument(help="Space Ranger outs/ folder.")], out: Out,
                   sample_id: SampleId,
                   image: Annotated[Path | None, typer.Option(help="Full-resolution H&E (TIFF/JPEG/PNG).")] = None,
                   pixel_size_um: PixelSize = None, patch: Patch = None, no_patches: NoPatches = False,
                   overwrite: Overwrite = False, min_tissue_fraction: MinTissue = 0.15, meta: Meta = None) -> None:
    """Convert a 10x Visium outs/ folder."""
    from hestdata.sources.visium import read_visium

    s = read_visium(outs, sample_id=sample_id, image=image, pixel_size_um=pixel_size_um)
    _common(s, out, patch, no_patches, overwrite, min_tissue_fraction, meta)


@convert_app.command("visium-hd")
@handle_errors
def convert_visium_hd(path: Annotated[Path, typer.Argument(help="outs/, binned_outputs/ or square_XXXum/ folder.")],
                      out: Out, sample_id: SampleId,
                      bin_size_um: Annotated[int | None, typer.Option(help="Bin size when several exist.")] = None,
                      image: Annotated[Path | None, typer.Option(help="Full-resolution H&E.")] = None,
                      pixel_size_um: PixelSize = None, patch: Patch = None, no_patches: NoPatches = False,
                      overwrite: Overwrite = False, min_tissue_fraction: MinTissue = 0.15, meta: Meta = None) -> None:
    """Convert 10x Visium HD bins at one bin size."""
    from hestdata.sources.visium_hd import read_visium_hd

    s = read_visium_hd(path, sample_id=sample_id, bin_size_um=bin_size_um, image=image, pixel_size_um=pixel_size_um)
    _common(s, out, patch, no_patches, overwrite, min_tissue_fraction, meta)


@convert_app.command("st")
@handle_errors
def convert_st(counts: Annotated[Path, typer.Argument(help="Counts TSV (spots x genes, rows '{x}x{y}').")],
               spots: Annotated[Path, typer.Option(help="Spot file with pixel_x/pixel_y.")],
               image: Annotated[Path, typer.Option(help="Full-resolution H&E.")], out: Out, sample_id: SampleId,
               pixel_size_um: PixelSize = None, patch: Patch = None, no_patches: NoPatches = False,
               overwrite: Overwrite = False, min_tissue_fraction: MinTissue = 0.15, meta: Meta = None) -> None:
    """Convert one legacy Spatial Transcriptomics section."""
    from hestdata.sources.st_legacy import read_st

    s = read_st(counts, spots=spots, image=image, sample_id=sample_id, pixel_size_um=pixel_size_um)
    _common(s, out, patch, no_patches, overwrite, min_tissue_fraction, meta)


@convert_app.command("anndata")
@handle_errors
def convert_anndata(h5ad: Annotated[Path, typer.Argument(help="AnnData with obsm['spatial'] in image pixels.")],
                    image: Annotated[Path, typer.Option(help="The image obsm['spatial'] refers to.")],
                    out: Out, sample_id: SampleId,
                    technology: Annotated[str, typer.Option(help="visium or st (spot geometry).")] = "visium",
                    library_id: Annotated[str | None, typer.Option(help="Key in uns['spatial'].")] = None,
                    pixel_size_um: PixelSize = None, patch: Patch = None, no_patches: NoPatches = False,
                    overwrite: Overwrite = False, min_tissue_fraction: MinTissue = 0.15, meta: Meta = None) -> None:
    """Convert an AnnData + image pair (scanpy/squidpy convention, HEST-1k st/<id>.h5ad)."""
    from hestdata.sources.anndata_image import read_anndata

    s = read_anndata(h5ad, image=image, sample_id=sample_id, technology=technology, library_id=library_id,
                     pixel_size_um=pixel_size_um)
    _common(s, out, patch, no_patches, overwrite, min_tissue_fraction, meta)


@convert_app.command("xenium")
@handle_errors
def convert_xenium_cmd(folder: Annotated[Path, typer.Argument(help="Xenium output folder.")], out: Out,
                       sample_id: SampleId, pixel_size_um: PixelSize = None,
                       image_origin_um: Annotated[str | None, typer.Option(help="Image top-left in µm, 'X,Y' (cropped images).")] = None,
                       pseudospot_um: Annotated[list[float] | None, typer.Option(help="Pseudo-spot diameter in µm, repeatable (default 55).")] = None,
                       grid: Annotated[str, typer.Option(help="Pseudo-spot grid: square (tiling) or hex (Visium-like).")] = "square",
                       min_qv: Annotated[float, typer.Option(help="Minimum transcript quality counted in pseudo-spots.")] = 20.0,
                       he_image: Annotated[Path | None, typer.Option(help="Registered H&E image.")] = None,
                       he_alignment: Annotated[Path | None, typer.Option(help="10x alignment CSV (H&E px -> morphology px).")] = None,
                       he_affine_um: Annotated[str | None, typer.Option(help="H&E px -> µm affine 'a,b,c,d,e,f'.")] = None,
                       patch: Patch = None, overwrite: Overwrite = False, meta: Meta = None) -> None:
    """Convert a 10x Xenium run: cells, transcripts, boundaries, DAPI image, pseudo-spot tables."""
    from hestdata.convert_xenium import convert_xenium
    from hestdata.sources.xenium import parse_origin, read_xenium

    fields = _meta_fields(meta)
    from hestdata.sources.xenium import parse_affine

    xs = read_xenium(folder, sample_id=sample_id, pixel_size_um=pixel_size_um, image_origin_um=parse_origin(image_origin_um),
                     he_image=he_image, he_alignment=he_alignment,
                     he_affine_um=parse_affine(he_affine_um) if he_affine_um else None)
    path = convert_xenium(xs, out, pseudospot_um=tuple(pseudospot_um or (55.0,)), grid=grid, min_qv=min_qv,
                          overwrite=overwrite, metadata=fields, patches=patch or ["224px_0.5um"])
    from hestdata.store.sample import read_metadata

    m = read_metadata(path)
    typer.echo(f"wrote {path}  [xenium, {m.qc.n_obs} cells x {m.qc.n_genes} genes, {m.qc.n_transcripts} transcripts, "
               f"pseudo-spots {m.qc.tables}, patches {', '.join(m.qc.patches) or 'none (no H&E)'}]")


@convert_app.command("multiplex")
@handle_errors
def convert_multiplex_cmd(image: Annotated[Path, typer.Argument(help="OME-TIFF, QPTIFF or TIFF.")], out: Out,
                          sample_id: SampleId,
                          panel: Annotated[Path | None, typer.Option(help="IMC panel CSV (Metal Tag, Target).")] = None,
                          markers_csv: Annotated[Path | None, typer.Option(help="MCMICRO markers.csv (marker_name).")] = None,
                          mapping: Annotated[Path | None, typer.Option(help="channel,marker CSV; '-' drops a channel.")] = None,
                          technology: Annotated[str | None, typer.Option(help="imc or multiplex (default: imc with --panel).")] = None,
                          pixel_size_um: PixelSize = None, patch: Patch = None, overwrite: Overwrite = False,
                          meta: Meta = None) -> None:
    """Convert a multiplex immunofluorescence / IMC image (channels mapped to canonical markers)."""
    from hestdata.convert_multiplex import convert_multiplex
    from hestdata.sources.multiplex import read_multiplex

    fields = _meta_fields(meta)
    ms = read_multiplex(image, sample_id=sample_id, panel=panel, markers_csv=markers_csv, mapping=mapping,
                        pixel_size_um=pixel_size_um, technology=technology)
    path = convert_multiplex(ms, out, patches=patch or [], overwrite=overwrite, metadata=fields)
    from hestdata.store.sample import read_metadata

    m = read_metadata(path)
    typer.echo(f"wrote {path}  [{m.technology}, {len(m.markers)} markers: {', '.join(x.name for x in m.markers)}; "
               f"dropped {m.dropped_channels or 'none'}; patches {', '.join(m.qc.patches) or 'none'}]")


@convert_app.command("wsi")
@handle_errors
def convert_wsi_cmd(slide: Annotated[Path, typer.Argument(help="SVS, NDPI, MRXS, SCN, tiled TIFF, DICOM, OME-TIFF.")],
                    out: Out, sample_id: SampleId, pixel_size_um: PixelSize = None,
                    tile_px: Annotated[int, typer.Option(help="Tile size in pixels.")] = 224,
                    tile_um: Annotated[float, typer.Option(help="Tile size in µm (STAMP: 256; TITAN: 512 px at 20x).")] = 256.0,
                    min_tissue_fraction: Annotated[float, typer.Option(help="Keep tiles with at least this tissue.")] = 0.5,
                    overwrite: Overwrite = False, meta: Meta = None) -> None:
    """Convert a whole-slide image: pyramid (read strip by strip), tissue polygons, tissue tiles."""
    from hestdata.convert_wsi import convert_wsi
    from hestdata.sources.wsi import open_wsi
    from hestdata.units import PatchGeometry

    fields = _meta_fields(meta)
    geom = PatchGeometry(tile_px, tile_um / tile_px)
    path = convert_wsi(open_wsi(slide, pixel_size_um=pixel_size_um), out, sample_id, patches=[geom],
                       min_tissue_fraction=min_tissue_fraction, overwrite=overwrite, metadata=fields)
    from hestdata.store.sample import read_metadata

    m = read_metadata(path)
    q = m.qc.patches[geom.name]
    typer.echo(f"wrote {path}  [wsi, {m.image.width_px}x{m.image.height_px} px at {m.pixel_size_um.value:g} µm/px, "
               f"{q.n_patches} tiles {geom.name} ({q.n_skipped_low_tissue} low tissue, {q.n_skipped_background} "
               f"background skipped)]")


@convert_app.command("hest1k")
@handle_errors
def convert_hest1k(hest_dir: Annotated[Path, typer.Argument(help="A HEST-1k download (st/, wsis/, metadata/ …).")],
                   out: Out,
                   hest_id: Annotated[list[str] | None, typer.Option("--id", help="HEST sample id, repeatable (default: all in st/).")] = None,
                   patches_from: Annotated[str, typer.Option(help="'recut' (ours) or 'hest' (import patches/<id>.h5).")] = "recut",
                   pixel_size_um: PixelSize = None, patch: Patch = None, no_patches: NoPatches = False,
                   overwrite: Overwrite = False, min_tissue_fraction: MinTissue = 0.15, meta: Meta = None) -> None:
    """Import HEST-1k samples into ROOT (one command for a whole download)."""
    from hestdata.sources.hest1k import read_hest1k

    ids = hest_id or sorted(p.stem for p in (hest_dir / "st").glob("*.h5ad"))
    if not ids:
        _fail(f"{hest_dir}: no st/<id>.h5ad found")
    for i in ids:
        s = read_hest1k(hest_dir, i, pixel_size_um=pixel_size_um, patch_source=patches_from)
        _common(s, out, patch, no_patches, overwrite, min_tissue_fraction, meta)


@app.command()
@handle_errors
def info(path: Annotated[Path, typer.Argument(help="A root or a samples/<id>.zarr folder.")]) -> None:
    """Summarise a root (its catalog) or one sample (its metadata)."""
    from hestdata.store import layout as L

    if path.name.endswith(L.SAMPLE_SUFFIX):
        import json

        from hestdata.store.sample import read_metadata

        typer.echo(json.dumps(read_metadata(path).model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    import polars as pl

    from hestdata.store.catalog import open_catalog

    cat = open_catalog(path)
    cols = ["id", "technology", "species", "n_obs", "n_genes", "pixel_size_um", "n_patches", "synthetic", "bytes"]
    with pl.Config(tbl_rows=100, tbl_cols=len(cols), tbl_width_chars=140):
        typer.echo(f"{path}: {cat.height} sample(s)")
        if cat.height:
            typer.echo(cat.select(cols))


@app.command()
@handle_errors
def validate(path: Annotated[Path, typer.Argument(help="A root or a samples/<id>.zarr folder.")],
             checksums: Annotated[bool, typer.Option(help="Re-hash files against the manifest.")] = True) -> None:
    """Check a root or sample against the store specification; list every violation."""
    from hestdata.store.validate import validate as run

    rep = run(path, checksums=checksums)
    if rep.ok:
        typer.echo(f"{path}: valid ({rep.kind}, {rep.n_samples} sample(s))")
        return
    for v in rep.violations:
        typer.echo(f"  - {v}", err=True)
    _fail(f"{path}: {len(rep.violations)} violation(s)")


@app.command()
@handle_errors
def download(source: Annotated[str, typer.Argument(help="Root URL, path, or configured remote name.")],
             dest: Annotated[Path, typer.Argument(help="Local root to create or update.")],
             sample_id: Annotated[list[str] | None, typer.Option("--id", help="Sample id, repeatable.")] = None,
             where: Annotated[str | None, typer.Option(help="SQL filter on the catalog, e.g. \"organ = 'breast'\".")] = None,
             only: Annotated[str | None, typer.Option(help="Elements: image,shapes,expression,patches,points.")] = None,
             patch: Annotated[list[str] | None, typer.Option(help="Patch array name, repeatable.")] = None,
             workers: Annotated[int, typer.Option(help="Parallel transfers.")] = 8) -> None:
    """Download a subset of a root (by id / catalog filter / element), resumable and checksum-verified."""
    from hestdata.remote.download import download as run

    expr = None
    if where:
        import polars as pl

        expr = pl.sql_expr(where)
    elements = [e.strip() for e in only.split(",")] if only else None
    root = run(source, dest, ids=sample_id or None, where=expr, elements=elements, patches=patch or None,
               workers=workers)
    from hestdata.store.catalog import open_catalog

    typer.echo(f"{root}: {open_catalog(root).height} sample(s) present")


@app.command()
@handle_errors
def register(cohort: Annotated[Path, typer.Argument(help="Cohort descriptor (YAML).")],
             root: Annotated[Path, typer.Option(help="Root to register into.")],
             scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address (default: a LocalCluster).")] = None,
             workers: Annotated[int, typer.Option(help="LocalCluster worker processes.")] = 2) -> None:
    """Validate a cohort and convert its samples as Dask tasks; publish them once; report per sample."""
    from hestdata.catalog.register import register_cohort

    rep = register_cohort(cohort, root, scheduler=scheduler, n_workers=workers, echo=typer.echo)
    typer.echo(rep.summary())
    for o in rep.outcomes:
        if o.status == "failed":
            typer.secho(f"failed: {o.id}: {o.reason}", fg=typer.colors.RED, err=True)
    if not rep.ok:
        raise typer.Exit(1)


@app.command()
@handle_errors
def push(root: Annotated[Path, typer.Argument(help="Local root.")],
         url: Annotated[str, typer.Argument(help="Destination URL (s3://…, file://…, a remote name).")],
         workers: Annotated[int, typer.Option(help="Parallel uploads.")] = 8) -> None:
    """Publish a root: changed files first, manifest last."""
    from hestdata.remote.push import push as run

    rep = run(root, url, workers=workers)
    typer.echo(f"pushed {len(rep.uploaded)} file(s) ({rep.bytes_uploaded:,} bytes), {rep.unchanged} unchanged")


@app.command()
@handle_errors
def demo(data: Annotated[Path | None, typer.Option(help="A real Visium outs/ folder instead of the built-in sample.")] = None,
         image: Annotated[Path | None, typer.Option(help="Full-resolution image for --data.")] = None,
         out: Annotated[Path, typer.Option(help="Where to build the demo root.")] = Path("hestdata-demo")) -> None:
    """Build a small root offline, print its catalog and write overview.png."""
    from hestdata.demo import run_demo

    run_demo(out, data=data, image=image, echo=typer.echo)


@bench_app.command("run")
@handle_errors
def bench_run(root: Annotated[str, typer.Option(help="Root (path or URL).")],
              encoder: Annotated[list[str], typer.Option(help="Encoder name, repeatable (see 'bench list').")],
              task: Annotated[list[str], typer.Option(help="Task name or YAML path, repeatable.")],
              checkpoint: Annotated[Path | None, typer.Option(help="Local weights for a timm/published encoder.")] = None,
              device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 … (default: cuda if available).")] = None,
              batch_size: Annotated[int, typer.Option(help="Patches per batch.")] = 64,
              workers: Annotated[int, typer.Option(help="Loader worker processes.")] = 0,
              patch: Annotated[str | None, typer.Option(help="Override the task's patch array.")] = None) -> None:
    """Embed (cached) and evaluate; rows are appended to ROOT/leaderboard.parquet."""
    from hestdata.bench.encoders import load_encoder
    from hestdata.bench.runner import PRIMARY, load_task, run_benchmark

    for e in encoder:
        enc = load_encoder(e, checkpoint=checkpoint)
        for t in task:
            typer.echo(f"{enc.name} on {t}:")
            rows = run_benchmark(root, enc, t, batch_size=batch_size, num_workers=workers, device=device,
                                 patch=patch, echo=typer.echo)
            primary = PRIMARY[load_task(t).type]
            for r in rows:
                mark = "*" if r["metric"] == primary else " "
                typer.echo(f" {mark} {r['metric']}: {r['mean']:.4f} ± {r['std']:.4f}  folds "
                           + ", ".join(f"{f}={v:.4f}" for f, v in zip(r["folds"], r["fold_values"], strict=True)))


@bench_app.command("embed")
@handle_errors
def bench_embed(root: Annotated[Path, typer.Option(help="Root.")],
                encoder: Annotated[str, typer.Option(help="Encoder name.")],
                patch: Annotated[str, typer.Option(help="Patch array.")] = "224px_1.14286um",
                checkpoint: Annotated[Path | None, typer.Option(help="Local weights.")] = None,
                batch_size: Annotated[int, typer.Option(help="Patches per batch.")] = 64,
                workers: Annotated[int, typer.Option(help="Loader workers.")] = 0) -> None:
    """Compute (and cache) per-patch features of every sample with the patch array."""
    from hestdata.bench.embed import embed_samples
    from hestdata.bench.encoders import load_encoder
    from hestdata.store.catalog import open_catalog

    cat = open_catalog(root)
    ids = [i for i, a in zip(cat["id"].to_list(), cat["patch_arrays"].to_list(), strict=True) if patch in a]
    enc = load_encoder(encoder, checkpoint=checkpoint)
    out = embed_samples(root, enc, ids, patch=patch, batch_size=batch_size, num_workers=workers,
                        on_sample=lambda s, hit: typer.echo(f"  {s}: {'cached' if hit else 'embedded'}"))
    typer.echo(f"{len(out)} sample(s), {sum(len(v) for v in out.values())} patches, encoder {enc.name}")


@bench_app.command("list")
def bench_list() -> None:
    """Encoders and tasks this installation knows."""
    from hestdata.bench.encoders import available
    from hestdata.bench.runner import builtin_tasks, load_task

    typer.echo("encoders:")
    for k, v in sorted(available().items()):
        typer.echo(f"  {k:<16} {v}")
    typer.echo("tasks:")
    for name in sorted(builtin_tasks()):
        t = load_task(name)
        typer.echo(f"  {name:<20} {t.type:<15} samples: {t.samples}; folds by {t.group_by}")


@bench_app.command("leaderboard")
@handle_errors
def bench_leaderboard(root: Annotated[Path, typer.Argument(help="Root with a leaderboard.parquet.")],
                      html_out: Annotated[Path | None, typer.Option("--html", help="Write the HTML page here.")] = None) -> None:
    """Render the leaderboard as Markdown (stdout) and a self-contained HTML page."""
    from hestdata.bench.leaderboard import read, render_html, render_markdown
    from hestdata.store.atomic import atomic_write_bytes

    df = read(root)
    typer.echo(render_markdown(df))
    target = html_out or (root / "leaderboard.html")
    atomic_write_bytes(target, render_html(df).encode())
    typer.echo(f"html: {target}")


@app.command("export")
@handle_errors
def export_cmd(layout: Annotated[str, typer.Argument(help="stamp or trident.")],
               root: Annotated[Path, typer.Argument(help="Root.")],
               dest: Annotated[Path, typer.Argument(help="Output folder.")],
               encoder: Annotated[str, typer.Option(help="Encoder name.")],
               patch: Annotated[str, typer.Option(help="Patch array.")] = "224px_1.14286um",
               checkpoint: Annotated[Path | None, typer.Option(help="Local weights.")] = None) -> None:
    """Write per-slide patch features in the STAMP or TRIDENT HDF5 layout."""
    from hestdata.bench.encoders import load_encoder
    from hestdata.bench.export import export_features

    files = export_features(root, load_encoder(encoder, checkpoint=checkpoint), dest, layout=layout, patch=patch)
    typer.echo(f"wrote {len(files)} file(s) under {dest}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
