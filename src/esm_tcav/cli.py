"""The `esm-tcav` command: one verb per stage, `run` chains them from one YAML config."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from esm_tcav.config import SCAN_DEFAULTS, Config, load_config
from esm_tcav.errors import EsmTcavError

if TYPE_CHECKING:
    from esm_tcav.run.context import RunContext

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Test whether ESM-2 has learned a protein concept and localize it.",
)
library_app = typer.Typer(no_args_is_help=True, help="Build and extend a concept library.")
app.add_typer(library_app, name="library")
store_app = typer.Typer(no_args_is_help=True, help="The embedding store of a run.")
app.add_typer(store_app, name="store")

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config key, e.g. --set train.n_random=50 (repeatable)"),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="redo work that is already stored")]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="embedding store folder shared across runs (overrides the config's store.path)",
    ),
]


ShowOpt = Annotated[
    str | None,
    typer.Option("--show", help="ID,ID,...: proteins whose score tracks the view always shows"),
]


def _show_ids(show: str | None) -> list[str] | None:
    return [s.strip() for s in show.split(",") if s.strip()] if show else None


def _overrides(pairs: list[str] | None, store: Path | None = None) -> dict:
    out = {} if store is None else {"store.path": str(store.expanduser().resolve())}
    for pair in pairs or []:
        if "=" not in pair:
            raise EsmTcavError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set seed=1")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise EsmTcavError(
                f"--set {pair!r}: the value {value!r} is not valid YAML ({problem}); quote "
                "strings and close lists, e.g. --set 'train.n_random=[1, 2]'"
            ) from None
    return out


def _setup_logging(verbose: bool) -> None:
    # the console shows warnings (INFO with -v); the run's log file gets INFO either way
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_esm_tcav_console", False)]
    console._esm_tcav_console = True
    root.addHandler(console)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    from esm_tcav.models import quiet_model_libraries

    quiet_model_libraries()


def _context(config: Path, sets: list[str] | None, store: Path | None = None) -> RunContext:
    from esm_tcav.run.context import RunContext  # noqa: F811 (loads the model stack)

    # not prepared: run_step validates inputs, model and output folder before writing anything
    return RunContext(load_config(config, _overrides(sets, store)))


def _print(result) -> None:
    if result is None:
        return
    typer.echo(json.dumps(result, indent=1, default=str) if isinstance(result, dict) else result)


def _guard(fn):
    """Expected failures become one line on stderr and exit status 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EsmTcavError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # disk full, read-only, permissions: expected, one line
            from esm_tcav.io.files import disk_error

            typer.echo(f"error: {disk_error(exc)}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; finished work is kept, rerun to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        from esm_tcav._version import __version__

        typer.echo(f"esm-tcav {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    _setup_logging(verbose)


@app.command()
@_guard
def embed(
    config: ConfigArg,
    set_: SetOpt = None,
    store: StoreOpt = None,
    force: ForceOpt = False,
    shard: Annotated[str | None, typer.Option(help="I/N: embed shard I of N")] = None,
):
    """Embed the dataset's proteins at the tapped layers into the store (resumable)."""
    from esm_tcav.run.pipeline import run_step

    parsed = None
    if shard:
        try:
            i, n = (int(x) for x in shard.split("/"))
            assert 0 <= i < n
        except (ValueError, AssertionError):
            raise EsmTcavError(f"--shard {shard!r}: expected I/N with 0 <= I < N") from None
        parsed = (i, n)
    _print(run_step(_context(config, set_, store), "embed", force=force, shard=parsed))


@app.command()
@_guard
def train(config: ConfigArg, set_: SetOpt = None, store: StoreOpt = None, force: ForceOpt = False):
    """Train concept CAVs and random CAVs per layer, with statistics and thresholds."""
    from esm_tcav.run.pipeline import run_step

    _print(run_step(_context(config, set_, store), "train", force=force))


@app.command()
@_guard
def evaluate(config: ConfigArg, set_: SetOpt = None, store: StoreOpt = None):
    """AUROC/AUPRC with intervals, random-CAV comparison and plots per layer."""
    from esm_tcav.run.pipeline import run_step

    _print(run_step(_context(config, set_, store), "evaluate"))


@app.command()
@_guard
def detect(
    config: ConfigArg,
    set_: SetOpt = None,
    store: StoreOpt = None,
    input_: Annotated[
        Path | None,
        typer.Option("--input", help="proteins to scan (default: the held-out test proteins)"),
    ] = None,
    show: ShowOpt = None,
):
    """Per-residue concept scores, spans (GFF3/TSV), span metrics and heatmaps; with --input,
    also proteins.html, the new proteins ranked by evidence with score tracks."""
    from esm_tcav.run.pipeline import run_step

    _print(
        run_step(_context(config, set_, store), "detect", input_path=input_, show=_show_ids(show))
    )


@app.command()
@_guard
def tcav(config: ConfigArg, set_: SetOpt = None, store: StoreOpt = None):
    """Gradient TCAV scores of a model head along the concept and random CAVs."""
    from esm_tcav.run.pipeline import run_step

    _print(run_step(_context(config, set_, store), "tcav"))


@app.command()
@_guard
def report(config: ConfigArg, set_: SetOpt = None, store: StoreOpt = None):
    """Write the self-contained report.html from a run's results."""
    from esm_tcav.run.pipeline import run_step

    _print(run_step(_context(config, set_, store), "report")["report"])


@app.command()
@_guard
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    store: StoreOpt = None,
    force: ForceOpt = False,
    steps: Annotated[
        str | None, typer.Option(help="comma-separated steps to run (default: the config's steps)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the timings as JSON")] = False,
):
    """Chain embed → train → evaluate → detect → tcav → report from one config."""
    from esm_tcav.run.pipeline import run_pipeline, summary_text

    chosen = [s.strip() for s in steps.split(",")] if steps else None
    ctx = _context(config, set_, store)
    result = run_pipeline(ctx, force=force, steps=chosen)
    if as_json:
        _print(result)
    else:
        typer.echo(summary_text(ctx, result["steps"]))


@app.command()
@_guard
def slurm(
    config: ConfigArg,
    set_: SetOpt = None,
    store: StoreOpt = None,
    submit: Annotated[bool, typer.Option(help="submit with sbatch")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the scripts and the plan; write nothing")
    ] = False,
    only_failed: Annotated[
        bool,
        typer.Option(
            help="resubmit only what did not finish: embedding or scan shards, stage jobs"
        ),
    ] = False,
    scan: Annotated[
        Path | None,
        typer.Option(help="instead of the pipeline: scan this FASTA with --library, in shards"),
    ] = None,
    library: Annotated[Path | None, typer.Option(help="concept library (with --scan)")] = None,
    out: Annotated[Path | None, typer.Option(help="scan output folder (with --scan)")] = None,
):
    """Write (and submit) SLURM jobs: an embedding array, then chained stage jobs (or a
    sharded scan and its merge, with --scan). Partition, account, resources: config `slurm:`."""
    from esm_tcav.run.slurm import run_slurm, run_slurm_scan

    cfg = load_config(config, _overrides(set_, store))
    if scan is not None:
        if library is None or out is None:
            raise EsmTcavError("--scan needs --library DIR and --out DIR")
        result = run_slurm_scan(
            cfg,
            scan,
            library,
            out,
            submit=submit and not dry_run,
            dry_run=dry_run,
            only_failed=only_failed,
            store=store,
        )
    else:
        result = run_slurm(
            cfg, config.resolve(), submit=submit, dry_run=dry_run, only_failed=only_failed
        )
    _print(result.pop("text") if "text" in result else result)


@app.command()
@_guard
def smoke(out: Annotated[Path, typer.Option(help="output folder")] = Path("results/smoke")):
    """A 30-second health check of the whole path with planted concepts."""
    from esm_tcav.run.smoke import run_smoke

    result = run_smoke(out)
    _print(result)
    if not result.get("passed"):
        raise typer.Exit(1)


@app.command()
@_guard
def scan(
    fasta: Annotated[Path, typer.Argument(help="proteins (FASTA), read lazily")],
    library: Annotated[Path, typer.Option(help="concept library folder")],
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/scan"),
    shard: Annotated[str | None, typer.Option(help="I/N: scan shard I of N")] = None,
    device: str = SCAN_DEFAULTS.device,
    toks_per_batch: int = SCAN_DEFAULTS.toks_per_batch,
    dtype: Annotated[
        str,
        typer.Option(help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16"),
    ] = SCAN_DEFAULTS.dtype,
    model_path: Annotated[
        Path | None,
        typer.Option(help="checkpoint of the library's model (HF folder or fair-esm .pt)"),
    ] = SCAN_DEFAULTS.model_path,
    merge: Annotated[
        int | None, typer.Option(help="N: merge finished shards 0..N-1 of --out into one result")
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(help="embedding store: stored proteins are scored from it, not re-embedded"),
    ] = None,
    show: ShowOpt = None,
    include_weak: Annotated[
        bool, typer.Option(help="also scan concepts graded weak or 'not a concept'")
    ] = False,
):
    """Score every concept of a library along every protein in one forward pass each; the
    whole scan (or the merge) ends with proteins.html, the proteins ranked per concept.

    Concepts graded weak or "not a concept" are left out unless --include-weak."""
    from esm_tcav.concepts.library import load_library
    from esm_tcav.localize.scan import load_scan_model, merge_shards, run_scan
    from esm_tcav.run.scan_view import scan_view

    view = {"show": _show_ids(show), "device": device, "dtype": dtype, "model_path": model_path}
    if merge:
        result = merge_shards(out, merge)
        result["view"] = str(scan_view(out, fasta, library, **view))
        _print(result)
        return
    loaded = load_scan_model(load_library(library), device, dtype, model_path)
    result = run_scan(
        fasta,
        library,
        out,
        shard=shard,
        device=device,
        toks_per_batch=toks_per_batch,
        dtype=dtype,
        model_path=model_path,
        loaded=loaded,
        store=store,
        include_weak=include_weak,
    )
    if shard is None:
        result["view"] = str(scan_view(out, fasta, library, loaded=loaded, **view))
    _print(result)


@app.command()
@_guard
def paint(
    structure: Annotated[Path, typer.Option(help="PDB or mmCIF file (AlphaFold DB files too)")],
    concept: Annotated[
        Path, typer.Option(help="concept artifact folder, or a library folder with --name")
    ],
    chain: Annotated[str, typer.Option(help="chain to paint")] = "A",
    name: Annotated[str | None, typer.Option(help="concept name in a library")] = None,
    sequence: Annotated[
        Path | None,
        typer.Option(help="score this sequence (FASTA etc.) instead of the chain's own"),
    ] = None,
    id_: Annotated[str | None, typer.Option("--id", help="record of --sequence to score")] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/paint"),
    fmt: Annotated[
        str | None, typer.Option("--format", help="pdb or cif (default: the input's)")
    ] = None,
    model_path: Annotated[
        Path | None, typer.Option(help="checkpoint of the concept's model, if not registered")
    ] = None,
):
    """Per-residue concept scores in a structure's B-factor column, plus ChimeraX and PyMOL
    files; the structure's residues are aligned to the scored sequence, mismatches reported."""
    from esm_tcav.run.api import Concept
    from esm_tcav.run.paint import paint_structure

    loaded = Concept.load(concept, name, model_path=model_path)
    result = paint_structure(structure, chain, loaded, out, sequence, id_, fmt)
    result.pop("scores")
    _print(result)


_EXTRACT_HELP = (
    "Options (fair-esm's extract.py spelling works too): --repr-layers N [N ...] (0 = "
    "embeddings, -1 = last; default -1), --include mean per_tok (default mean), --format "
    "safetensors|npy, --device cpu|cuda, --toks-per-batch N, --model-path CHECKPOINT (with a "
    "registry name as MODEL), --registry-file FILE."
)


def _extract_options(args: list[str]):
    import argparse

    parser = argparse.ArgumentParser(prog="esm-tcav extract", add_help=False)
    parser.add_argument("--repr-layers", "--repr_layers", type=int, nargs="+", default=[-1])
    parser.add_argument("--include", nargs="+", default=["mean"])
    parser.add_argument("--format", default="safetensors")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--toks-per-batch", "--toks_per_batch", type=int, default=8192)
    parser.add_argument("--registry-file", default=None)
    parser.add_argument("--model-path", default=None)
    opts, unknown = parser.parse_known_args(args)
    if unknown:
        raise EsmTcavError(f"extract: unknown option(s) {' '.join(unknown)}. {_EXTRACT_HELP}")
    return opts


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=_EXTRACT_HELP,
)
@_guard
def extract(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="registry name, or a checkpoint (folder or .pt)")],
    fasta: Annotated[Path, typer.Argument(help="proteins (FASTA, JSONL, TMbed or UniProt .dat)")],
    out: Annotated[Path, typer.Argument(help="output folder (one file per protein)")],
):
    """Embeddings per protein, as fair-esm's extract.py: no concept config needed;
    resumable; files readable with numpy or safetensors alone (format: README)."""
    from esm_tcav.engine.export import run_extract
    from esm_tcav.io.readers import read_proteins
    from esm_tcav.models.loading import load_model

    opts = _extract_options(list(ctx.args))
    proteins = read_proteins(fasta)
    path = Path(model).expanduser()
    name, checkpoint = (None, path) if path.exists() else (model, opts.model_path)
    loaded = load_model(name, checkpoint, device=opts.device, registry_file=opts.registry_file)
    _print(
        run_extract(
            loaded,
            proteins,
            out,
            opts.repr_layers,
            opts.include,
            opts.format,
            toks_per_batch=opts.toks_per_batch,
        )
    )


