"""A results folder read once for the report: every stage's records, and what could not be read.

A broken or missing file costs its part (kept in `errors`), never the whole report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

from esm_tcav.report.results import (
    ConfigView,
    Detection,
    Evaluation,
    LayerEvaluation,
    LayerReport,
    LayerThresholds,
    RunManifest,
    StepRecord,
    TcavScores,
    TrainSummary,
    read_json,
)

log = logging.getLogger("esm_tcav.report.data")

T = TypeVar("T")


def rel(out: Path, path: Path) -> str:
    """`path` relative to the results folder when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path(out).resolve()))
    except ValueError:
        return str(path)


class RunData:
    """Everything the report shows, read once from a results folder; errors kept per part."""

    def __init__(self, out: Path, model: str | None = None, config_text: str | None = None):
        self.out = Path(out)
        self.errors: dict[str, str] = {}
        self.manifest: RunManifest | None = self._try(
            "manifest", lambda: RunManifest.read(self.out / "run_manifest.json")
        )
        snap = self.out / "config.snapshot.yaml"
        self.config_text = config_text or (snap.read_text() if snap.is_file() else None)
        raw = self._try(
            "config", lambda: yaml.safe_load(self.config_text) if self.config_text else None
        )
        self.config = ConfigView.parse(raw if isinstance(raw, dict) else {})
        self.model: str | None = model or self._guess_model()
        self.summary: TrainSummary | None = None
        self.layer_reports: dict[str, LayerReport] = {}
        self.layer_thresholds: dict[str, LayerThresholds] = {}
        self.package_version: str | None = None  # from a layer's manifest.json
        self.evaluation: Evaluation | None = None
        self.eval_dir: Path | None = None
        self.detection: Detection | None = None
        self.other_detections: list[Detection] = []
        self.tcav: TcavScores | None = None
        if self.model:
            self._try("train", self._read_train)
            self._try("evaluate", self._read_evaluation)
            self._try("detect", self._read_detection)
            self._try("tcav", self._read_tcav)

    def _try(self, part: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as exc:  # a broken file must not stop the report: show the error
            self.errors[part] = f"{type(exc).__name__}: {exc}"
            log.warning("report: could not read the %s results: %s", part, exc)
            return None

    def _guess_model(self) -> str | None:
        """The model's name without loading the model."""
        if self.manifest is not None and self.manifest.model.name:
            return self.manifest.model.name
        candidates: set[str] = set()
        for sub in ("cavs", "evaluations", "detections", "tcav"):
            d = self.out / sub
            if d.is_dir():
                candidates |= {
                    p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                }
        configured = self.config.model_name
        if configured and (configured in candidates or not candidates):
            return configured
        if len(candidates) == 1:
            return candidates.pop()
        return None

    def _read_train(self) -> None:
        from esm_tcav.concepts.artifacts import concept_dir, latest_version, load_summary

        version = latest_version(self.out, self.model)
        if version is None:
            return
        self.summary = TrainSummary.parse(load_summary(self.out, self.model, version))
        for key in self.summary.layers:
            folder = concept_dir(self.out, self.model, int(key), version)
            for name in ("report.json", "thresholds.json", "manifest.json"):
                try:
                    doc = read_json(folder / name)
                except (OSError, json.JSONDecodeError) as exc:
                    self.errors[f"train L{key} {name}"] = str(exc)
                    doc = None
                if doc is None:
                    continue
                if name == "report.json":
                    self.layer_reports[key] = LayerReport.parse(doc)
                elif name == "thresholds.json":
                    self.layer_thresholds[key] = LayerThresholds.parse(doc)
                elif self.package_version is None and doc.get("package_version") is not None:
                    self.package_version = str(doc["package_version"])

    def _read_evaluation(self) -> None:
        folder = self.out / "evaluations" / self.model
        self.eval_dir = folder if folder.is_dir() else None
        doc = read_json(folder / "projection_eval.json")
        self.evaluation = None if doc is None else Evaluation.parse(doc)

    def _read_detection(self) -> None:
        root = self.out / "detections" / self.model
        if not root.is_dir():
            return
        found: list[tuple[float, Detection]] = []
        for path in root.glob("*/*/summary.json"):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue  # a run in progress or an old copy being replaced
            try:
                doc = read_json(path)
                if doc is not None:
                    found.append((path.stat().st_mtime, Detection.parse(doc, path.parent)))
            except (OSError, json.JSONDecodeError) as exc:
                self.errors["detect"] = f"{rel(self.out, path)}: {exc}"
        if not found:
            return
        # the held-out test set is the one the report is about; newest first otherwise
        # (one-pass mode before the sliding-window comparison mode)
        found.sort(
            key=lambda f: (f[1].set == "test", f[1].mode != "sliding-window", f[0]),
            reverse=True,
        )
        self.detection = found[0][1]
        self.other_detections = [d for _, d in found[1:]]

    def _read_tcav(self) -> None:
        folder = self.out / "tcav" / self.model
        doc = read_json(folder / "tcav_scores.json")
        self.tcav = None if doc is None else TcavScores.parse(doc, folder)

    # ------------------------------------------------------------------ what several parts use
    @property
    def concept(self) -> str:
        for doc in (self.summary, self.detection, self.tcav):
            if doc is not None and doc.concept:
                return doc.concept
        return self.config.concept or "concept"

    @property
    def fingerprint(self) -> str | None:
        model = self.manifest.model if self.manifest is not None else None
        for doc in (model, self.summary, self.detection, self.tcav):
            if doc is not None and doc.fingerprint:
                return doc.fingerprint
        return None

    @property
    def alpha(self) -> float:
        for doc in (self.summary, self.tcav):
            if doc is not None and doc.alpha is not None:
                return doc.alpha
        return self.config.alpha or 0.05

    def step(self, name: str) -> StepRecord | None:
        return self.manifest.steps.get(name) if self.manifest is not None else None

    def eval_layer(self, key: str) -> LayerEvaluation:
        """Per-layer intervals (empty when evaluate has not run)."""
        return self.evaluation.layer(key) if self.evaluation is not None else LayerEvaluation()
