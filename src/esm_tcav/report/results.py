"""The stages' results as typed records: each JSON file a stage leaves, parsed in one place.

Each stage leaves JSON behind (`train` → `cavs/<model>/summary_v{k}.json` and per layer
`report.json`/`thresholds.json`/`manifest.json`; `evaluate` → `projection_eval.json`; `detect`
→ `detections/<model>/<set>/L{n}/summary.json`; `tcav` → `tcav_scores.json`; every stage →
`run_manifest.json`). The `parse` functions here turn one document into a frozen dataclass and are
lenient: a missing or mistyped field becomes None (or empty), never an exception, so the report
can show what is there. Everything that reads these files (the report, `esm-tcav run`'s summary)
reads them through here (`report.data.RunData` reads a whole results folder).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from esm_tcav.report.formats import num

T = TypeVar("T")

DATA_ROLES = ("positives", "negatives", "spans_file", "test_positives", "test_negatives")


# ---------------------------------------------------------------------- lenient field access


def _map(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _str(x: Any) -> str | None:
    return None if x is None else str(x)


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _list(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else []


def _pair(x: Any) -> list | None:
    return list(x) if isinstance(x, (list, tuple)) else None


def layer_keys(d: Mapping | None) -> list[str]:
    """Layer keys of a {"4": {...}} mapping, in numeric order."""
    if not isinstance(d, Mapping):
        return []
    return sorted(d, key=lambda k: (int(k) if str(k).lstrip("-").isdigit() else 10**9, str(k)))


def _layers(d: Any, parse: Callable[[dict], T]) -> dict[str, T]:
    """A {"4": {...}} mapping parsed per layer, in numeric layer order (non-dicts as {})."""
    d = _map(d)
    return {str(k): parse(_map(d[k])) for k in layer_keys(d)}


# ---------------------------------------------------------------------- train


@dataclass(frozen=True)
class LayerTrain:
    """One layer of `summary_v{k}.json`: the held-out test of the concept CAV vs random CAVs."""

    auroc: float | None = None
    auprc: float | None = None
    residue_auroc: float | None = None
    cv_auroc_mean: float | None = None
    random_mean: float | None = None
    random_sd: float | None = None
    z: float | None = None
    p: float | None = None
    min_p: float | None = None
    q: float | None = None
    significant: bool = False
    verdict: str | None = None
    p_empirical: float | None = None
    residue_f1: float | None = None
    grade: str | None = None
    grade_reasons: tuple[str, ...] = ()
    # control name -> {what, auroc, delta_auroc, delta_ci, beaten} (concepts/controls.py)
    controls: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, d: dict) -> LayerTrain:
        nums = {
            k: num(d.get(k))
            for k in (
                "auroc",
                "auprc",
                "residue_auroc",
                "cv_auroc_mean",
                "random_mean",
                "random_sd",
                "z",
                "p",
                "min_p",
                "q",
                "p_empirical",
                "residue_f1",
            )
        }
        controls = d.get("controls") if isinstance(d.get("controls"), dict) else {}
        return cls(
            **nums,
            significant=bool(d.get("significant")),
            verdict=_str(d.get("verdict")),
            grade=_str(d.get("grade")),
            grade_reasons=tuple(str(r) for r in d.get("grade_reasons") or ()),
            controls={
                k: v for k, v in controls.items() if not k.startswith("_") and isinstance(v, dict)
            },
        )


@dataclass(frozen=True)
class TrainSummary:
    """`cavs/<model>/summary_v{k}.json` (also the `train` step's result)."""

    version: int | None = None
    concept: str | None = None
    model: str | None = None
    fingerprint: str | None = None
    granularity: str | None = None
    n_random: int | None = None
    random_mode: str | None = None
    alpha: float | None = None
    inputs_hash: str | None = None
    created: str | None = None
    path: str | None = None
    best_layer: int | None = None
    reused: bool = False
    layers: dict[str, LayerTrain] = field(default_factory=dict)

    @classmethod
    def parse(cls, d: dict) -> TrainSummary:
        return cls(
            version=_int(d.get("version")),
            concept=_str(d.get("concept")),
            model=_str(d.get("model")),
            fingerprint=_str(d.get("fingerprint")),
            granularity=_str(d.get("granularity")),
            n_random=_int(d.get("n_random")),
            random_mode=_str(d.get("random_mode")),
            alpha=num(d.get("alpha")),
            inputs_hash=_str(d.get("inputs_hash")),
            created=_str(d.get("created")),
            path=_str(d.get("path")),
            best_layer=_int(d.get("best_layer")),
            reused=bool(d.get("reused")),
            layers=_layers(d.get("layers"), LayerTrain.parse),
        )

    @property
    def significant_layers(self) -> list[str]:
        return [k for k, row in self.layers.items() if row.significant]


@dataclass(frozen=True)
class ExampleCounts:
    """How many examples (and of which unit) from how many proteins, how many in the concept."""

    unit: str = "example"
    examples: int | None = None
    proteins: int | None = None
    positive: int | None = None
    negative: int | None = None

    @classmethod
    def parse(cls, d: dict) -> ExampleCounts:
        return cls(
            unit=str(d.get("unit", "example")),
            examples=_int(d.get("examples")),
            proteins=_int(d.get("proteins")),
            positive=_int(d.get("positive")),
            negative=_int(d.get("negative")),
        )


@dataclass(frozen=True)
class Classifier:
    name: str | None = None
    C: float | None = None
    pca_components_used: int | None = None
    pca_explained_variance: float | None = None

    @classmethod
    def parse(cls, d: dict) -> Classifier | None:
        if not d:
            return None
        c = d.get("C")
        return cls(
            name=_str(d.get("name")),
            C=c if isinstance(c, (int, float)) and not isinstance(c, bool) else None,
            pca_components_used=_int(d.get("pca_components_used")),
            pca_explained_variance=num(d.get("pca_explained_variance")),
        )


@dataclass(frozen=True)
class LayerReport:
    """`L{n}_concept_v{k}/report.json`: what one layer's CAV was trained and tested on."""

    heldout: ExampleCounts
    train: ExampleCounts
    classifier: Classifier | None

    @classmethod
    def parse(cls, d: dict) -> LayerReport:
        return cls(
            heldout=ExampleCounts.parse(_map(d.get("heldout"))),
            train=ExampleCounts.parse(_map(d.get("train"))),
            classifier=Classifier.parse(_map(d.get("classifier"))),
        )


@dataclass(frozen=True)
class ThresholdMethod:
    target: float | None = None
    value: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    fpr: float | None = None
    tp: int | None = None
    fp: int | None = None
    fn: int | None = None

    @classmethod
    def parse(cls, d: dict) -> ThresholdMethod:
        return cls(
            target=num(d.get("target")),
            **{k: num(d.get(k)) for k in ("value", "precision", "recall", "f1", "fpr")},
            **{k: _int(d.get(k)) for k in ("tp", "fp", "fn")},
        )


@dataclass(frozen=True)
class LayerThresholds:
    """`L{n}_concept_v{k}/thresholds.json`: the calibrated thresholds of one layer."""

    level: str | None = None
    computed_on: str | None = None
    n: int | None = None
    n_positive: int | None = None
    methods: dict[str, ThresholdMethod] = field(default_factory=dict)

    @classmethod
    def parse(cls, d: dict) -> LayerThresholds:
        return cls(
            level=_str(d.get("level")),
            computed_on=_str(d.get("computed_on")),
            n=_int(d.get("n")),
            n_positive=_int(d.get("n_positive")),
            methods={
                str(k): ThresholdMethod.parse(_map(v)) for k, v in _map(d.get("methods")).items()
            },
        )


# ---------------------------------------------------------------------- evaluate


def _ci_of(entry: dict, metric: str) -> list | None:
    """The bootstrap interval of `metric` in an evaluation entry, whichever way it is nested."""
    if isinstance(entry.get("heldout"), dict):
        found = _ci_of(entry["heldout"], metric)
        if found is not None:
            return found
    for k in (f"{metric}_ci", f"{metric}_CI"):
        if isinstance(entry.get(k), (list, tuple)):
            return list(entry[k])
    for sub in ("bootstrap", "ci", "intervals"):
        block = entry.get(sub)
        if isinstance(block, dict):
            for k in (f"{metric}_ci", metric):
                if isinstance(block.get(k), (list, tuple)):
                    return list(block[k])
    block = entry.get(metric)
    if isinstance(block, dict) and isinstance(block.get("ci"), (list, tuple)):
        return list(block["ci"])
    return None


@dataclass(frozen=True)
class LayerEvaluation:
    """One layer of `projection_eval.json`: bootstrap intervals over held-out proteins."""

    auroc_ci: list | None = None
    auprc_ci: list | None = None
    residue_auroc_ci: list | None = None

    @classmethod
    def parse(cls, d: dict) -> LayerEvaluation:
        return cls(
            auroc_ci=_ci_of(d, "auroc"),
            auprc_ci=_ci_of(d, "auprc"),
            residue_auroc_ci=_pair(_map(d.get("residue")).get("auroc_ci")),
        )


@dataclass(frozen=True)
class Evaluation:
    """`evaluations/<model>/projection_eval.json` (the `evaluate` step's result is a digest)."""

    cav_version: int | None = None
    inputs_match: bool | None = None
    bootstrap_n: int | None = None
    bootstrap_level: float | None = None
    layers: dict[str, LayerEvaluation] = field(default_factory=dict)

    @classmethod
    def parse(cls, d: dict) -> Evaluation:
        layers = d.get("layers") if isinstance(d.get("layers"), dict) else d.get("per_layer")
        boot = _map(d.get("bootstrap"))
        im = d.get("inputs_match")
        return cls(
            cav_version=_int(d.get("cav_version")),
            inputs_match=im if isinstance(im, bool) else None,
            bootstrap_n=_int(boot.get("n")),
            bootstrap_level=num(boot.get("level")),
            layers=_layers(layers, LayerEvaluation.parse),
        )

    def layer(self, key: str) -> LayerEvaluation:
        return self.layers.get(str(key)) or LayerEvaluation()


# ---------------------------------------------------------------------- detect


@dataclass(frozen=True)
class ResidueCounts:
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None

    @classmethod
    def parse(cls, d: dict) -> ResidueCounts:
        return cls(num(d.get("precision")), num(d.get("recall")), num(d.get("f1")))


@dataclass(frozen=True)
class DetectionMetrics:
    """Predicted spans vs annotated domains at one layer."""

    residue: ResidueCounts = field(default_factory=ResidueCounts)
    mean_iou: float | None = None
    domains: int | None = None
    hit_rate_iou50: float | None = None
    hit_rate_overlap: float | None = None
    false_spans_per_kres: float | None = None
    positives: int | None = None
    negatives: int | None = None
    threshold: float | None = None

    @classmethod
    def parse(cls, d: dict) -> DetectionMetrics:
        return cls(
            residue=ResidueCounts.parse(_map(d.get("residue"))),
            mean_iou=num(d.get("mean_iou")),
            domains=_int(d.get("domains")),
            hit_rate_iou50=num(d.get("hit_rate_iou50")),
            hit_rate_overlap=num(d.get("hit_rate_overlap")),
            false_spans_per_kres=num(d.get("false_spans_per_kres")),
            positives=_int(d.get("positives")),
            negatives=_int(d.get("negatives")),
            threshold=num(d.get("threshold")),
        )


@dataclass(frozen=True)
class Detection:
    """`detections/<model>/<set>/L{n}/summary.json` (also the `detect` step's result)."""

    folder: Path | None = None
    concept: str | None = None
    fingerprint: str | None = None
    set: str | None = None
    mode: str = "one-pass"
    layer: int | None = None
    cav_version: int | None = None
    threshold: float | None = None
    threshold_method: str | None = None
    smoothing_window: float | None = None
    min_span_length: int | None = None
    merge_gap: int | None = None
    proteins: int | None = None
    residues: int | None = None
    spans: int | None = None
    proteins_with_spans: int | None = None
    metrics: DetectionMetrics | None = None
    per_layer: dict[str, DetectionMetrics] = field(default_factory=dict)
    heatmaps: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped_layers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, d: dict, folder: Path | None = None) -> Detection:
        metrics = d.get("metrics")
        return cls(
            folder=folder,
            concept=_str(d.get("concept")),
            fingerprint=_str(d.get("fingerprint")),
            set=_str(d.get("set")),
            mode=str(d.get("mode", "one-pass")),
            layer=_int(d.get("layer")),
            cav_version=_int(d.get("cav_version")),
            threshold=num(d.get("threshold")),
            threshold_method=_str(d.get("threshold_method")),
            smoothing_window=num(d.get("smoothing_window")),
            min_span_length=_int(d.get("min_span_length")),
            merge_gap=_int(d.get("merge_gap")),
            proteins=_int(d.get("proteins")),
            residues=_int(d.get("residues")),
            spans=_int(d.get("spans")),
            proteins_with_spans=_int(d.get("proteins_with_spans")),
            metrics=DetectionMetrics.parse(metrics) if isinstance(metrics, dict) else None,
            per_layer=_layers(d.get("per_layer"), DetectionMetrics.parse),
            heatmaps=[str(h) for h in _list(d.get("heatmaps"))],
            files=[str(f) for f in _list(d.get("files"))],
            skipped_layers={str(k): str(v) for k, v in _map(d.get("skipped_layers")).items()},
        )

    @property
    def set_name(self) -> str:
        return "held-out test" if self.set == "test" else f"'{self.set}'"


