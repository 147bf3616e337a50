"""The ``hestdata`` command: convert, info, validate, demo.

Every command exits non-zero with a one-line cause on bad input (any :class:`HestdataError`), and long steps
show a progress bar. Heavy imports happen inside the commands, so ``hestdata --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hestdata.cli.common import fail as _fail
from hestdata.cli.common import handle_errors
from hestdata.cohort import DEFAULT_TIMEOUT_S
from hestdata.units import DEFAULT_PATCH

app = typer.Typer(help="Curate spatial-omics / pathology samples into SpatialData/Zarr stores.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)  # plain help: readable placeholders, no <bool> on flags
convert_app = typer.Typer(help="Convert one sample into ROOT/samples/<ID>.zarr.", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(convert_app, name="convert")
bench_app = typer.Typer(help="Benchmark image encoders on standardized tasks.", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        from hestdata._version import __version__

        typer.echo(f"hestdata {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                        help="Print the version and exit.")] = None,
          debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error instead of its "
                                                              "one-line summary.")] = False,
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (they are drawn only on a "
                                                                    "terminal anyway).")] = False) -> None:
    """Curate spatial-omics / pathology samples into SpatialData/Zarr stores."""
    import os

    if debug:
        os.environ["HESTDATA_DEBUG"] = "1"
    if quiet:
        from hestdata.io.progress import QUIET_ENV

        os.environ[QUIET_ENV] = "1"


def collection_line(m: Any) -> str:
    """What an image collection sample holds, in a few words (items, images, labels, what was left out)."""
    c = m.qc.collection
    if c is None:
        return f"{m.qc.n_obs} items"
    left = [f"{v} {k.removeprefix('n_').replace('_', ' ')}" for k, v in
            (("n_boxes_degenerate", c.n_boxes_degenerate), ("n_boxes_filtered", c.n_boxes_filtered),
             ("n_images_without_boxes", c.n_images_without_boxes), ("n_items_partial", c.n_items_partial)) if v]
    labels = "; ".join(f"{col}: {len(vals)} values" + (f", {c.n_unlabelled[col]} unlabelled"
                                                        if c.n_unlabelled.get(col) else "")
                       for col, vals in c.labels.items())
    return (f"{c.n_items} {c.kind} from {c.n_images} image(s)" + (f"; {labels}" if labels else "")
            + (f"; {', '.join(left)}" if left else ""))


def _print_summary(path: Path) -> None:
    """One line per converted sample, then its warnings (a variant's own counts)."""
    from hestdata.store import layout as L
    from hestdata.store.sample import read_metadata

    m = read_metadata(path)
    variant = L.variant_of(m)
    patches = ", ".join(f"{k}: {v.n_patches}" for k, v in m.qc.patches.items()) or "none"
    what = {"spots": f"{m.qc.n_obs} spots x {m.qc.n_genes} genes",
            "cells": f"{m.qc.n_obs} cells x {m.qc.n_genes} genes, {m.qc.n_transcripts} transcripts, "
                     f"pseudo-spots {m.qc.tables}",
            "channels": f"{len(m.markers)} markers: {', '.join(x.name for x in m.markers)}; "
                        f"dropped {m.dropped_channels or 'none'}",
            "slide": f"{m.image.width_px}x{m.image.height_px} px" if m.image else "no image",
            "images": collection_line(m)}[variant]
    ps = m.pixel_size_um
    size = f"{ps.value:.4f} µm/px ({ps.trusted})" if ps is not None else "pixel size unknown"
    typer.echo(f"wrote {path}  [{m.technology}, {what}, {size}, patches {patches}]")
    for name, q in m.qc.patches.items():
        if variant == "slide":
            typer.echo(f"  {name}: {q.n_patches} tiles ({q.n_skipped_low_tissue} low tissue, "
                       f"{q.n_skipped_background} background skipped)")
    if m.qc.labels is not None:
        q = m.qc.labels
        counts = "; ".join(f"{col}: " + ", ".join(f"{k} {v}" for k, v in vals.items())
                           for col, vals in q.columns.items())
        typer.echo(f"  labels ({q.file}, by {q.key}): {q.n_spots_labelled} spots labelled, {q.n_masked} masked, "
                   f"{q.n_rows_unmatched} rows matched no spot, {q.n_rows_without_position} without a position; "
                   f"{counts}")
    for w in m.qc.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)


