"""`esm-tcav run`: chain the stages from one config, reuse finished work, keep a run manifest.

Every stage, whether run by `run`, alone from the CLI, or as a SLURM job, records itself in
`run_manifest.json` (timings, results, model fingerprint, data hashes, package version).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

from esm_tcav._version import __version__
from esm_tcav.config import STEPS
from esm_tcav.errors import ConfigError, InputError
from esm_tcav.io.files import atomic_write_text, content_hash
from esm_tcav.io.locks import folder_lock

if TYPE_CHECKING:
    from esm_tcav.run.context import RunContext

log = logging.getLogger("esm_tcav.run.pipeline")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stage(ctx: RunContext, step: str, force: bool, **kwargs):
    if step == "embed":
        from esm_tcav.engine.embed import run_embed

        return run_embed(ctx, force=force, **kwargs)
    if step == "train":
        from esm_tcav.concepts.train import run_train

        return run_train(ctx, force=force)
    if step == "evaluate":
        from esm_tcav.concepts.evaluate import run_evaluate

        return run_evaluate(ctx)
    if step == "detect":
        from esm_tcav.localize.detect import run_detect

        show = kwargs.pop("show", None)
        result = run_detect(ctx, **kwargs)
        if kwargs.get("input_path") is not None:  # new proteins: the page that ranks them
            from esm_tcav.report.proteins_view import detect_view

            result["view"] = str(detect_view(Path(result["output"]), show))
        return result
    if step == "tcav":
        if ctx.loaded.head_kind is None:
            log.warning("tcav skipped: model %s has no classification or LM head", ctx.model_name)
            return {"skipped": "the model has no sequence-classification or masked-LM head"}
        from esm_tcav.concepts.tcav import run_tcav

        return run_tcav(ctx)
    if step == "report":
        from esm_tcav.report.render import run_report

        return {"report": str(run_report(ctx))}
    raise ConfigError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")


# stages after `train` whose results depend only on the config, the trained CAVs and the model
_DERIVED = ("evaluate", "detect", "tcav")


def _inputs_key(ctx: RunContext, step: str) -> str | None:
    """Content key of a derived stage: the config, the latest CAV version's inputs, the model."""
    from esm_tcav.concepts.artifacts import latest_version, load_summary
    from esm_tcav.report.results import TrainSummary

    version = latest_version(ctx.out, ctx.model_name)
    if version is None:
        return None
    summary = TrainSummary.parse(load_summary(ctx.out, ctx.model_name, version))
    return content_hash(
        {
            "step": step,
            "config": ctx.cfg.snapshot(),
            "version": version,
            "cav_inputs": summary.inputs_hash,
            "fingerprint": ctx.loaded.fingerprint,
            "package": __version__,
        }
    )


def _reusable(ctx: RunContext, step: str, key: str | None) -> dict | None:
    from esm_tcav.report.results import RunManifest

    if key is None:
        return None
    try:
        manifest = RunManifest.read(ctx.out / "run_manifest.json")
    except (OSError, ValueError):
        return None
    done = manifest.steps.get(step) if manifest is not None else None
    if done is None:
        return None
    result = done.result_doc
    outputs = [Path(p) for p in (result.get("output"), result.get("path")) if p]
    if done.inputs_key != key or not all(p.exists() for p in outputs):
        return None
    return result


def validate_step(ctx: RunContext, step: str, input_path: Path | None = None) -> None:
    """Everything `step` needs, checked before anything is written (see RunContext.validate)."""
    if step not in STEPS:
        raise ConfigError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")
    needs = step != "report"  # the report reads the folder only
    ctx.validate(model=needs, data=needs)
    if input_path is not None and not Path(input_path).is_file():
        raise InputError(
            f"{input_path}: input file not found; give a FASTA, JSONL, TMbed or UniProt file "
            "with --input"
        )


def run_step(ctx: RunContext, step: str, force: bool = False, **kwargs):
    """Run one stage and record it in the run manifest.

    Order: validate (config, inputs, model, device, output location), take the output
    folder's lock, only then create files. `embed` and `train` reuse stored work themselves;
    `evaluate`, `detect` and `tcav` are skipped when the config, the trained CAVs and the model
    are those of their recorded run (unless `force`, or `detect --input`). Sharded embed jobs
    (SLURM array tasks) lock their shard only, so they run side by side.
    """
    validate_step(ctx, step, kwargs.get("input_path"))
    shard = kwargs.get("shard") if step == "embed" else None
    lock_name = f"embed-shard-{shard[0]}-of-{shard[1]}" if shard else ""
    with folder_lock(ctx.out, what=f"esm-tcav {step}", name=lock_name):
        ctx.prepare()
        key = _inputs_key(ctx, step) if step in _DERIVED and not kwargs.get("input_path") else None
        if not force and (stored := _reusable(ctx, step, key)) is not None:
            log.info("%s: inputs unchanged, reusing the recorded results", step)
            return {**stored, "reused": True}
        if step in ("embed", "train"):
            ctx.say_selection()
        t0 = time.perf_counter()
        result = _stage(ctx, step, force, **kwargs)
        # array tasks share the manifest: its read-modify-write is serialized
        with folder_lock(ctx.out, what="manifest update", name="manifest", wait_s=120):
            record_step(ctx, step, time.perf_counter() - t0, result, inputs_key=key)
        return result