def read_protein_rows(path: Path) -> dict[str, dict[str, str]]:
    """detect's proteins.tsv keyed by the file-name form of the protein ID ({} if absent)."""
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    if not lines:
        return {}
    head = lines[0].split("\t")
    rows = (dict(zip(head, line.split("\t"), strict=False)) for line in lines[1:] if line)
    return {safe_id(r.get("protein_id", "")): r for r in rows}


def safe_id(pid: str) -> str:
    """A protein ID as detect's heatmap file names spell it."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in pid)


# ---------------------------------------------------------------------- tcav


@dataclass(frozen=True)
class TcavLayer:
    """One layer of `tcav_scores.json`: the concept's TCAV score against the random CAVs'."""

    testable: bool = True
    score: float | None = None
    random_mean: float | None = None
    random_sd: float | None = None
    magnitude: float | None = None
    magnitude_random_mean: float | None = None
    magnitude_random_sd: float | None = None
    t: float | None = None
    p: float | None = None
    q: float | None = None
    significant: bool = False
    verdict: str | None = None
    cav_version: int | None = None

    @classmethod
    def parse(cls, d: dict) -> TcavLayer:
        mag = _map(d.get("magnitude_test"))
        return cls(
            testable=bool(d.get("testable", True)),
            **{k: num(d.get(k)) for k in ("score", "random_mean", "random_sd", "magnitude")},
            magnitude_random_mean=num(mag.get("random_mean")),
            magnitude_random_sd=num(mag.get("random_sd")),
            **{k: num(d.get(k)) for k in ("t", "p", "q")},
            significant=bool(d.get("significant")),
            verdict=_str(d.get("verdict")),
            cav_version=_int(d.get("cav_version")),
        )


@dataclass(frozen=True)
class TcavScores:
    """`tcav/<model>/tcav_scores.json` (also the `tcav` step's result)."""

    folder: Path | None = None
    concept: str | None = None
    fingerprint: str | None = None
    alpha: float | None = None
    target_kind: str | None = None
    target_class: Any = None
    target_f: str | None = None
    proteins: int | None = None
    inputs: str = "held-out positives"
    truncated: list = field(default_factory=list)
    layers: dict[str, TcavLayer] = field(default_factory=dict)
    skipped_layers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, d: dict, folder: Path | None = None) -> TcavScores:
        target = _map(d.get("target"))
        return cls(
            folder=folder,
            concept=_str(d.get("concept")),
            fingerprint=_str(d.get("fingerprint")),
            alpha=num(d.get("alpha")),
            target_kind=_str(target.get("kind")),
            target_class=target.get("class"),
            target_f=_str(target.get("f")),
            proteins=_int(d.get("proteins")),
            inputs=str(d.get("inputs", "held-out positives")),
            truncated=_list(d.get("truncated")),
            layers=_layers(d.get("layers"), TcavLayer.parse),
            skipped_layers={str(k): str(v) for k, v in _map(d.get("skipped_layers")).items()},
        )

    @property
    def target(self) -> str:
        """The model output TCAV differentiates, in words."""
        if self.target_kind == "sequence_classification":
            return f"class-{self.target_class} logit of the classification head"
        if self.target_kind == "masked_lm":
            return "masked-LM log-likelihood of the residues"
        return self.target_f or "model output"


