"""What every stage of a run shares: the config, the model, the dataset, the store, the log.

Constructing a `RunContext` touches nothing. `validate()` checks everything a stage needs
without writing: the output location, the input files (the dataset is read), the device and
the model (loaded). Only then does `prepare()` (or `RunContext.open`) create the results folder
with its `logs/`, the config snapshot, `split.json` and the run's log file, so a command that
fails on bad input leaves the file system as it was. Every stage run through `run.pipeline`
validates, takes the folder's lock (`io.locks`) and prepares, in that order; the store is the
first thing that needs a prepared context.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from esm_tcav.config import Config, snapshot_yaml
from esm_tcav.engine.embed import embed_into_store, open_store
from esm_tcav.engine.projections import Projections
from esm_tcav.engine.store import EmbeddingStore, Keep
from esm_tcav.io.files import atomic_write_text, check_output_dir
from esm_tcav.io.logs import LogCapture, log_to_file, start_capture
from esm_tcav.io.proteins import Protein
from esm_tcav.models.base import ProteinLM
from esm_tcav.models.loading import load_model
from esm_tcav.run.dataset import Dataset, load_dataset, write_split

log = logging.getLogger("esm_tcav")

LOG_NAME = "esm-tcav.log"
SNAPSHOT_NAME = "config.snapshot.yaml"


class RunContext:
    """Loads what a stage needs lazily, once; stages never load the model themselves.

    Satisfies `engine.context.StageContext`, the contract the stages are typed against.
    """

    cfg: Config
    out: Path

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.out = cfg.out
        self._prepared = False
        self._selection_said = False
        self._loaded: ProteinLM | None = None
        self._layers: list[int] | None = None
        self._dataset: Dataset | None = None
        self._store: EmbeddingStore | None = None
        self._keep: Keep | None = None
        # residue projections one stage made from the forward pass, for the next stage of the
        # same process (a store keeping a training sample; see concepts.train.project_residues)
        self.projections: list[Projections] = []
        self._split_written = False
        self._capture: LogCapture | None = None

    @classmethod
    def open(cls, cfg: Config) -> RunContext:
        """A prepared context: what the CLI verbs use."""
        return cls(cfg).prepare()

    def validate(self, model: bool = True, data: bool = True) -> RunContext:
        """Check the output location, read the inputs and load the model: writes nothing.

        Raises the expected error (one line) for an output_dir that is a file or on a read-only
        file system, a bad input file, an unavailable device or an unloadable model.
        """
        check_output_dir(self.out, "output_dir")
        if self._capture is None and not self._prepared:
            self._capture = start_capture()  # clean-ups noted now go to the log file later
        if data:
            _ = self.dataset
        if model:
            _ = self.loaded
        return self

    def prepare(self) -> RunContext:
        """Create the results folder, `logs/`, the config snapshot and the log file (once)."""
        if not self._prepared:
            check_output_dir(self.out, "output_dir")
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "logs").mkdir(exist_ok=True)
            atomic_write_text(self.out / SNAPSHOT_NAME, snapshot_yaml(self.cfg))
            log_to_file(self.out / "logs" / LOG_NAME, self._capture)
            self._capture = None
            self._prepared = True
            self._write_split()
        return self

    def _write_split(self) -> None:
        if self._prepared and self._dataset is not None and not self._split_written:
            write_split(self._dataset, self.out / "split.json")
            self._split_written = True

    def say_selection(self) -> None:
        """One line (console and log) before training: the granularity and the positive
        spans the span selection picked, so a selection that picked less than meant is seen
        (once per run, after validation: a failing command prints its error line alone)."""
        if not self._selection_said:
            self._selection_said = True
            _say_selection(self.cfg, self.dataset)

    # ------------------------------------------------------------------ the model
    @property
    def model_loaded(self) -> bool:
        return self._loaded is not None

    @property
    def loaded(self) -> ProteinLM:
        if self._loaded is None:
            m = self.cfg.model
            self._loaded = load_model(
                m.name,
                m.path,
                allow_download=m.allow_download,
                device=m.device,
                dtype=m.dtype,
                registry_file=self.cfg.path(m.registry_file),
            )
        return self._loaded

    def use_model(self, loaded: ProteinLM) -> None:
        """Share a model loaded elsewhere (same model section), instead of loading it again."""
        self._loaded = loaded
        self._layers = None
        self._keep = None

    @property
    def layers(self) -> list[int]:
        if self._layers is None:
            self._layers = self.loaded.spec.resolve_layers(self.cfg.model.layers)
        return self._layers

    @property
    def model_name(self) -> str:
        return self.loaded.spec.name

    # ------------------------------------------------------------------ data and store
    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_dataset(self.cfg)
        self._write_split()
        return self._dataset

    @property
    def store(self) -> EmbeddingStore:
        if self._store is None:
            self.prepare()
            self._store = open_store(self.cfg, self.loaded)
        return self._store

    def use_store(self, store: EmbeddingStore) -> None:
        """Read and write embeddings in `store` instead of the run's own."""
        self._store = store

    @property
    def residue_keep(self) -> Keep:
        """Which residue states the store keeps of this run's proteins: every residue (True),
        none (False: `embed.per_residue: false`) or, per sequence hash, the positions training
        samples (`store.residue_states: sample`, or `auto` when keeping every residue would take
        more than `store.full_states_max_gib`)."""
        if self._keep is None:
            self._keep = self._choose_keep()
        return self._keep

    def _choose_keep(self) -> Keep:
        cfg = self.cfg
        if not cfg.embed.per_residue:
            return False
        gib = None
        if cfg.store.residue_states == "auto":
            gib = full_states_gib(cfg, self.dataset, len(self.layers), self.loaded.hidden_size)
        mode = residue_states(cfg, gib)
        if cfg.store.residue_states == "auto" and mode == "sample":  # said: train is slower
            from esm_tcav.ui import console

            line = (
                f"store: every residue state would take {gib:.1f} GiB (more than "
                f"store.full_states_max_gib {cfg.store.full_states_max_gib:g}), so only the "
                "training sample is kept; train and evaluate score the other residues "
                "from the forward pass (store.residue_states: all keeps every state)"
            )
            log.info(line)
            console.print(line, highlight=False, soft_wrap=True)
        if mode == "all":
            return True
        from esm_tcav.concepts.train import training_positions

        return training_positions(cfg, self.dataset)

    def ensure_embeddings(
        self,
        proteins: list[Protein],
        progress: Callable[..., object] | None = None,
        force: bool = False,
        keep: Keep | None = None,
    ) -> int:
        """Embed the proteins the store lacks (all tapped layers, the residue states that
        `keep` says, by default `residue_keep`); returns how many were done."""
        return embed_into_store(
            self.cfg,
            self.loaded,
            proteins,
            self.layers,
            self.store,
            progress=progress,
            force=force,
            keep=self.residue_keep if keep is None else keep,
        )


