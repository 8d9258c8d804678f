"""`esm-tcav slurm`: an embedding job array over shards, then stage jobs chained by afterok.

Array tasks write shards straight into the run's embedding store, which is all a merge needs;
the later jobs are the same verbs a local run uses, so results match a local run.

- Every path in an `#SBATCH` line is double-quoted (sbatch reads quoted arguments, so an
  output_dir with a space works); a path holding a double quote or a newline is refused.
- `only_failed` resubmits what did not finish: the embedding shards whose proteins are not all
  in the store, the stage jobs from the first one the run manifest does not record as done
  (for the current config) onwards, and for a scan the shards without a complete checkpoint
  plus the merge. What is finished is not submitted again.
- `dry_run` prints the scripts and the plan (which shards and jobs would be submitted) and
  writes nothing; without `submit` the scripts are written under `<output>/slurm/` and printed.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path

from esm_tcav.config import Config
from esm_tcav.errors import EsmTcavError
from esm_tcav.io.files import atomic_write_text, check_output_dir

log = logging.getLogger("esm_tcav.run.slurm")

STAGES = ("train", "evaluate", "detect", "tcav", "report")


def _quoted(path: Path | str) -> str:
    text = str(path)
    if '"' in text or "\n" in text:
        raise EsmTcavError(f"{text!r}: a SLURM output path cannot hold a double quote or newline")
    return f'"{text}"'


def _header(
    cfg: Config, name: str, log_dir: Path, array: str | None = None, gpus: int = 0
) -> list[str]:
    s = cfg.slurm
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=esm-tcav-{name}",
        f"#SBATCH --time={s.time}",
        f"#SBATCH --mem={s.mem}",
        f"#SBATCH --cpus-per-task={s.cpus_per_task}",
    ]
    if s.partition:
        lines.append(f"#SBATCH --partition={s.partition}")
    if s.account:
        lines.append(f"#SBATCH --account={s.account}")
    if gpus:
        lines.append(f"#SBATCH --gres=gpu:{gpus}")
    if array is not None:
        lines.append(f"#SBATCH --array={array}")
        lines.append(f"#SBATCH --output={_quoted(log_dir / f'{name}-%A_%a.out')}")
    else:
        lines.append(f"#SBATCH --output={_quoted(log_dir / f'{name}-%j.out')}")
    lines += [f"#SBATCH {x}" for x in s.extra_sbatch]
    lines += ["set -euo pipefail"]
    if s.setup:
        lines.append(s.setup)
    return lines


def _write(folder: Path, scripts: dict[str, str]) -> dict[str, Path]:
    """One `<name>.sbatch` per job, each written atomically (and the log folder sbatch needs)."""
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in scripts.items():
        path = folder / f"{name}.sbatch"
        atomic_write_text(path, text)
        paths[name] = path
    return paths


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def pipeline_scripts(cfg: Config, config_path: Path, exe: str | None = None) -> dict[str, str]:
    """The text of one script per job ({job name: text}); nothing is written."""
    exe = exe or f"{shlex.quote(sys.executable)} -m esm_tcav"
    log_dir = cfg.out.resolve() / "slurm" / "logs"
    conf = shlex.quote(str(config_path))
    if cfg.store.path:  # a --store given to `esm-tcav slurm` reaches every job
        conf += f" --store {shlex.quote(str(cfg.store_dir))}"
    n = cfg.slurm.shards
    scripts = {
        "embed": _text(
            _header(cfg, "embed", log_dir, array=f"0-{n - 1}", gpus=cfg.slurm.gpus)
            + [f'{exe} embed {conf} --shard "${{SLURM_ARRAY_TASK_ID}}/{n}"']
        ),
    }
    sampled = keeps_a_sample(cfg)
    for stage in STAGES:
        if stage in cfg.steps:
            # the stages that run the model; train and evaluate do when the store may keep only
            # a training sample (store.residue_states: sample, or auto past its size limit)
            model = {"detect", "tcav"} | ({"train", "evaluate"} if sampled else set())
            gpus = cfg.slurm.gpus if stage in model else 0
            scripts[stage] = _text(
                _header(cfg, stage, log_dir, gpus=gpus) + [f"{exe} {stage} {conf}"]
            )
    return scripts


def keeps_a_sample(cfg: Config) -> bool:
    """Will the run's store keep only a training sample (so train and evaluate run the model)?
    For `auto`, from the registry's hidden size and the data, without loading the model."""
    from esm_tcav.run.context import full_states_gib, residue_states

    if not cfg.embed.per_residue:
        return False
    gib = None
    if cfg.store.residue_states == "auto":
        from esm_tcav.models.registry import get_spec
        from esm_tcav.run.dataset import load_dataset

        try:
            spec = get_spec(cfg.model.name, cfg.path(cfg.model.registry_file))
            layers = len(spec.resolve_layers(cfg.model.layers))
            gib = full_states_gib(cfg, load_dataset(cfg), layers, spec.hidden_size)
        except EsmTcavError as exc:  # a model outside the registry, unreadable data
            log.warning(
                "slurm: cannot size the store without loading the model (%s); train and "
                "evaluate jobs ask for no GPU (store.residue_states: sample makes them)",
                exc,
            )
            return False
    return residue_states(cfg, gib) == "sample"


