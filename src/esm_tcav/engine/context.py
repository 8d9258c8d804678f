"""What a stage may ask of its run: the typed contract between the stages and `run/`.

The stages (embed, train, evaluate, detect, tcav, report) live below `run/` and so cannot name
`run.context.RunContext`; they take a `StageContext`, which `RunContext` satisfies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from esm_tcav.config import Config
    from esm_tcav.engine.projections import Projections
    from esm_tcav.engine.store import EmbeddingStore, Keep
    from esm_tcav.io.proteins import Protein
    from esm_tcav.models.base import ProteinLM


class ConceptData(Protocol):
    """The concept dataset as the stages read it: positives, negatives, a split by protein."""

    concept: str
    positives: list[Protein]
    negatives: list[Protein]

    @property
    def proteins(self) -> list[Protein]: ...

    def part(self, which: str) -> tuple[list[Protein], list[Protein]]: ...


class StageContext(Protocol):
    """The config, the results folder, and the model, dataset and store loaded on first use."""

    cfg: Config
    out: Path
    # residue projections a stage made from the forward pass, reusable by the next stage of
    # the same process (`concepts.train.project_residues`)
    projections: list[Projections]

    @property
    def model_loaded(self) -> bool:
        """Whether the model is loaded already (asking for `loaded` would load it)."""
        ...

    @property
    def loaded(self) -> ProteinLM: ...

    @property
    def layers(self) -> list[int]: ...

    @property
    def model_name(self) -> str: ...

    @property
    def dataset(self) -> ConceptData: ...

    @property
    def store(self) -> EmbeddingStore: ...

    @property
    def residue_keep(self) -> Keep:
        """Which residue states the store keeps: every residue (True), none (False), or per
        sequence hash the positions training samples (later stages then score residues from
        the forward pass)."""
        ...

    def ensure_embeddings(
        self,
        proteins: list[Protein],
        progress: Callable[..., object] | None = None,
        force: bool = False,
        keep: Keep | None = None,
    ) -> int: ...