def residue_states(cfg: Config, full_gib: float | None) -> str:
    """`all` or `sample`: `store.residue_states`, with `auto` decided by what every residue
    state would take (`full_states_gib`) against `store.full_states_max_gib`."""
    mode = cfg.store.residue_states
    if mode == "auto":
        return (
            "all"
            if full_gib is not None and full_gib <= cfg.store.full_states_max_gib
            else "sample"
        )
    return mode


def full_states_gib(cfg: Config, ds: Dataset, layers: int, hidden: int) -> float:
    """What every residue state of the run's proteins would take in the store (GiB): what
    `store.residue_states: auto` weighs against `store.full_states_max_gib`."""
    residues = sum(len(p.sequence) for p in {p.seq_hash: p for p in ds.proteins}.values())
    return residues * layers * hidden * np.dtype(cfg.embed.residue_dtype).itemsize / 2**30


def _say_selection(cfg: Config, ds: Dataset) -> None:
    """One line on every run: the granularity train will use and the positive spans it has,
    so a span selection that picked less than meant is seen at once (console and log)."""
    from esm_tcav.concepts.train import resolve_granularity
    from esm_tcav.ui import console

    spans = sum(len(p.spans) for p in ds.positives)
    carrying = sum(1 for p in ds.positives if p.spans)
    how = (
        f"span_names {cfg.data.span_names}"
        if cfg.data.span_names
        else "no span_names: every span, or each JSONL record's target_motif"
    )
    granularity = resolve_granularity(cfg.train.granularity, ds.has_spans)
    line = (
        f"concept {ds.concept!r}: granularity {granularity}"
        f" (train.granularity: {cfg.train.granularity}); {spans} positive spans in {carrying} of "
        f"{len(ds.positives)} positives ({how}); {len(ds.negatives)} negatives"
    )
    log.info(line)
    console.print(line, highlight=False, soft_wrap=True)