def write_scripts(cfg: Config, config_path: Path, exe: str | None = None) -> dict[str, Path]:
    """Write one script per job under `<output_dir>/slurm/`; returns {job name: path}."""
    check_output_dir(cfg.out, "output_dir")
    return _write(cfg.out / "slurm", pipeline_scripts(cfg, config_path, exe))


def scan_scripts(
    cfg: Config,
    fasta: Path,
    library: Path,
    out: Path,
    exe: str | None = None,
    store: Path | None = None,
) -> dict[str, str]:
    """A scan as SLURM jobs: an array over `slurm.shards` contiguous blocks of the FASTA, then a
    merge job; the merged files equal an unsharded scan's. Nothing is written."""
    from esm_tcav.localize.scan import slurm_commands

    exe = exe or f"{shlex.quote(sys.executable)} -m esm_tcav"
    log_dir = Path(out).resolve() / "slurm" / "logs"
    n = cfg.slurm.shards
    device = "--device cuda" if cfg.slurm.gpus else ""
    if store is not None:
        device += f" --store {shlex.quote(str(Path(store).resolve()))}"
    cmds = slurm_commands(
        Path(fasta).resolve(),
        Path(library).resolve(),
        Path(out).resolve(),
        n,
        exe=exe,
        extra=device,
    )
    return {
        "scan": _text(
            _header(cfg, "scan", log_dir, array=f"0-{n - 1}", gpus=cfg.slurm.gpus) + [cmds["array"]]
        ),
        "merge": _text(_header(cfg, "scan-merge", log_dir) + [cmds["merge"]]),
    }


def write_scan_scripts(
    cfg: Config,
    fasta: Path,
    library: Path,
    out: Path,
    exe: str | None = None,
    store: Path | None = None,
) -> dict[str, Path]:
    check_output_dir(Path(out), "--out")
    return _write(Path(out) / "slurm", scan_scripts(cfg, fasta, library, out, exe, store))


# ---------------------------------------------------------------------- what is unfinished


def unfinished_shards(cfg: Config) -> list[int]:
    """Embedding shard indices whose proteins are not all in the store yet (reads only)."""
    from esm_tcav.engine.embed import open_store
    from esm_tcav.run.context import RunContext

    ctx = RunContext(cfg).validate()
    proteins = ctx.dataset.proteins
    store = open_store(cfg, ctx.loaded)
    n = cfg.slurm.shards
    return [i for i in range(n) if store.missing(proteins[i::n], ctx.layers, ctx.residue_keep)]


def unfinished_stages(cfg: Config, stages: list[str]) -> list[str]:
    """The stages from the first one not recorded as done (for this config) to the end."""
    from esm_tcav.report.results import RunManifest

    try:
        manifest = RunManifest.read(cfg.out / "run_manifest.json")
    except (OSError, ValueError):
        manifest = None
    done = set()
    if manifest is not None:
        raw = json.loads((cfg.out / "run_manifest.json").read_text())
        if raw.get("config") == json.loads(json.dumps(cfg.snapshot(), default=str)):
            done = set(manifest.steps)
    for k, stage in enumerate(stages):
        if stage not in done:
            return stages[k:]
    return []


def unfinished_scan_shards(out: Path, n: int) -> list[int]:
    """Scan shards of `out` without a complete checkpoint."""
    from esm_tcav.localize.scan import CHECKPOINT

    todo = []
    for i in range(n):
        path = Path(out) / "shards" / f"{i}-of-{n}" / CHECKPOINT
        try:
            complete = bool(json.loads(path.read_text()).get("complete"))
        except (OSError, ValueError):
            complete = False
        if not complete:
            todo.append(i)
    return todo


