"""`esm-tcav run`: chain the stages from one config, reuse finished work, keep a run manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from pathlib import Path

from . import __version__
from .config import STEPS
from .errors import ConfigError

log = logging.getLogger("esm_tcav.pipeline")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stage(ctx, step: str, force: bool):
    if step == "embed":
        from .embed import run_embed

        return run_embed(ctx, force=force)
    if step == "train":
        from .train import run_train

        return run_train(ctx, force=force)
    if step == "evaluate":
        from .evaluate import run_evaluate

        return run_evaluate(ctx)
    if step == "detect":
        from .detect import run_detect

        return run_detect(ctx)
    if step == "tcav":
        if ctx.loaded.head_kind is None:
            log.warning("tcav skipped: model %s has no classification or LM head",
                        ctx.model_name)
            return {"skipped": "the model has no sequence-classification or masked-LM head"}
        from .tcav import run_tcav

        return run_tcav(ctx)
    if step == "report":
        from .report import run_report

        return {"report": str(run_report(ctx))}
    raise ConfigError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")


def run_pipeline(ctx, force: bool = False, steps: list[str] | None = None) -> dict:
    """Run the chosen steps in pipeline order; returns the run manifest."""
    chosen = steps or ctx.cfg.steps
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        raise ConfigError(f"unknown step {unknown[0]!r}; steps are {', '.join(STEPS)}")
    cfg = ctx.cfg
    data_files = {
        name: cfg.path(value) for name, value in cfg.data.model_dump().items()
        if name in {"positives", "negatives", "spans_file", "test_positives", "test_negatives"}
        and value
    }
    manifest = {
        "package": "esm-tcav", "version": __version__, "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": cfg.seed,
        "config": cfg.snapshot(),
        "data": {k: {"path": str(p), "sha256": _file_sha256(p)} for k, p in data_files.items()
                 if p.is_file()},
        "steps": {},
    }
    total = time.perf_counter()
    for step in STEPS:
        if step not in chosen:
            continue
        t0 = time.perf_counter()
        result = _stage(ctx, step, force)
        manifest["steps"][step] = {"seconds": round(time.perf_counter() - t0, 2),
                                   "result": result}
        if step == "embed":
            manifest["model"] = {"name": ctx.model_name, "fingerprint": ctx.loaded.fingerprint,
                                 "source": ctx.loaded.source, "layers": ctx.layers}
        _write_manifest(ctx.out / "run_manifest.json", manifest)
        log.info("step %s done in %.1f s", step, manifest["steps"][step]["seconds"])
    manifest["seconds"] = round(time.perf_counter() - total, 2)
    if "model" not in manifest and "loaded" in ctx.__dict__:
        manifest["model"] = {"name": ctx.model_name, "fingerprint": ctx.loaded.fingerprint,
                             "source": ctx.loaded.source, "layers": ctx.layers}
    _write_manifest(ctx.out / "run_manifest.json", manifest)
    return {"output_dir": str(ctx.out), "seconds": manifest["seconds"],
            "steps": {k: v["seconds"] for k, v in manifest["steps"].items()}}


def _write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    tmp.replace(path)
