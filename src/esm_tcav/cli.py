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

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config key, e.g. --set train.n_random=50 (repeatable)"),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="redo work that is already stored")]


def _overrides(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise EsmTcavError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set seed=1")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
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


def _context(config: Path, sets: list[str] | None) -> RunContext:
    from esm_tcav.run.context import RunContext  # noqa: F811 (loads the model stack)

    return RunContext.open(load_config(config, _overrides(sets)))


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
        except KeyboardInterrupt:
            typer.echo("interrupted; finished work is kept, rerun to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    _setup_logging(verbose)


@app.command()
@_guard
def embed(
    config: ConfigArg,
    set_: SetOpt = None,
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
    _print(run_step(_context(config, set_), "embed", force=force, shard=parsed))


@app.command()
@_guard
def train(config: ConfigArg, set_: SetOpt = None, force: ForceOpt = False):
    """Train concept CAVs and random CAVs per layer, with statistics and thresholds."""
    from esm_tcav.run.pipeline import run_step

    _print(run_step(_context(config, set_), "train", force=force))


@app.command()
@_guard
def evaluate(config: ConfigArg, set_: SetOpt = None):
    """AUROC/AUPRC with intervals, random-CAV comparison and plots per layer."""
    from esm_tcav.run.pipeline import run_step

    _print(run_step(_context(config, set_), "evaluate"))


@app.command()
@_guard
def detect(
    config: ConfigArg,
    set_: SetOpt = None,
    input_: Annotated[
        Path | None,
        typer.Option("--input", help="proteins to scan (default: the held-out test proteins)"),
    ] = None,
):
    """Per-residue concept scores, spans (GFF3/TSV), span metrics and heatmaps."""
    from esm_tcav.run.pipeline import run_step

    _print(run_step(_context(config, set_), "detect", input_path=input_))


@app.command()
@_guard
def tcav(config: ConfigArg, set_: SetOpt = None):
    """Gradient TCAV scores of a model head along the concept and random CAVs."""
    from esm_tcav.run.pipeline import run_step

    _print(run_step(_context(config, set_), "tcav"))


@app.command()
@_guard
def report(config: ConfigArg, set_: SetOpt = None):
    """Write the self-contained report.html from a run's results."""
    from esm_tcav.run.pipeline import run_step

    _print(run_step(_context(config, set_), "report")["report"])


@app.command()
@_guard
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    force: ForceOpt = False,
    steps: Annotated[
        str | None, typer.Option(help="comma-separated steps to run (default: the config's steps)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the timings as JSON")] = False,
):
    """Chain embed → train → evaluate → detect → tcav → report from one config."""
    from esm_tcav.run.pipeline import run_pipeline, summary_text

    chosen = [s.strip() for s in steps.split(",")] if steps else None
    ctx = _context(config, set_)
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
    submit: Annotated[bool, typer.Option(help="submit with sbatch")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the scripts")] = False,
    only_failed: Annotated[
        bool, typer.Option(help="resubmit only embedding shards that are not finished")
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

    cfg = load_config(config, _overrides(set_))
    if scan is not None:
        if library is None or out is None:
            raise EsmTcavError("--scan needs --library DIR and --out DIR")
        result = run_slurm_scan(cfg, scan, library, out, submit=submit and not dry_run)
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
):
    """Score every concept of a library along every protein in one forward pass each."""
    from esm_tcav.localize.scan import merge_shards, run_scan

    if merge:
        _print(merge_shards(out, merge))
        return
    _print(
        run_scan(
            fasta,
            library,
            out,
            shard=shard,
            device=device,
            toks_per_batch=toks_per_batch,
            dtype=dtype,
            model_path=model_path,
        )
    )


@library_app.command("build")
@_guard
def library_build(
    source: Annotated[Path, typer.Argument(help="library YAML, or an annotation file")],
    out: Annotated[Path, typer.Option(help="library folder")] = Path("results/library"),
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

        _print(build_library(source, out))
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
        )
    )


@library_app.command("add")
@_guard
def library_add(
    library: Annotated[Path, typer.Argument(help="library folder")],
    config: Annotated[Path, typer.Argument(help="concept config (run YAML)")],
    set_: SetOpt = None,
):
    """Train one concept from a run config (span file or JSONL) and add it to a library."""
    from esm_tcav.run.library_build import add_concept

    _print(add_concept(library, load_config(config, _overrides(set_))))


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