def _add_convert_commands() -> None:
    from hestdata.cli.convert import make_command
    from hestdata.sources.registry import all_sources

    for src in all_sources():
        cmd = make_command(src, _print_summary)
        convert_app.command(src.name.replace("_", "-"), help=cmd.__doc__)(handle_errors(cmd))


_add_convert_commands()


@app.command()
@handle_errors
def info(path: Annotated[Path, typer.Argument(help="A root or a samples/<id>.zarr folder.")]) -> None:
    """Summarise a root (its catalog) or one sample (its metadata)."""
    from hestdata.store import layout as L
    from hestdata.store.root import Root, StoredSample

    if path.name.endswith(L.SAMPLE_SUFFIX):
        import json

        meta = StoredSample.open(path).metadata
        typer.echo(json.dumps(meta.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    import polars as pl

    root = Root.open(path)
    cat = root.catalog
    cols = ["id", "technology", "species", "n_obs", "n_genes", "pixel_size_um", "n_patches", "synthetic", "bytes"]
    with pl.Config(tbl_rows=100, tbl_cols=len(cols), tbl_width_chars=140):
        version = (f"catalog version {root.version}" if root.format_version == 2
                   else "run `hestdata upgrade` to move it to format 2")
        fv = sorted(set(cat["format_version"].drop_nulls().to_list())) if "format_version" in cat.columns else []
        samples = f"; samples in format {', '.join(map(str, fv))}" if any(v != root.format_version for v in fv) else ""
        typer.echo(f"{path}: {cat.height} sample(s) (store format {root.format_version}{samples}, {version})")
        if cat.height:
            typer.echo(cat.select(cols))


@app.command()
@handle_errors
def plot(root: Annotated[Path, typer.Argument(help="A local root.")],
         sample_id: Annotated[str, typer.Argument(metavar="ID", help="The sample to draw.")],
         out: Annotated[Path | None, typer.Option(help="Figure file (.png, .svg, .pdf); default ID.png here.")] = None,
         gene: Annotated[str | None, typer.Option(help="Colour spots/cells by log1p(CP10k) of this gene.")] = None,
         label: Annotated[str | None, typer.Option(help="Colour spots/cells by this table column.")] = None,
         patches: Annotated[str | None, typer.Option(help="Patch array of the gallery (default: the first; '' for "
                                                          "none).")] = None) -> None:
    """Draw a sample: image in µm with its spots or cells, scale bar, legend or colour bar, patch gallery."""
    from hestdata.plot import plot_sample

    path = plot_sample(root, sample_id, out or Path(f"{sample_id}.png"), gene=gene, label=label, patches=patches)
    typer.echo(f"wrote {path}")


@app.command()
@handle_errors
def validate(path: Annotated[Path, typer.Argument(help="A root or a samples/<id>.zarr folder.")],
             checksums: Annotated[bool, typer.Option(help="Re-hash files against the manifest.")] = True,
             strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False) -> None:
    """Check a root or sample against the store specification; list every violation (and warning)."""
    from hestdata.store.validate import validate as run

    rep = run(path, checksums=checksums)
    if rep.kind == "unknown":
        _fail(f"{path}: not found")
    for w in rep.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    if strict and rep.ok and rep.warnings:
        _fail(f"{path}: {len(rep.warnings)} warning(s) (--strict)")
    if rep.ok:
        typer.echo(f"{path}: valid ({rep.kind}, {rep.n_samples} sample(s))")
        return
    for v in rep.violations:
        typer.echo(f"  - {v}", err=True)
    _fail(f"{path}: {len(rep.violations)} violation(s)")


@app.command()
@handle_errors
def repair(root: Annotated[Path, typer.Argument(help="A root left inconsistent by a crash or an edit.")]) -> None:
    """Finish or roll back interrupted writes, remove stale temporary folders, rebuild sample manifests and the
    catalog from the samples present."""
    from hestdata.store.recovery import repair_root

    rep = repair_root(root)
    if rep.replayed_journal:
        typer.echo("finished an interrupted publication of catalog and manifest")
    for sid in rep.restored:
        typer.echo(f"restored {sid} (an overwrite was interrupted; the previous sample is back)")
    for name in rep.removed:
        typer.echo(f"removed {name}")
    for q in rep.quarantined:
        typer.secho(f"quarantined unreadable sample: {q}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{root}: sample manifests and catalog rebuilt from {rep.n_samples} sample(s)")


@app.command()
@handle_errors
def upgrade(root: Annotated[Path, typer.Argument(help="A local root in an older store format.")]) -> None:
    """Rewrite a store-format-1 root in format 2, in place, sample by sample (crash-safe: rerun to resume); on a
    format-2 root, make samples written before 0.2.1 open in zarr/spatialdata without hestdata."""
    from hestdata.store.upgrade import upgrade_root

    rep = upgrade_root(root, echo=typer.echo)
    if rep.already:
        typer.echo(f"{root}: already in store format 2 (catalog version {rep.version})")
        return
    if rep.split_only:
        typer.echo(f"{root}: {len(rep.upgraded)} sample(s) now open without hestdata (catalog version {rep.version})")
        return
    typer.echo(f"{root}: upgraded to store format 2 — {len(rep.upgraded)} sample(s) rewritten, "
               f"{rep.skipped} already upgraded, files {rep.files_before} -> {rep.files_after}")


@app.command()
@handle_errors
def download(source: Annotated[str, typer.Argument(help="Root URL, path, remote name, or hest1k.")],
             dest: Annotated[Path, typer.Argument(help="Local root to create or update.")],
             sample_id: Annotated[list[str] | None, typer.Option("--id", help="Sample id, repeatable.")] = None,
             where: Annotated[str | None, typer.Option(
                 help="Condition on the catalog, e.g. \"organ = 'breast' and n_spots > 100\" (docs/store.md, Queries).")] = None,
             only: Annotated[str | None, typer.Option(help="Elements: image,shapes,expression,patches,points.")] = None,
             patch: Annotated[list[str] | None, typer.Option(help="Patch array name, repeatable.")] = None,
             workers: Annotated[int, typer.Option(help="Parallel transfers.")] = 8,
             overwrite: Annotated[bool, typer.Option(
                 "--overwrite", help="Replace local samples whose content differs from the remote's.")] = False,
             limit: Annotated[int | None, typer.Option(help="HEST-1k: at most this many samples.")] = None,
             dry_run: Annotated[bool, typer.Option("--dry-run", help="HEST-1k: list ids and sizes, fetch nothing.")] = False,
             patches_from: Annotated[str, typer.Option(
                 help="HEST-1k: 'recut' (cut from the WSI) or 'hest' (keep HEST's patches).")] = "recut",
             push_wait: Annotated[float, typer.Option(
                 help="Seconds to wait for a push that is replacing the samples being fetched (0: fail at once).")]
             = 900.0) -> None:
    """Download a subset of a root (by id / catalog condition / element), resumable and checksum-verified; HEST-1k
    layouts (``hest1k``: the Hub's MahmoodLab/hest) are fetched and converted sample by sample."""
    from hestdata.cohort.hest1k import HestReport
    from hestdata.cohort.hest1k import download as run
    from hestdata.errors import InputError

    elements = [e.strip() for e in only.split(",")] if only else None
    try:
        out = run(source, dest, ids=sample_id or None, where=where, elements=elements, patches=patch or None,
                  workers=workers, overwrite=overwrite, limit=limit, dry_run=dry_run, patches_from=patches_from,
                  echo=typer.echo, push_wait_s=push_wait)
    except InputError as exc:
        if where is not None and exc.reason.startswith("query "):  # say which flag held the bad condition
            raise InputError(exc.path, f"--where: {exc.reason}", exc.hint) from None
        raise
    if isinstance(out, HestReport):
        _hest_summary(out, dry_run)
        return
    from hestdata.store.root import Root

    typer.echo(f"{out}: {len(Root.open(out))} sample(s) present")


def default_patch(catalog: Any) -> str:
    """The patch array a command uses when none is named: the only one the root's samples hold, else the
    conversion default (224px_0.5um) where some hold it; otherwise an error listing what there is."""
    from collections import Counter

    held = Counter(a for arrays in catalog["patch_arrays"].to_list() for a in dict.fromkeys(arrays))
    if len(held) == 1:
        return next(iter(held))
    if DEFAULT_PATCH.name in held:
        return DEFAULT_PATCH.name
    if not held:
        _fail("no sample of the root holds a patch array (convert with patches, or use --grid)")
    listing = ", ".join(f"{a} ({n} sample(s))" for a, n in held.most_common())
    _fail(f"the root's samples hold several patch arrays; name one with --patch: {listing}")
    raise AssertionError  # _fail exits


def _hest_summary(rep: Any, dry_run: bool) -> None:
    if dry_run:
        for line in rep.selection.lines():
            typer.echo(line)
        return
    _report_outcomes(rep, f"{rep.dest}: {len(rep.ids('converted'))} converted, {len(rep.ids('unchanged'))} "
                          f"unchanged, {len(rep.ids('refused'))} refused, {len(rep.ids('failed'))} failed")


def _report_outcomes(rep: Any, summary: str) -> None:
    """A registration's or HEST download's summary, each refused or failed sample with its reason; exit 1 if any."""
    for o in rep.outcomes:
        if o.status in ("failed", "refused"):
            typer.secho(f"{o.status}: {o.id}: {o.reason}", fg=typer.colors.RED, err=True)
    typer.echo(summary)
    if not rep.ok:
        raise typer.Exit(1)


@app.command()
@handle_errors
def register(cohort: Annotated[Path, typer.Argument(help="Cohort descriptor (YAML).")],
             root: Annotated[Path, typer.Option(help="Root to register into.")],
             scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address (default: a LocalCluster).")] = None,
             workers: Annotated[int, typer.Option(
                 help="Samples converted at once: a LocalCluster of this many worker processes; 1 converts them "
                      "one by one in this process (each still isolated in a child process).")] = 2,
             overwrite: Annotated[bool, typer.Option(
                 "--overwrite", help="Replace samples of the same id made by another cohort or by convert.")] = False,
             allow_outside_inputs: Annotated[bool, typer.Option(
                 "--allow-outside-inputs", help="Accept inputs outside the descriptor's folder.")] = False,
             timeout_s: Annotated[float, typer.Option(
                 "--timeout-s", help="Per-sample conversion timeout in seconds.")] = DEFAULT_TIMEOUT_S) -> None:
    """Validate a cohort and convert its samples as Dask tasks; publish them once; report per sample."""
    from hestdata.cohort.register import register_cohort

    rep = register_cohort(cohort, root, scheduler=scheduler, n_workers=workers, echo=typer.echo, overwrite=overwrite,
                          allow_outside_inputs=allow_outside_inputs, timeout_s=timeout_s)
    _report_outcomes(rep, rep.summary())


@app.command()
@handle_errors
def push(root: Annotated[Path, typer.Argument(help="Local root.")],
         url: Annotated[str, typer.Argument(help="Destination URL (s3://…, file://…, a remote name).")],
         workers: Annotated[int, typer.Option(help="Parallel uploads.")] = 8,
         verify: Annotated[bool, typer.Option(
             "--verify", help="Check every remote object (size, sha256) and re-upload the bad ones.")] = False) -> None:
    """Publish a root: changed files first, manifest last."""
    from hestdata.remote.push import push as run

    rep = run(root, url, workers=workers, verify_remote=verify)
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
              random_init: Annotated[bool, typer.Option(
                  "--random-init", help="timm architectures with random weights (no download).")] = False,
              device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 … (default: cuda if available).")] = None,
              batch_size: Annotated[int, typer.Option(help="Patches per batch.")] = 64,
              workers: Annotated[int, typer.Option(help="Loader worker processes.")] = 0,
              patch: Annotated[str | None, typer.Option(help="Override the task's patch array.")] = None) -> None:
    """Embed (cached) and evaluate; rows are appended to ROOT/leaderboard.parquet."""
    from hestdata.bench.encoders import load_encoder
    from hestdata.bench.runner import PRIMARY, load_task, run_benchmark

    for e in encoder:
        enc = load_encoder(e, checkpoint=checkpoint, pretrained=not random_init) if e != "library-size" else e
        for t in task:
            typer.echo(f"{getattr(enc, 'name', enc)} on {t}:")
            rows = run_benchmark(root, enc, t, batch_size=batch_size, num_workers=workers, device=device,
                                 patch=patch, echo=typer.echo)
            primary = PRIMARY[load_task(t).type]
            for r in rows:
                mark = "*" if r["metric"] == primary else " "
                typer.echo(f" {mark} {r['metric']}: {r['mean']:.4f} ± {r['std']:.4f}  folds "
                           + ", ".join(f"{f}={v:.4f}" for f, v in zip(r["folds"], r["fold_values"], strict=True)))


@bench_app.command("pretrain")
@handle_errors
def bench_pretrain(root: Annotated[str, typer.Option(help="Root (path or URL).")],
                   task: Annotated[str, typer.Option(help="A pretrain task: built-in name or YAML path (with splits).")],
                   out: Annotated[Path, typer.Option(help="Run folder: checkpoint.pt, result.json, figures/.")],
                   image_encoder: Annotated[str | None, typer.Option(help="Image encoder (see 'bench list').")] = None,
                   gene_encoder: Annotated[str | None, typer.Option(
                       help="identity, pca, mlp, scgpt, nicheformer or an entry point.")] = None,
                   finetune: Annotated[bool | None, typer.Option(
                       "--finetune/--frozen", help="Fine-tune the image backbone, or keep it frozen.")] = None,
                   gene_checkpoint: Annotated[Path | None, typer.Option(
                       help="scGPT-style folder or weights file for the gene encoder.")] = None,
                   gene_vocab: Annotated[Path | None, typer.Option(help="The gene model's vocabulary.")] = None,
                   gene_random_init: Annotated[bool, typer.Option(
                       "--gene-random-init/--no-gene-random-init",
                       help="The scgpt/nicheformer architecture with random weights (no checkpoint).")] = False,
                   loss: Annotated[str | None, typer.Option(help="clip or siglip.")] = None,
                   epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
                   batch_size: Annotated[int | None, typer.Option(help="Pairs per batch (per process).")] = None,
                   lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
                   workers: Annotated[int | None, typer.Option(help="Loader worker processes.")] = None,
                   device: Annotated[str | None, typer.Option(help="cpu, cuda … (default: cuda if available).")] = None,
                   max_steps: Annotated[int | None, typer.Option(
                       help="Stop after this many steps with a checkpoint (rerun to resume).")] = None,
                   fresh: Annotated[bool, typer.Option("--fresh/--resume",
                                                       help="Start over instead of resuming OUT/checkpoint.pt.")] = False,
                   figures: Annotated[bool, typer.Option("--figures/--no-figures",
                                                         help="Write OUT/figures/ (curves, matrix, recall@k).")] = True,
                   ) -> None:
    """Train an image and a gene encoder together (CLIP/SigLIP) and score held-out retrieval; `ml` extra.
    Under `torchrun --nproc-per-node N -m hestdata.cli bench pretrain …` each process trains on its share."""
    import os

    from hestdata.bench.pretrain import pretrain

    gene_opts = {k: v for k, v in {"checkpoint": gene_checkpoint, "vocab": gene_vocab,
                                   "random_init": gene_random_init or None}.items() if v is not None}
    over = {k: v for k, v in {"image_encoder": image_encoder, "gene_encoder": gene_encoder, "loss": loss,
                              "epochs": epochs, "batch_size": batch_size, "lr": lr, "num_workers": workers,
                              "image_mode": None if finetune is None else ("finetune" if finetune else "frozen")}
            .items() if v is not None}
    if gene_opts:
        from hestdata.bench.runner import load_task

        over["gene_options"] = {**load_task(task).options.get("gene_options", {}), **gene_opts}
    res = _with_distributed(lambda: pretrain(root, task, out, device=device, resume=not fresh, max_steps=max_steps,
                                             figures=figures, echo=typer.echo, **over))
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 reports
        return
    if not res.metrics:
        if res.history or max_steps is not None:
            typer.echo(f"stopped with a checkpoint in {out}; run the same command again to resume")
        return
    m = res.metrics
    typer.echo(f"held out: {int(m['n_test'])} pairs from {int(m['n_slides'])} slide(s); genes: {len(res.genes)}")
    for k in (1, 5, 10):
        line = (f"  recall@{k:<2}  image->gene {m[f'img2gene_recall@{k}']:.3f}  gene->image "
                f"{m[f'gene2img_recall@{k}']:.3f}  (chance {m[f'chance_recall@{k}']:.3f})")
        if f"batch_img2gene_recall@{k}" in m:
            line += (f"; in batches of {res.config.eval_batch}: {m[f'batch_img2gene_recall@{k}']:.3f} / "
                     f"{m[f'batch_gene2img_recall@{k}']:.3f} (chance {m[f'chance_batch_recall@{k}']:.3f})")
        typer.echo(line)
    d = res.downstream
    typer.echo(f"  expression from the image embedding (Pearson, test split): pretrained "
               f"{d['expr_pretrained_pearson_mean']:.3f}, same encoder without pretraining "
               f"{d['expr_frozen_pearson_mean']:.3f}, library size {d['expr_library_size_pearson_mean']:.3f}")
    typer.echo(f"results: {out / 'result.json'}" + (f"; figures: {out / 'figures'}" if figures else ""))


@bench_app.command("finetune")
@handle_errors
def bench_finetune(root: Annotated[str, typer.Option(help="Root (path or URL).")],
                   task: Annotated[str, typer.Option(help="A classification or expression task (built-in or YAML).")],
                   out: Annotated[Path, typer.Option(help="Run folder: fold<k>/checkpoint.pt, result.json, "
                                                          "predictions.csv.")],
                   encoder: Annotated[str | None, typer.Option(help="Image encoder with a torch module.")] = None,
                   mode: Annotated[str | None, typer.Option(
                       help="full, last:N (last N blocks), lora:R (adapters of rank R) or head.")] = None,
                   epochs: Annotated[int | None, typer.Option(help="Most epochs per fold.")] = None,
                   batch_size: Annotated[int | None, typer.Option(help="Patches per batch (per process).")] = None,
                   lr: Annotated[float | None, typer.Option(help="Rate of the head and adapters.")] = None,
                   patience: Annotated[int | None, typer.Option(help="Epochs without improvement before stopping.")] = None,
                   n_folds: Annotated[int | None, typer.Option(help="Folds over the task's groups.")] = None,
                   fold: Annotated[list[int] | None, typer.Option(help="Run only this fold (repeatable).")] = None,
                   workers: Annotated[int | None, typer.Option(help="Loader worker processes.")] = None,
                   device: Annotated[str | None, typer.Option(help="cpu, cuda … (default: cuda if available).")] = None,
                   max_steps: Annotated[int | None, typer.Option(
                       help="Stop after this many steps of a fold with a checkpoint (rerun to resume).")] = None,
                   fresh: Annotated[bool, typer.Option("--fresh/--resume",
                                                       help="Start over instead of resuming OUT.")] = False,
                   ) -> None:
    """Fine-tune an image encoder on a task's folds and score it beside its frozen linear probe; `ml` extra.
    Under `torchrun --nproc-per-node N -m hestdata.cli bench finetune …` each process trains on its share."""
    import os
    import shutil

    from hestdata.bench.finetune import finetune

    over = {k: v for k, v in {"encoder": encoder, "mode": mode, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                              "patience": patience, "n_folds": n_folds, "folds": fold or None,
                              "num_workers": workers}.items() if v is not None}
    if fresh and out.exists() and int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(out)
    res = _with_distributed(lambda: finetune(root, task, out, device=device, max_steps=max_steps, echo=typer.echo,
                                             **over))
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if not res.finished:
        typer.echo(f"stopped after {max_steps} steps with a checkpoint in {out}; run again to resume")
        return
    for which in ("finetuned", "frozen"):
        p = res.pooled.get(which, {})
        typer.echo(f"{which:>9}: " + ", ".join(f"{k} {v:.4f}" for k, v in p.items()))
    typer.echo("gain (fine-tuned - frozen): " + ", ".join(f"{k} {v:+.4f}" for k, v in res.gain.items()))
    typer.echo(f"wrote {out / 'result.json'} and {out / 'predictions.csv'}")


def _with_distributed(fn: Any) -> Any:
    """Run ``fn`` inside a torch.distributed process group when started by torchrun (gloo on CPU, nccl on CUDA)."""
    import os

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return fn()
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    try:
        out = fn()
        dist.barrier()
        return out
    finally:
        dist.destroy_process_group()


@bench_app.command("embed")
@handle_errors
def bench_embed(root: Annotated[Path, typer.Option(help="Root.")],
                encoder: Annotated[str, typer.Option(help="Encoder name.")],
                patch: Annotated[str | None, typer.Option(help="Patch array (default: the one the root's samples "
                                                                "hold; 224px_0.5um where there are several).")] = None,
                checkpoint: Annotated[Path | None, typer.Option(help="Local weights.")] = None,
                batch_size: Annotated[int, typer.Option(help="Patches per batch.")] = 64,
                workers: Annotated[int, typer.Option(help="Loader workers.")] = 0,
                grid: Annotated[str | None, typer.Option(
                    help="Embed a regular grid of this geometry over each image instead (e.g. 512px_0.5um: "
                         "TITAN-style feature grids with an empty-cell mask).")] = None) -> None:
    """Compute (and cache) per-patch features of every sample with the patch array (or a feature grid)."""
    from hestdata.bench.embed import embed_samples
    from hestdata.bench.encoders import load_encoder
    from hestdata.store.root import Root

    r = Root.open(root)
    if grid:
        from hestdata.bench.grid import embed_grid

        enc = load_encoder(encoder, checkpoint=checkpoint)
        ids = r.select(element="image").ids
        grids = embed_grid(r, enc, ids, grid=grid, batch_size=batch_size,
                           on_sample=lambda s, hit: typer.echo(f"  {s}: {'cached' if hit else 'embedded'}"))
        for s, g in grids.items():
            typer.echo(f"  {s}: grid {g.mask.shape[0]} x {g.mask.shape[1]} cells of {g.cell_um:g} µm, "
                       f"{int(g.mask.sum())} with tissue")
        typer.echo(f"{len(grids)} sample(s), encoder {enc.name}")
        return
    patch = patch or default_patch(r.catalog)
    ids = r.select(patch=patch).ids
    enc = load_encoder(encoder, checkpoint=checkpoint)
    out = embed_samples(r, enc, ids, patch=patch, batch_size=batch_size, num_workers=workers,
                        on_sample=lambda s, hit: typer.echo(f"  {s}: {'cached' if hit else 'embedded'}"))
    typer.echo(f"{len(out)} sample(s), {sum(len(v) for v in out.values())} patches, encoder {enc.name}")


@bench_app.command("explain")
@handle_errors
def bench_explain(root: Annotated[Path, typer.Option(help="Root.")],
                  encoder: Annotated[str, typer.Option(help="Encoder name.")],
                  sample: Annotated[str, typer.Option(help="Sample to explain (held out when the head is fitted).")],
                  out: Annotated[Path, typer.Option(help="Folder for the PNGs.")],
                  gene: Annotated[str | None, typer.Option(help="Explain a ridge head for this gene.")] = None,
                  label: Annotated[str | None, typer.Option(help="Or a linear probe for this obs column.")] = None,
                  patch: Annotated[str, typer.Option(help="Patch array.")] = DEFAULT_PATCH.name,
                  method: Annotated[str, typer.Option(
                      help="integrated_gradients, input_x_gradient or bcos (B-cos networks).")] = "integrated_gradients",
                  n: Annotated[int, typer.Option(help="Patches to explain (highest output first; 0 = all).")] = 16,
                  checkpoint: Annotated[Path | None, typer.Option(help="Local weights.")] = None) -> None:
    """Attribution maps of an encoder plus a fitted head (per patch and as a slide mosaic)."""
    from hestdata.bench.encoders import load_encoder
    from hestdata.bench.explain import explain_sample, fit_head
    from hestdata.store.root import Root

    enc = load_encoder(encoder, checkpoint=checkpoint)
    ids = Root.open(root).select(patch=patch).ids
    if sample not in ids:
        raise typer.BadParameter(f"sample {sample!r} has no {patch} patch array")
    head = fit_head(root, enc, ids, patch, gene=gene, label=label, exclude=sample)
    files = explain_sample(root, enc, sample, patch, out, head=head, method=method, n=n)
    typer.echo(f"{len(files)} file(s) under {out / sample} ({method}, head: {head.name})")


@bench_app.command("list")
@handle_errors
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
        how = (f"splits by {t.group_by}: {t.splits}" if t.type == "pretrain" else f"folds by {t.group_by}")
        typer.echo(f"  {name:<20} {t.type:<15} samples: {t.samples}; {how}")


@bench_app.command("leaderboard")
@handle_errors
def bench_leaderboard(root: Annotated[Path, typer.Argument(help="Root with a leaderboard.parquet.")],
                      html_out: Annotated[Path | None, typer.Option("--html", help="Write the HTML page here.")] = None,
                      task: Annotated[list[str] | None, typer.Option(help="Show only this task (repeatable).")] = None,
                      metric: Annotated[list[str] | None, typer.Option(
                          help="Show only this metric (repeatable; the first is the one rows are sorted by).")] = None,
                      ) -> None:
    """Render the leaderboard as Markdown (stdout) and a self-contained HTML page: one table per task."""
    import polars as pl

    from hestdata.bench.leaderboard import read, render_html, render_markdown
    from hestdata.errors import InputError
    from hestdata.store.atomic import atomic_write_bytes

    df = read(root)
    for col, want in (("task", task), ("metric", metric)):
        if want:
            missing = sorted(set(want) - set(df[col].to_list()))
            if missing:
                raise InputError(root / "leaderboard.parquet", f"no {col} {', '.join(missing)}; it has "
                                                               f"{', '.join(sorted(set(df[col].to_list()))[:12])}")
            df = df.filter(pl.col(col).is_in(want))
    order = {t: metric[0] for t in set(df["task"].to_list())} if metric else None  # sort by the first metric given
    typer.echo(render_markdown(df, order))
    target = html_out or (root / "leaderboard.html")
    atomic_write_bytes(target, render_html(df, metrics=order).encode())
    typer.echo(f"html: {target}")


@app.command("export")
@handle_errors
def export_cmd(layout: Annotated[str, typer.Argument(help="stamp or trident.")],
               root: Annotated[Path, typer.Argument(help="Root.")],
               dest: Annotated[Path, typer.Argument(help="Output folder.")],
               encoder: Annotated[str, typer.Option(help="Encoder name.")],
               patch: Annotated[str | None, typer.Option(help="Patch array (default: the one the root's samples "
                                                               "hold; 224px_0.5um where there are several).")] = None,
               checkpoint: Annotated[Path | None, typer.Option(help="Local weights.")] = None,
               grid: Annotated[str | None, typer.Option(
                   help="Export a feature grid of this geometry (TRIDENT layout + grid_index).")] = None) -> None:
    """Write per-slide patch features in the STAMP or TRIDENT HDF5 layout."""
    from hestdata.bench.encoders import load_encoder
    from hestdata.bench.export import export_features

    enc = load_encoder(encoder, checkpoint=checkpoint)
    if grid:
        from hestdata.bench.grid import embed_grid, export_grid_trident
        from hestdata.store.root import Root

        if layout != "trident":
            raise typer.BadParameter("feature grids are exported in the trident layout")
        ids = Root.open(root).select(element="image").ids
        files = export_grid_trident(root, embed_grid(root, enc, ids, grid=grid), enc, dest)
        typer.echo(f"wrote {len(files)} file(s) under {dest}")
        return
    from hestdata.store.root import Root

    files = export_features(root, enc, dest, layout=layout, patch=patch or default_patch(Root.open(root).catalog))
    typer.echo(f"wrote {len(files)} file(s) under {dest}")


def main() -> None:
    """Console-script entry point."""
    import warnings

    from hestdata.errors import HestdataWarning

    warnings.filterwarnings("ignore", category=HestdataWarning)  # printed from each sample's QC instead
    warnings.showwarning = _one_line_warning  # a library's warning on the same channel as ours
    app()


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    """``warning: <message>`` on stderr (the category named unless it is a plain UserWarning), no source line;
    ``--debug`` keeps Python's own format."""
    from hestdata.cli.common import debug_enabled

    if debug_enabled():
        import warnings

        warnings._showwarning_orig(message, category, filename, lineno, file, line)  # type: ignore[attr-defined]
        return
    text = " ".join(str(message).split())
    kind = "" if category is UserWarning else f"{category.__name__}: "
    typer.secho(f"warning: {kind}{text}", fg=typer.colors.YELLOW, err=True)


if __name__ == "__main__":
    main()