def record_step(
    ctx: RunContext, step: str, seconds: float, result, inputs_key: str | None = None
) -> None:
    path = ctx.out / "run_manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        manifest = {}
    cfg = ctx.cfg
    data_files = {
        name: cfg.path(value)
        for name, value in cfg.data.model_dump().items()
        if name in {"positives", "negatives", "spans_file", "test_positives", "test_negatives"}
        and value
    }
    manifest.update(
        {
            "package": "esm-tcav",
            "version": __version__,
            "python": platform.python_version(),
            "seed": cfg.seed,
            "config": cfg.snapshot(),
            "data": {
                k: {"path": str(p), "sha256": _file_sha256(p)}
                for k, p in data_files.items()
                if p.is_file()
            },
        }
    )
    if ctx.model_loaded:
        manifest["model"] = {
            "name": ctx.model_name,
            "fingerprint": ctx.loaded.fingerprint,
            "source": ctx.loaded.source,
            "layers": ctx.layers,
            "head": ctx.loaded.head_kind,
        }
    manifest.setdefault("steps", {})[step] = {
        "seconds": round(seconds, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "result": result,
        "inputs_key": inputs_key,
    }
    atomic_write_text(path, json.dumps(manifest, indent=1, default=str))


def run_pipeline(ctx: RunContext, force: bool = False, steps: list[str] | None = None) -> dict:
    """Run the chosen steps in pipeline order; returns timings per step."""
    chosen = steps or ctx.cfg.steps
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        raise ConfigError(f"unknown step {unknown[0]!r}; steps are {', '.join(STEPS)}")
    for step in chosen:
        validate_step(ctx, step)
    total = time.perf_counter()
    timings = {}
    with folder_lock(ctx.out, what="esm-tcav run"):
        for step in STEPS:
            if step in chosen:
                t0 = time.perf_counter()
                run_step(ctx, step, force)
                timings[step] = round(time.perf_counter() - t0, 2)
                log.info("step %s done in %.1f s", step, timings[step])
    return {
        "output_dir": str(ctx.out),
        "seconds": round(time.perf_counter() - total, 2),
        "steps": timings,
    }


def summary_text(ctx: RunContext, timings: dict) -> str:
    """What a user wants to read after `run`: the verdict per layer, detection, TCAV, where."""
    from esm_tcav.report.results import Detection, RunManifest, TcavScores, TrainSummary

    try:
        manifest = RunManifest.read(ctx.out / "run_manifest.json") or RunManifest()
    except (OSError, ValueError):
        manifest = RunManifest()
    lines = []
    train = TrainSummary.parse(manifest.result("train"))
    if train.layers:
        lines.append(
            f"concept {train.concept!r} in {train.model} "
            f"(CAV v{train.version}, {train.n_random} random CAVs):"
        )
        for layer, s in train.layers.items():
            best = "  <- best" if int(layer) == train.best_layer else ""
            lines.append(f"  layer {layer}: {s.verdict}{best}")
    det = Detection.parse(manifest.result("detect"))
    metrics = det.metrics
    if metrics is not None and metrics.residue.f1 is not None:
        lines.append(
            f"detection (layer {det.layer}, {det.proteins} held-out proteins): "
            f"residue F1 {metrics.residue.f1:.3f}, mean IoU {metrics.mean_iou or 0:.3f}"
            f", domains hit {metrics.hit_rate_iou50 or 0:.1%}, false spans per 1,000 "
            f"negative residues {metrics.false_spans_per_kres or 0:.2f}"
        )
    tcav = TcavScores.parse(manifest.result("tcav"))
    for layer, s in tcav.layers.items():
        if s.testable and s.p is not None:
            word = "significant" if s.significant else "not significant"
            lines.append(
                f"TCAV layer {layer}: score {s.score:.2f} vs random "
                f"{s.random_mean:.2f} ± {s.random_sd:.2f}, p = {s.p:.3g}, "
                f"q = {s.q:.3g}: {word}"
            )
    total = sum(timings.values())
    lines.append(
        f"done in {total:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ")"
    )
    if (ctx.out / "report.html").is_file():
        lines.append(f"report: {ctx.out / 'report.html'}")
    return "\n".join(lines)