# ---------------------------------------------------------------------- run manifest


@dataclass(frozen=True)
class ModelRecord:
    name: str | None = None
    fingerprint: str | None = None
    source: str | None = None
    layers: list = field(default_factory=list)
    head: str | None = None

    @classmethod
    def parse(cls, d: dict) -> ModelRecord:
        return cls(
            name=_str(d.get("name")),
            fingerprint=_str(d.get("fingerprint")),
            source=_str(d.get("source")),
            layers=_list(d.get("layers")),
            head=_str(d.get("head")),
        )


@dataclass(frozen=True)
class DataFile:
    path: str | None
    sha256: str | None


@dataclass(frozen=True)
class StepRecord:
    """One stage's entry in `run_manifest.json`; `result` is what the stage returned."""

    seconds: float | None = None
    finished: str = ""
    result: Any = None
    inputs_key: str | None = None

    @property
    def skipped(self) -> str | None:
        r = self.result
        return _str(r.get("skipped")) if isinstance(r, dict) and r.get("skipped") else None

    @property
    def result_doc(self) -> dict:
        return _map(self.result)


@dataclass(frozen=True)
class RunManifest:
    """`run_manifest.json`: package, seed, data checksums, the model, every stage that ran."""

    version: str | None = None
    python: str | None = None
    seed: Any = None
    model: ModelRecord = field(default_factory=ModelRecord)
    data: dict[str, DataFile] = field(default_factory=dict)
    steps: dict[str, StepRecord] = field(default_factory=dict)

    @classmethod
    def parse(cls, d: dict) -> RunManifest:
        return cls(
            version=_str(d.get("version")),
            python=_str(d.get("python")),
            seed=d.get("seed"),
            model=ModelRecord.parse(_map(d.get("model"))),
            data={
                str(k): DataFile(_str(_map(v).get("path")), _str(_map(v).get("sha256")))
                for k, v in _map(d.get("data")).items()
            },
            steps={
                str(k): StepRecord(
                    seconds=num(v.get("seconds")),
                    finished=str(v.get("finished", "")),
                    result=v.get("result"),
                    inputs_key=_str(v.get("inputs_key")),
                )
                for k, v in _map(d.get("steps")).items()
                if isinstance(v, dict)
            },
        )

    @classmethod
    def read(cls, path: Path) -> RunManifest | None:
        doc = read_json(path)
        return None if doc is None else cls.parse(doc)

    def result(self, step: str) -> dict:
        """The recorded result of `step` ({} when it has not run)."""
        rec = self.steps.get(step)
        return rec.result_doc if rec is not None else {}