@store_app.command("export")
@_guard
def store_export(
    config: ConfigArg,
    out: Annotated[Path, typer.Option(help="output folder (one file per protein)")],
    include: Annotated[str, typer.Option(help="mean,per_tok or one of them")] = "mean,per_tok",
    fmt: Annotated[str, typer.Option("--format", help="safetensors or npy")] = "safetensors",
    set_: SetOpt = None,
):
    """Write a run's stored embeddings (its dataset, its tapped layers) in the extract format."""
    from esm_tcav.engine.export import export_store
    from esm_tcav.ui import progress_bar

    ctx = _context(config, set_)
    model = {
        "name": ctx.loaded.name,
        "fingerprint": ctx.loaded.fingerprint,
        "hidden_size": ctx.loaded.hidden_size,
        "num_layers": ctx.loaded.num_layers,
    }
    proteins = ctx.dataset.proteins
    with progress_bar(len(proteins), "store export") as advance:
        result = export_store(
            ctx.store,
            model,
            proteins,
            ctx.layers,
            out,
            [i.strip() for i in include.split(",") if i.strip()],
            fmt,
            progress=advance,
        )
    _print(result)


@library_app.command("build")
@_guard
def library_build(
    source: Annotated[Path, typer.Argument(help="library YAML, or an annotation file")],
    out: Annotated[Path, typer.Option(help="library folder")] = Path("results/library"),
    store: StoreOpt = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="annotation file format: auto, interproscan, domtblout, uniprot, tmbed "
            "(default: a .yaml/.yml SOURCE is a library YAML, anything else is auto-detected)",
        ),
    ] = None,
    sequences: Annotated[
        Path | None, typer.Option(help="FASTA of the annotated proteins (interproscan, domtblout)")
    ] = None,
    analysis: Annotated[
        list[str] | None, typer.Option(help="InterProScan analyses to keep, e.g. Pfam (repeatable)")
    ] = None,
    feature: Annotated[
        list[str] | None, typer.Option(help="UniProt FT keys to keep, e.g. TRANSMEM (repeatable)")
    ] = None,
    entry: Annotated[
        list[str] | None, typer.Option(help="only these entries (repeatable; default: all)")
    ] = None,
    min_proteins: Annotated[int, typer.Option(help="entries with fewer proteins are skipped")] = 8,
    background: Annotated[
        Path | None, typer.Option(help="FASTA of background proteins to draw negatives from")
    ] = None,
    negatives_per_positive: Annotated[float, typer.Option(help="length-matched negatives")] = 2.0,
    max_positives: Annotated[int | None, typer.Option(help="cap positives per entry")] = None,
    split: Annotated[str, typer.Option(help="random or cluster (k-mer similarity groups)")] = (
        "random"
    ),
    test_fraction: Annotated[float, typer.Option(help="held-out share of proteins")] = 0.3,
    protein_level: Annotated[
        list[str] | None,
        typer.Option(help="entries that also get a protein-level concept (repeatable)"),
    ] = None,
    settings: Annotated[
        Path | None, typer.Option(help="library YAML whose seed/model/defaults to use")
    ] = None,
):
    """Train every concept of a library YAML, or one concept per entry of an annotation file."""
    if fmt is None and source.suffix in (".yaml", ".yml"):
        from esm_tcav.run.library_build import build_library

        _print(build_library(source, out, store=store))
        return
    from esm_tcav.run.annotations import build_from_annotations

    if split not in ("random", "cluster"):
        raise EsmTcavError(f"--split {split!r}: use random or cluster")
    doc = {}
    if settings is not None:
        doc = yaml.safe_load(settings.read_text()) or {}
        if not isinstance(doc, dict):
            raise EsmTcavError(f"{settings}: not a YAML mapping")
        doc = {k: doc[k] for k in ("seed", "model", "defaults") if k in doc}
    _print(
        build_from_annotations(
            source,
            out,
            fmt=fmt or "auto",
            sequences=sequences,
            analyses=analysis,
            features=feature,
            entries=entry,
            min_proteins=min_proteins,
            background=background,
            negatives_per_positive=negatives_per_positive,
            max_positives=max_positives,
            test_fraction=test_fraction,
            split=split,
            protein_level=protein_level or (),
            settings=doc,
            store=store,
        )
    )


@library_app.command("add")
@_guard
def library_add(
    library: Annotated[Path, typer.Argument(help="library folder")],
    config: Annotated[Path, typer.Argument(help="concept config (run YAML)")],
    set_: SetOpt = None,
    store: StoreOpt = None,
):
    """Train one concept from a run config (span file or JSONL) and add it to a library."""
    from esm_tcav.run.library_build import add_concept

    _print(add_concept(library, load_config(config, _overrides(set_, store))))


@app.command()
def models():
    """List the model registry."""
    from esm_tcav.models.registry import list_specs

    for s in list_specs():
        typer.echo(
            f"{s.name:24s} {s.params:>5s} hidden={s.hidden_size:<5d} "
            f"layers={s.num_layers:<3d} taps={list(s.default_taps)}  {s.license}"
        )


__all__ = ["app", "Config"]
