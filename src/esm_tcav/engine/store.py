"""Sharded, resumable, memory-mappable embedding store (no pickle).

Layout: ``root/<model fingerprint>/shard-<id>/`` holding ``index.json`` and, per layer n,
``L{n}.mean.npy`` [proteins, H] float32, ``L{n}.residues.npy`` [sum of lengths, H] (optional) and
``L{n}.spans.npy`` [spans, H]. A shard is written into a temporary folder and renamed into place,
so a killed run never leaves a partial shard; a rerun embeds only what no shard holds yet. SLURM
array tasks write shards into the same folder, which is all a merge needs.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esm_tcav.engine.pooling import mean_pool, span_pool
from esm_tcav.errors import ArtifactError
from esm_tcav.io.files import atomic_write_text, replace_dir, save_npy
from esm_tcav.io.proteins import Protein

FORMAT = "esm-tcav-store/1"


@dataclass(frozen=True)
class _Loc:
    shard: Path
    row: int
    offset: int
    length: int


class EmbeddingStore:
    def __init__(self, root: str | Path, fingerprint: str, residue_dtype: str = "float16"):
        self.root = Path(root) / fingerprint
        self.fingerprint = fingerprint
        self.residue_dtype = np.dtype(residue_dtype)
        self._index: dict[tuple[str, int], _Loc] = {}
        self._spans: dict[tuple[str, int], dict[tuple[int, int, str], tuple[Path, int]]] = {}
        self._has_residues: dict[Path, set[int]] = {}
        self._mmaps: dict[Path, np.ndarray] = {}
        self.refresh()

    # ------------------------------------------------------------------ reading
    def refresh(self) -> None:
        """Re-read shard indexes (e.g. after SLURM array tasks added shards)."""
        self._index.clear()
        self._spans.clear()
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.glob("shard-*")):
            if shard.name.endswith(".tmp"):
                continue
            try:
                idx = json.loads((shard / "index.json").read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ArtifactError(
                    f"{shard}: unreadable shard index ({exc}); delete this shard folder and "
                    "rerun embed to recompute it"
                ) from exc
            self._add(shard, idx)

    def _add(self, shard: Path, idx: dict) -> None:
        if idx.get("format") != FORMAT or idx.get("fingerprint") != self.fingerprint:
            raise ArtifactError(f"{shard}: shard of another model or format; remove it")
        self._has_residues[shard] = set(idx["residue_layers"])
        for row, (h, off, length) in enumerate(
            zip(idx["seq_hashes"], idx["offsets"], idx["lengths"], strict=True)
        ):
            for layer in idx["layers"]:
                self._index[(h, layer)] = _Loc(shard, row, off, length)
        for srow, (prow, start, end, name) in enumerate(idx["spans"]):
            h = idx["seq_hashes"][prow]
            for layer in idx["layers"]:
                self._spans.setdefault((h, layer), {})[(start, end, name)] = (shard, srow)

    def _array(self, path: Path) -> np.ndarray:
        arr = self._mmaps.get(path)
        if arr is None:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            self._mmaps[path] = arr
        return arr

    def has(self, seq_hash: str, layer: int, residues: bool = False) -> bool:
        loc = self._index.get((seq_hash, layer))
        if loc is None:
            return False
        return not residues or layer in self._has_residues[loc.shard]

    def missing(
        self, proteins: Iterable[Protein], layers: list[int], residues: bool = False
    ) -> list[Protein]:
        """Proteins that some requested layer (or span) has not been stored for yet."""
        out, seen = [], set()
        for p in proteins:
            if p.seq_hash in seen:
                continue
            need = any(not self.has(p.seq_hash, layer, residues) for layer in layers) or any(
                (s.start, s.end, s.name) not in self._spans.get((p.seq_hash, layer), {})
                for layer in layers
                for s in p.spans
            )
            if need:
                seen.add(p.seq_hash)
                out.append(p)
        return out

    def _loc(self, seq_hash: str, layer: int) -> _Loc:
        try:
            return self._index[(seq_hash, layer)]
        except KeyError as exc:
            raise ArtifactError(
                f"no embedding for sequence {seq_hash} at layer {layer} in {self.root}; run "
                "`esm-tcav embed` first"
            ) from exc

    def mean(self, seq_hash: str, layer: int) -> np.ndarray:
        loc = self._loc(seq_hash, layer)
        return np.asarray(self._array(loc.shard / f"L{layer}.mean.npy")[loc.row])

    def residues(self, seq_hash: str, layer: int) -> np.ndarray:
        """Per-residue states [L, H] as float32 (read through a memory map)."""
        loc = self._loc(seq_hash, layer)
        if layer not in self._has_residues[loc.shard]:
            raise ArtifactError(
                f"per-residue states of {seq_hash} at layer {layer} were not stored; rerun embed "
                "with embed.per_residue: true"
            )
        arr = self._array(loc.shard / f"L{layer}.residues.npy")
        return np.asarray(arr[loc.offset : loc.offset + loc.length], dtype=np.float32)

    def span(self, seq_hash: str, layer: int, start: int, end: int, name: str) -> np.ndarray:
        key = (start, end, name)
        shard, row = self._spans.get((seq_hash, layer), {}).get(key, (None, None))
        if shard is None:
            return span_pool(self.residues(seq_hash, layer), start, end)
        return np.asarray(self._array(shard / f"L{layer}.spans.npy")[row])

    def proteins_stored(self) -> int:
        return len({h for h, _ in self._index})

    # ------------------------------------------------------------------ writing
    def compact(self, prot: Protein, states: dict[int, np.ndarray], per_residue: bool) -> tuple:
        """What a shard keeps of one protein: pooled vectors, and residues in the store dtype.

        Done as soon as a protein is embedded, so a pending shard holds float16 residues (or
        none at all) instead of float32 states: memory stays small whatever the shard size.
        """
        pooled = {
            layer: (mean_pool(st), [span_pool(st, s.start, s.end) for s in prot.spans])
            for layer, st in states.items()
        }
        residues = (
            {layer: st.astype(self.residue_dtype) for layer, st in states.items()}
            if per_residue
            else None
        )
        return prot, pooled, residues

    def write_shard(self, items: list, per_residue: bool = True) -> Path:
        """Write one shard atomically: a temporary folder renamed into place.

        `items` are `(protein, {layer: states})` pairs or what `compact` made of them.
        """
        if not items:
            raise ValueError("empty shard")
        items = [it if len(it) == 3 else self.compact(it[0], it[1], per_residue) for it in items]
        per_residue = items[0][2] is not None
        layers = sorted(items[0][1])
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex[:12]}"
        tmp = self.root / f"{name}.tmp"
        tmp.mkdir()
        try:
            offsets, lengths, spans = [], [], []
            off = 0
            for row, (prot, _, _) in enumerate(items):
                offsets.append(off)
                lengths.append(len(prot.sequence))
                off += len(prot.sequence)
                spans.extend([row, s.start, s.end, s.name] for s in prot.spans)
            for layer in layers:
                save_npy(tmp / f"L{layer}.mean.npy", np.stack([p[layer][0] for _, p, _ in items]))
                span_vecs = [v for _, p, _ in items for v in p[layer][1]]
                hidden = items[0][1][layer][0].shape[0]
                save_npy(
                    tmp / f"L{layer}.spans.npy",
                    np.stack(span_vecs) if span_vecs else np.zeros((0, hidden), np.float32),
                )
                if per_residue:
                    save_npy(
                        tmp / f"L{layer}.residues.npy",
                        np.concatenate([r[layer] for _, _, r in items]),
                    )
            index = {
                "format": FORMAT,
                "fingerprint": self.fingerprint,
                "layers": layers,
                "residue_layers": layers if per_residue else [],
                "ids": [p.id for p, _, _ in items],
                "seq_hashes": [p.seq_hash for p, _, _ in items],
                "offsets": offsets,
                "lengths": lengths,
                "spans": spans,
            }
            atomic_write_text(tmp / "index.json", json.dumps(index))
            final = self.root / name
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._add(final, index)
        return final
