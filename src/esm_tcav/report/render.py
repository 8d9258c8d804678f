"""`esm-tcav report`: the one self-contained `report.html` a biologist reads first.

It reads what the other stages left in the results folder (through `report.data`, which parses
every file into typed records) and writes no numbers of its own. The page is rendered from the
Jinja templates in `report/templates/` with autoescaping on, so every value taken from data is
HTML-escaped without anyone having to remember it.

Sections: the verdict in words, per-layer AUROC with intervals and random baselines, thresholds,
detection metrics with heatmaps, TCAV scores, provenance. A stage that has not run (or whose
files cannot be read) is shown as "not run" (or with the reading error); it never stops the
report. Figures are inlined as base64 PNG, there is no script and nothing loads from the network,
so the file can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from esm_tcav._version import __version__
from esm_tcav.engine.context import StageContext
from esm_tcav.report.data import RunData, rel
from esm_tcav.report.formats import (  # noqa: F401 (the formatters are part of this API)
    FILTERS,
    fmt_2,
    fmt_auc,
    fmt_ci,
    fmt_int,
    fmt_p,
    fmt_threshold,
    p_in_words,
)
from esm_tcav.report.results import (
    Detection,
    LayerTrain,
    RunManifest,
    StepRecord,
    TrainSummary,
    read_protein_rows,
)

log = logging.getLogger("esm_tcav.report.render")

REPORT_NAME = "report.html"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("verdict", "layers", "thresholds", "detection", "tcav", "provenance")

METHOD_WORDS = {
    "f1_max": "best F1",
    "precision_at_recall": "best precision at recall ≥ target",
    "fpr": "false-positive rate ≤ target",
}
MODE_WORDS = {
    "one-pass": "one forward pass per protein",
    "sliding-window": "sliding windows, each embedded as its own sequence",
}
_HEATMAP_REASONS = {
    "top": "among the best by IoU",
    "bottom": "among the worst by IoU",
    "random": "drawn at random",
}
_EVAL_FIGURES = (
    (
        "auroc_by_layer.png",
        "Concept AUROC per layer with its bootstrap interval (blue) over the "
        "random CAVs' AUROCs (grey dots); the dashed line is chance.",
    ),
    (
        "roc_pr_curves.png",
        "ROC and precision-recall curves of the concept CAV on held-out "
        "proteins, one line per layer.",
    ),
)


# ---------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    """A PNG inlined as a data: URI, or the reason it is left out."""

    name: str
    alt: str
    src: str | None = None
    problem: str | None = None


def embed_png(path: Path | None, alt: str) -> Figure:
    if path is None or not Path(path).is_file():
        name = path.name if path else alt
        return Figure(name, alt, problem=f"Figure not found: {name}.")
    data = Path(path).read_bytes()
    if not data.startswith(_PNG_MAGIC):
        return Figure(path.name, alt, problem=f"Figure {Path(path).name} is not a PNG; left out.")
    return Figure(path.name, alt, src="data:image/png;base64," + base64.b64encode(data).decode())


@dataclass(frozen=True)
class Heatmap:
    figure: Figure
    protein_id: str
    facts: list[str]


def _heatmaps(det: Detection) -> list[Heatmap]:
    """detect's score tracks with the facts of their protein (from proteins.tsv)."""
    assert det.folder is not None
    rows = read_protein_rows(det.folder / "proteins.tsv")
    found = []
    for name in det.heatmaps:
        stem = Path(name).stem
        bits = stem.split("_", 2)
        reason = _HEATMAP_REASONS.get(bits[1] if len(bits) > 1 else "", "")
        file_id = bits[2] if len(bits) > 2 else stem  # the ID as the file name spells it
        row = rows.get(file_id, {})
        pid = row.get("protein_id", file_id)
        facts = [reason] if reason else []
        if row:
            facts += [
                f"{fmt_int(row.get('length'))} residues",
                f"{fmt_int(row.get('annotated_spans'))} annotated, "
                f"{fmt_int(row.get('predicted_spans'))} predicted spans",
                f"mean IoU {fmt_2(row.get('mean_iou'))}",
                f"residue F1 {fmt_2(row.get('residue_f1'))}",
            ]
        found.append(Heatmap(embed_png(det.folder / name, f"score track of {pid}"), pid, facts))
    return found


def _eval_figures(folder: Path) -> list[tuple[Figure, str]]:
    """The evaluate step's summary figures that exist, with their captions."""
    return [(embed_png(folder / n, n), cap) for n, cap in _EVAL_FIGURES if (folder / n).is_file()]


def _random_comparisons(folder: Path) -> list[Figure]:
    def layer_of(p: Path) -> int:
        return int("".join(c for c in p.name.split("_")[0] if c.isdigit()) or 0)

    paths = sorted(folder.glob("L*_random_comparison.png"), key=layer_of)
    return [embed_png(p, p.name) for p in paths]


# ---------------------------------------------------------------------- what the sections compute


def best_key(s: TrainSummary) -> str | None:
    """The layer the verdict is about: the recorded best, else the first."""
    best = s.best_layer
    if best is not None and str(best) in s.layers:
        return str(best)
    return next(iter(s.layers), None)


def random_advice_n(row: LayerTrain, alpha: float) -> int | None:
    """How many random CAVs p needs to reach α, when too few were trained (else None)."""
    if row.min_p is None or row.min_p <= alpha:
        return None
    return math.ceil(1 / alpha) - 1