def _scan_merged(out: Path, n: int) -> bool:
    try:
        return json.loads((Path(out) / "summary.json").read_text()).get("merged_shards") == n
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------- submitting


def _sbatch(args: list[str]) -> str:
    try:
        out = subprocess.run(
            ["sbatch", "--parsable", *args], capture_output=True, text=True, check=True
        )
    except FileNotFoundError:
        raise EsmTcavError(
            "sbatch not found: run this on a SLURM login node, or use `esm-tcav run` locally"
        ) from None
    except subprocess.CalledProcessError as exc:
        raise EsmTcavError(f"sbatch failed: {exc.stderr.strip() or exc.stdout.strip()}") from None
    return out.stdout.strip().split(";")[0]


def _plan_text(plan: dict[str, str | None]) -> str:
    lines = ["# plan (what would be submitted):"]
    for name, how in plan.items():
        lines.append(f"#   {name}: {how}" if how else f"#   {name}: finished, not submitted")
    return "\n".join(lines)


def _show(folder: Path, scripts: dict[str, str], plan: dict[str, str | None]) -> str:
    shown = "\n".join(f"# ---- {folder / (k + '.sbatch')}\n{v}" for k, v in scripts.items())
    return shown + _plan_text(plan) + "\n"


def _submit_chain(paths: dict[str, Path], plan: dict[str, str | None], first: list[str]) -> dict:
    """sbatch the planned jobs in order, each depending on the one before (afterok)."""
    jobs: dict[str, str] = {}
    previous = None
    for name, how in plan.items():
        if how is None:
            continue
        args = list(first) if name == next(iter(plan)) else []
        dep = [f"--dependency=afterok:{previous}"] if previous else []
        previous = jobs[name] = _sbatch([*dep, *args, str(paths[name])])
    return jobs


def _carry_out(
    out: Path,
    what: str,
    scripts: dict[str, str],
    plan: dict[str, str | None],
    array: list[int] | None,
    submit: bool,
    dry_run: bool,
) -> dict:
    """Print (dry run: nothing written), write, or write and submit the planned jobs; `array`
    restricts the first (array) job to those tasks."""
    folder = Path(out) / "slurm"
    if dry_run:
        return {"plan": plan, "text": _show(folder, scripts, plan)}
    check_output_dir(out, what)
    paths = _write(folder, scripts)
    shown = {"scripts": {k: str(v) for k, v in paths.items()}, "plan": plan}
    if not submit:
        return {**shown, "text": _show(folder, scripts, plan)}
    first = [f"--array={','.join(map(str, array))}"] if array else []
    jobs = _submit_chain(paths, plan, first)
    atomic_write_text(folder / "jobs.json", json.dumps(jobs, indent=1))
    return {"jobs": jobs, **shown}


def run_slurm_scan(
    cfg: Config,
    fasta: Path,
    library: Path,
    out: Path,
    submit: bool = False,
    exe: str | None = None,
    dry_run: bool = False,
    only_failed: bool = False,
    store: Path | None = None,
) -> dict:
    out = Path(out)
    n = cfg.slurm.shards
    scripts = scan_scripts(cfg, fasta, library, out, exe, store)
    todo = unfinished_scan_shards(out, n) if only_failed else list(range(n))
    merged = only_failed and not todo and _scan_merged(out, n)
    plan: dict[str, str | None] = {
        "scan": f"array {','.join(map(str, todo))}" if todo else None,
        "merge": None if merged else "after the scan shards",
    }
    array = todo if only_failed else None
    return _carry_out(out, "--out", scripts, plan, array, submit, dry_run)


def run_slurm(
    cfg: Config,
    config_path: Path,
    submit: bool = False,
    dry_run: bool = False,
    only_failed: bool = False,
    exe: str | None = None,
) -> dict:
    scripts = pipeline_scripts(cfg, config_path, exe)
    n = cfg.slurm.shards
    stages = [s for s in scripts if s != "embed"]
    if only_failed:
        todo = unfinished_shards(cfg)
        rerun = stages if todo else unfinished_stages(cfg, stages)
    else:
        todo, rerun = list(range(n)), stages
    plan: dict[str, str | None] = {"embed": f"array {','.join(map(str, todo))}" if todo else None}
    plan.update({s: ("after the jobs before it" if s in rerun else None) for s in stages})
    array = todo if only_failed else None
    return _carry_out(cfg.out, "output_dir", scripts, plan, array, submit, dry_run)
