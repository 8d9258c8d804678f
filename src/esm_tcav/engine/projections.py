"""Residue scores of known directions from one forward pass: what a run reads instead of
per-residue states when its store keeps only a training sample (`store.residue_states: sample`).

Why it is enough: after the CAVs are fitted (on the stored sample), everything a run reads the
states of every residue for is a projection on directions known by then: the CV fold CAVs
(out-of-fold scores for thresholds and decoding), the concept CAV and the random CAVs (held-out
AUROCs). One forward pass projects every residue on all of them at once and keeps [L, K] floats
per protein and layer instead of [L, H]. States are rounded to the store's precision first, as
`detect` rounds them, so the scores are those stored states would give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.io.proteins import Protein


def _key(direction: np.ndarray) -> bytes:
    return np.ascontiguousarray(direction, dtype=np.float32).tobytes()


class Projections:
    """Per protein and layer, the raw projections (no bias) of every residue on a fixed set of
    directions; read like the store by `Examples.score` (`project`, `mean`)."""

    def __init__(self, store, layers: dict[int, np.ndarray]):
        self.store = store  # pooled vectors (protein-level examples) still come from the store
        self._directions = {layer: np.asarray(d, np.float32) for layer, d in layers.items()}
        self._columns = {
            layer: {_key(d): k for k, d in enumerate(dirs)}
            for layer, dirs in self._directions.items()
        }
        self._table: dict[tuple[str, int], np.ndarray] = {}

    @classmethod
    def compute(
        cls,
        engine: ForwardEngine,
        proteins: Iterable[Protein],
        directions: dict[int, np.ndarray],
        store,
        precision: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> Projections:
        """One forward pass over `proteins` (each distinct sequence once), projecting every
        tapped layer's states on that layer's directions [K, H]."""
        out = cls(store, directions)
        unique = list({p.seq_hash: p for p in proteins}.values())
        for prot, states in engine.iter_residue_states(unique, progress):
            for layer, dirs in out._directions.items():
                st = states[layer].astype(precision).astype(np.float32)
                out._table[(prot.seq_hash, layer)] = st @ dirs.T
        return out

    def covers(self, proteins: Iterable[Protein], directions: dict[int, np.ndarray]) -> bool:
        """Does this hold every protein's projections on every one of `directions` [K, H]?"""
        for layer, dirs in directions.items():
            cols = self._columns.get(layer)
            if cols is None or any(_key(d) not in cols for d in np.atleast_2d(dirs)):
                return False
        return all((p.seq_hash, n) in self._table for p in proteins for n in directions)

    def project(self, seq_hash: str, layer: int, directions: np.ndarray) -> np.ndarray:
        """[L, K] projections of the protein's residues on `directions` [K, H] (no bias)."""
        cols = self._columns[layer]
        try:
            at = [cols[_key(d)] for d in np.atleast_2d(directions)]
        except KeyError as exc:
            raise ValueError(f"a direction at layer {layer} was not projected") from exc
        return self._table[(seq_hash, layer)][:, at]

    def mean(self, seq_hash: str, layer: int) -> np.ndarray:
        return self.store.mean(seq_hash, layer)
