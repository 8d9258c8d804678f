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


Groups = list[tuple[list[Protein], dict[int, np.ndarray]]]


class Projections:
    """Per protein and layer, the raw projections (no bias) of every residue on the directions
    asked for that protein; read like the store by `Examples.score` (`project`, `mean`)."""

    def __init__(self, store):
        self.store = store  # pooled vectors (protein-level examples) still come from the store
        # (sequence hash, layer) -> ([L, K] projections, {direction key: column})
        self._table: dict[tuple[str, int], tuple[np.ndarray, dict[bytes, int]]] = {}

    @classmethod
    def compute(
        cls,
        engine: ForwardEngine,
        groups: Groups,
        store,
        precision: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> Projections:
        """One forward pass over the proteins of every group (each distinct sequence once),
        projecting each protein's states at every layer on the directions [K, H] its groups
        ask for there (training proteins need the CV fold CAVs, held-out ones the concept and
        random CAVs: asking each only for its own keeps memory to what is read)."""
        wanted: dict[str, dict[int, dict[bytes, np.ndarray]]] = {}
        proteins: dict[str, Protein] = {}
        for members, directions in groups:
            for p in members:
                proteins.setdefault(p.seq_hash, p)
                per_layer = wanted.setdefault(p.seq_hash, {})
                for layer, dirs in directions.items():
                    keyed = per_layer.setdefault(layer, {})
                    for d in np.atleast_2d(np.asarray(dirs, dtype=np.float32)):
                        keyed.setdefault(_key(d), d)
        out = cls(store)
        for prot, states in engine.iter_residue_states(list(proteins.values()), progress):
            for layer, keyed in wanted[prot.seq_hash].items():
                st = states[layer].astype(precision).astype(np.float32)
                keys = list(keyed)
                values = st @ np.stack([keyed[k] for k in keys]).T
                out._table[(prot.seq_hash, layer)] = (values, {k: i for i, k in enumerate(keys)})
        return out

    def covers(self, proteins: Iterable[Protein], directions: dict[int, np.ndarray]) -> bool:
        """Does this hold every protein's projections on every one of `directions` [K, H]?"""
        keys = {n: [_key(d) for d in np.atleast_2d(dirs)] for n, dirs in directions.items()}
        for p in proteins:
            for layer, wanted in keys.items():
                entry = self._table.get((p.seq_hash, layer))
                if entry is None or any(k not in entry[1] for k in wanted):
                    return False
        return True

    def project(self, seq_hash: str, layer: int, directions: np.ndarray) -> np.ndarray:
        """[L, K] projections of the protein's residues on `directions` [K, H] (no bias)."""
        values, cols = self._table[(seq_hash, layer)]
        try:
            at = [cols[_key(d)] for d in np.atleast_2d(directions)]
        except KeyError as exc:
            raise ValueError(f"a direction at layer {layer} was not projected") from exc
        return values[:, at]

    def mean(self, seq_hash: str, layer: int) -> np.ndarray:
        return self.store.mean(seq_hash, layer)