def step_words(name: str, result: object) -> str:
    """One line per recorded stage for the timings table."""
    if not isinstance(result, dict):
        return "" if result is None else str(result)
    if result.get("skipped"):
        return f"skipped: {result['skipped']}"
    if name == "embed":
        return (
            f"{fmt_int(result.get('proteins'))} proteins: {fmt_int(result.get('embedded_now'))}"
            f" embedded now, {fmt_int(result.get('reused'))} reused from the store"
        )
    if name == "train":
        s = TrainSummary.parse(result)
        return f"{'reused' if s.reused else 'trained'} CAV version v{_text(s.version)}"
    if name == "detect":
        d = Detection.parse(result)
        return (
            f"{fmt_int(d.spans)} spans on {fmt_int(d.proteins)} proteins at layer {_text(d.layer)}"
        )
    n_layers = len(result["layers"]) if isinstance(result.get("layers"), dict) else 0
    if name == "evaluate":
        return (
            f"intervals and figures for CAV version v{_text(result.get('cav_version'))}, "
            f"{n_layers} layers"
        )
    if name == "tcav":
        return f"TCAV on {fmt_int(result.get('proteins'))} proteins, {n_layers} layers"
    if name == "report":
        return "report.html"
    keys = [k for k in ("version", "layers", "output") if k in result]
    return ", ".join(f"{k}: {result[k] if k != 'layers' else len(result[k])}" for k in keys)


def steps_in_order(d: RunData) -> list[tuple[str, StepRecord]]:
    """The recorded stages but `report`, in pipeline order."""
    from esm_tcav.config import STEPS

    steps = d.manifest.steps if d.manifest is not None else {}
    shown = [(k, v) for k, v in steps.items() if k != "report"]
    return sorted(shown, key=lambda kv: STEPS.index(kv[0]) if kv[0] in STEPS else 99)


def _text(x: object) -> str:
    return "" if x is None else str(x)


def model_description(d: RunData) -> str | None:
    """The registry's one-line description of the model (None when it is not registered)."""
    if not d.model:
        return None
    try:
        from esm_tcav.models.registry import get_spec

        extra = d.config.registry_file
        spec = get_spec(d.model, extra if extra and Path(extra).is_file() else None)
    except Exception:  # a user's registry entry may be gone; the name is enough
        return None
    return spec.description or None


# ---------------------------------------------------------------------- assembling


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("esm_tcav.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=lambda x: "" if x is None else x,
    )
    env.filters.update(FILTERS)
    env.filters["rel"] = lambda path, out: rel(out, path)
    env.filters["normpath"] = lambda p: os.path.normpath(str(p))
    env.globals.update(
        METHOD_WORDS=METHOD_WORDS,
        MODE_WORDS=MODE_WORDS,
        best_key=best_key,
        embed_png=embed_png,
        eval_figures=_eval_figures,
        heatmaps=_heatmaps,
        model_description=model_description,
        p_in_words=p_in_words,
        random_advice_n=random_advice_n,
        random_comparisons=_random_comparisons,
        step_words=step_words,
        steps_in_order=steps_in_order,
        version=__version__,
    )
    return env


def _section(name: str, d: RunData) -> Markup:
    """One section; a malformed file costs that section, not the report."""
    env = _env()
    try:
        return Markup(env.get_template(f"section_{name}.html").render(d=d))
    except Exception as exc:
        log.warning("report: section %s failed: %s", name, exc, exc_info=True)
        box = env.get_template("_macros.html").module.error_box
        return Markup("<section>") + box(name, f"{type(exc).__name__}: {exc}") + "</section>"


def render_report(d: RunData) -> str:
    """The whole HTML document for one results folder."""
    sections = [_section(name, d) for name in SECTIONS]
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return _env().get_template("report.html").render(d=d, sections=sections, generated=generated)


def write_report(
    out_dir: Path, model_name: str | None = None, config_text: str | None = None
) -> Path:
    """Read a results folder and write `report.html` into it atomically; returns its path."""
    from esm_tcav.io.files import atomic_write_text

    out_dir = Path(out_dir)
    data = RunData(out_dir, model_name, config_text)
    path = out_dir / REPORT_NAME
    atomic_write_text(path, render_report(data))
    log.info("report written to %s", path)
    return path


def _model_name(ctx: StageContext) -> str | None:
    """The model's registry name, from the files when possible (loading the model is slow)."""
    if ctx.model_loaded:
        return ctx.model_name
    try:
        manifest = RunManifest.read(ctx.out / "run_manifest.json")
    except (OSError, ValueError):
        manifest = None
    if manifest is not None and manifest.model.name:
        return manifest.model.name
    if ctx.cfg.model.name:
        return ctx.cfg.model.name
    return ctx.model_name  # no name in the config: the registry resolves it from the weights


def unverified_artifacts(out_dir: Path, model_name: str | None) -> list[str]:
    """One line per CAV artifact of the newest version whose files do not match their
    manifest (edited after training): the report shows their numbers, so it must say so."""
    from esm_tcav.concepts.artifacts import latest_version, model_dir, verify_manifest
    from esm_tcav.errors import ArtifactError

    if not model_name:
        return []
    version = latest_version(out_dir, model_name)
    problems = []
    root = model_dir(out_dir, model_name)
    for folder in sorted(root.glob(f"L*_*_v{version}")) if version is not None else []:
        try:
            verify_manifest(folder)
        except ArtifactError as exc:
            problems.append(str(exc))
    return problems


def run_report(ctx: StageContext) -> Path:
    """The `report` stage: write `<output_dir>/report.html` from what the other stages left
    (warning, on the console and in the log, about CAV files changed after training)."""
    name = _model_name(ctx)
    for problem in unverified_artifacts(ctx.out, name):
        log.warning("the report shows results of a CAV that does not verify: %s", problem)
    return write_report(ctx.out, name)
