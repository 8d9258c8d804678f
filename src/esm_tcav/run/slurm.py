"""`esm-tcav slurm`: an embedding job array over shards, then stage jobs chained by afterok.

Array tasks write shards straight into the run's embedding store, which is all a merge needs;
the later jobs are the same verbs a local run uses, so results match a local run.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from esm_tcav.config import Config
from esm_tcav.errors import EsmTcavError
from esm_tcav.io.files import atomic_write_text

STAGES = ("train", "evaluate", "detect", "tcav", "report")


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
        lines.append(f"#SBATCH --output={log_dir}/{name}-%A_%a.out")
    else:
        lines.append(f"#SBATCH --output={log_dir}/{name}-%j.out")
    lines += [f"#SBATCH {x}" for x in s.extra_sbatch]
    lines += ["set -euo pipefail"]
    if s.setup:
        lines.append(s.setup)
    return lines


def _write(folder: Path, scripts: dict[str, list[str]]) -> dict[str, Path]:
    """One `<name>.sbatch` per job, each written atomically."""
    paths = {}
    for name, lines in scripts.items():
        path = folder / f"{name}.sbatch"
        atomic_write_text(path, "\n".join(lines) + "\n")
        paths[name] = path
    return paths


def write_scripts(cfg: Config, config_path: Path, exe: str | None = None) -> dict[str, Path]:
    """Write one script per job under `<output_dir>/slurm/`; returns {job name: path}."""
    exe = exe or f"{shlex.quote(sys.executable)} -m esm_tcav"
    folder = cfg.out / "slurm"
    log_dir = folder / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    conf = shlex.quote(str(config_path))
    if cfg.store.path:  # a --store given to `esm-tcav slurm` reaches every job
        conf += f" --store {shlex.quote(str(cfg.store_dir))}"
    n = cfg.slurm.shards
    scripts = {
        "embed": _header(cfg, "embed", log_dir, array=f"0-{n - 1}", gpus=cfg.slurm.gpus)
        + [f'{exe} embed {conf} --shard "${{SLURM_ARRAY_TASK_ID}}/{n}"'],
    }
    for stage in STAGES:
        if stage in cfg.steps:
            gpus = cfg.slurm.gpus if stage in {"detect", "tcav"} else 0
            scripts[stage] = _header(cfg, stage, log_dir, gpus=gpus) + [f"{exe} {stage} {conf}"]
    return _write(folder, scripts)


def write_scan_scripts(
    cfg: Config,
    fasta: Path,
    library: Path,
    out: Path,
    exe: str | None = None,
    store: Path | None = None,
) -> dict[str, Path]:
    """A scan as SLURM jobs: an array over `slurm.shards` contiguous blocks of the FASTA, then a
    merge job; the merged files equal an unsharded scan's."""
    from esm_tcav.localize.scan import slurm_commands

    exe = exe or f"{shlex.quote(sys.executable)} -m esm_tcav"
    folder = Path(out) / "slurm"
    log_dir = folder / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
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
    scripts = {
        "scan": _header(cfg, "scan", log_dir, array=f"0-{n - 1}", gpus=cfg.slurm.gpus)
        + [cmds["array"]],
        "merge": _header(cfg, "scan-merge", log_dir) + [cmds["merge"]],
    }
    return _write(folder, scripts)


def run_slurm_scan(
    cfg: Config,
    fasta: Path,
    library: Path,
    out: Path,
    submit: bool = False,
    exe: str | None = None,
    store: Path | None = None,
) -> dict:
    paths = write_scan_scripts(cfg, fasta, library, out, exe, store)
    if not submit:
        text = "\n".join(f"# ---- {p}\n{p.read_text()}" for p in paths.values())
        return {"scripts": {k: str(v) for k, v in paths.items()}, "text": text}
    jobs = {"scan": _sbatch([str(paths["scan"])])}
    jobs["merge"] = _sbatch([f"--dependency=afterok:{jobs['scan']}", str(paths["merge"])])
    return {"jobs": jobs, "scripts": {k: str(v) for k, v in paths.items()}}


def unfinished_shards(cfg: Config) -> list[int]:
    """Shard indices whose proteins are not all in the store yet (to resubmit those alone)."""
    from esm_tcav.run.context import RunContext

    ctx = RunContext.open(cfg)
    proteins = ctx.dataset.proteins
    n = cfg.slurm.shards
    return [
        i for i in range(n) if ctx.store.missing(proteins[i::n], ctx.layers, cfg.embed.per_residue)
    ]


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


def run_slurm(
    cfg: Config,
    config_path: Path,
    submit: bool = False,
    dry_run: bool = False,
    only_failed: bool = False,
    exe: str | None = None,
) -> dict:
    paths = write_scripts(cfg, config_path, exe)
    if dry_run or not submit:
        text = "\n".join(f"# ---- {p}\n{p.read_text()}" for p in paths.values())
        return {"scripts": {k: str(v) for k, v in paths.items()}, "text": text}
    jobs: dict[str, str] = {}
    embed_args = [str(paths["embed"])]
    if only_failed:
        todo = unfinished_shards(cfg)
        if todo:
            embed_args = [f"--array={','.join(map(str, todo))}", str(paths["embed"])]
        else:
            embed_args = []
    previous = None
    if embed_args:
        previous = jobs["embed"] = _sbatch(embed_args)
    for stage in STAGES:
        if stage not in paths:
            continue
        dep = [f"--dependency=afterok:{previous}"] if previous else []
        previous = jobs[stage] = _sbatch([*dep, str(paths[stage])])
    record = cfg.out / "slurm" / "jobs.json"
    atomic_write_text(record, json.dumps(jobs, indent=1))
    return {"jobs": jobs, "scripts": {k: str(v) for k, v in paths.items()}}
