"""One trained concept, whatever it was loaded from: a run's artifact folder or a library.

`Concept` = the `CAV` (direction, bias, layer) + the decision rule that turns its per-residue
scores into spans (threshold and its method, smoothing window, minimum span length, merge gap)
+ how good it is (`metrics`) + where it came from (`provenance`, `version`, `path`, `sha256`).
A run's artifact also carries its random CAVs, every calibrated threshold and its train/test
split; a library concept leaves those empty.

The vector is always stored the same way: `CAV.save` (safetensors: `direction` [H] float32,
`bias` [1] float64, metadata concept + layer), the `cav.safetensors` of an artifact folder and
the `concepts/<name>_v<k>.safetensors` a library's index points at.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esm_tcav.concepts.cav import CAV
from esm_tcav.concepts.decoding import apply_platt
from esm_tcav.concepts.thresholds import get_threshold
from esm_tcav.errors import ArtifactError

# the decision rule, in the order library.json lists it
RULE_FIELDS = ("threshold", "threshold_method", "smoothing_window", "min_span_length", "merge_gap")


@dataclass
class Concept:
    """A concept vector with its decision rule, metrics and provenance (see the module doc)."""

    cav: CAV
    threshold: float
    threshold_method: str = "f1_max"
    smoothing_window: int = 1
    min_span_length: int = 1
    merge_gap: int = 0
    version: int = 1
    # held-out evaluation: a run's report.json, or the library's metrics
    metrics: dict = field(default_factory=dict)
    # a run's verified manifest (model, fingerprint, seeds, file hashes), or the library's
    # record of sources, license and split
    provenance: dict = field(default_factory=dict)
    path: Path | None = None  # the artifact folder, or the library's vector file
    sha256: str = ""  # of the vector file
    # a training run's artifact only
    randoms: list[CAV] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)  # every calibrated method (thresholds.json)
    split: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # one line in a notebook, not every random CAV's numbers
        grade = (self.metrics or {}).get("grade")
        grade = grade.get("grade") if isinstance(grade, dict) else grade
        return (
            f"Concept({self.name!r}, layer={self.layer}, threshold={self.threshold:.4g} "
            f"({self.threshold_method}), grade={grade}, version={self.version}, "
            f"randoms={len(self.randoms)})"
        )

    @property
    def name(self) -> str:
        return self.cav.concept

    @property
    def layer(self) -> int:
        return self.cav.layer

    @property
    def grade(self) -> str | None:
        """strong / usable / weak / not a concept (concepts/grade.py); None when not graded."""
        g = self.metrics.get("grade")
        return g.get("grade") if isinstance(g, dict) else g

    @property
    def calibration(self) -> dict | None:
        """Platt scaling fitted on out-of-fold training scores (thresholds.json), if any."""
        cal = self.thresholds.get("calibration") or self.metrics.get("calibration")
        return cal if isinstance(cal, dict) and "a" in cal else None

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """Per-residue probabilities of raw CAV scores (comparable across concepts); raises
        ArtifactError when the concept carries no calibration (trained before it existed)."""
        cal = self.calibration
        if cal is None:
            raise ArtifactError(f"concept {self.name!r} has no calibration; retrain it")
        return apply_platt(cal, scores)

    def rule(self) -> dict:
        """The decision rule as library.json records it."""
        return {k: getattr(self, k) for k in RULE_FIELDS}

    def with_rule(
        self,
        method: str,
        smoothing_window: int | None = None,
        min_span_length: int | None = None,
        merge_gap: int | None = None,
    ) -> Concept:
        """A copy that calls spans with `method`'s calibrated threshold (ArtifactError when the
        artifact has none) and the given span settings (None keeps the current one)."""
        changes = {
            "threshold": float(get_threshold(self.thresholds, method)),
            "threshold_method": method,
            "smoothing_window": smoothing_window,
            "min_span_length": min_span_length,
            "merge_gap": merge_gap,
        }
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