# ---------------------------------------------------------------------- the config snapshot


@dataclass(frozen=True)
class ConfigView:
    """What the report reads from `config.snapshot.yaml` (free-form YAML, read leniently)."""

    model_name: str | None = None
    model_path: str | None = None
    registry_file: str | None = None
    model_layers: list = field(default_factory=list)
    concept: str | None = None
    data_files: dict[str, Any] = field(default_factory=dict)
    alpha: float | None = None
    threshold_method: str | None = None
    seed: Any = None

    @classmethod
    def parse(cls, d: dict) -> ConfigView:
        model, data = _map(d.get("model")), _map(d.get("data"))
        return cls(
            model_name=_str(model.get("name")) if model.get("name") else None,
            model_path=_str(model.get("path")) if model.get("path") else None,
            registry_file=_str(model.get("registry_file")) if model.get("registry_file") else None,
            model_layers=_list(model.get("layers")),
            concept=_str(data.get("concept")) if data.get("concept") else None,
            data_files={k: v for k, v in data.items() if k in DATA_ROLES and v},
            alpha=num(_map(d.get("evaluate")).get("alpha")),
            threshold_method=_str(_map(d.get("thresholds")).get("method")),
            seed=d.get("seed"),
        )


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return doc if isinstance(doc, dict) else None
