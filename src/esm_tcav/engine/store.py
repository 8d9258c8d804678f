"""Sharded, resumable, memory-mappable embedding store (no pickle), shared by any number of runs.

Layout: ``root/<model fingerprint>/shard-<id>/`` holding ``index.json`` and, per layer n,
``L{n}.mean.npy`` [proteins, H] float32, ``L{n}.residues.npy`` [sum of lengths, H] (optional) and
``L{n}.spans.npy`` [spans, H]. A shard that keeps only some residues of its proteins (a training
sample, `store.residue_states: sample`) has ``L{n}.sampled.npy`` [kept residues, H] instead of
``L{n}.residues.npy``, and ``sample_positions.npy`` (the 0-based positions kept, per protein).
An embedding is keyed by model fingerprint + layer + sequence hash
only: the protein's ID and its spans play no part, so any run, config or library on the same model
reuses what any other stored (`store.path` in the config, `--store` on every verb). Span vectors
are pooled from the stored residues when read; the span rows a shard keeps are only a cache for
proteins stored without every residue (`embed.per_residue: false`, a training sample).

Why it is safe for concurrent writers (several runs, SLURM array tasks) without a global lock:
- a shard is written into a uniquely named temporary folder and renamed into place, so a reader
  (or a killed run) never sees a partial shard, and two writers never share a file;
- before embedding, a writer *claims* each protein with a file created with O_EXCL under
  ``claims/``; a protein claimed by a live writer is left to it (and waited for), so concurrent
  runs over the same proteins embed each one once. A claim left by a killed writer is broken: at
  once on the same host (its PID is gone), after `CLAIM_STALE_S` seconds elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esm_tcav.engine.pooling import mean_pool, span_pool
from esm_tcav.errors import ArtifactError
from esm_tcav.io.files import atomic_write_text, replace_dir, save_npy
from esm_tcav.io.locks import pid_alive
from esm_tcav.io.proteins import Protein

FORMAT = "esm-tcav-store/1"
CLAIM_STALE_S = 3600.0  # a claim from another host older than this is taken over
_HOST = socket.gethostname()


# Which residue states the store keeps: True every residue of every protein, False none, or per
# sequence hash True / False / the sorted 0-based positions to keep (absent: none).
Keep = bool | Mapping[str, "np.ndarray | bool"]


def kept_rows(keep: Keep, seq_hash: str) -> np.ndarray | bool:
    """What `keep` says the store keeps of one sequence's residue states."""
    if isinstance(keep, bool | np.bool_):
        return bool(keep)
    rows = keep.get(seq_hash, False)
    return bool(rows) if isinstance(rows, bool | np.bool_) else rows


def union_keep(parts: Iterable[tuple[Keep, list[Protein]]]) -> Keep:
    """One `Keep` for several runs' proteins embedded in one pass (a library): a sequence keeps
    every residue any run keeps, and the union of the runs' samples."""
    parts = list(parts)
    if all(keep is True for keep, _ in parts) or all(keep is False for keep, _ in parts):
        return parts[0][0] if parts else False
    out: dict[str, np.ndarray | bool] = {}
    for keep, proteins in parts:
        for p in proteins:
            rows, old = kept_rows(keep, p.seq_hash), out.get(p.seq_hash, False)
            if old is True or rows is True:
                out[p.seq_hash] = True
            elif old is False or rows is False:
                out[p.seq_hash] = rows if old is False else old
            else:
                out[p.seq_hash] = np.union1d(old, rows)
    return out


def store_root(path: str | Path, fingerprint: str) -> Path:
    """Where the shards of one model live inside a store folder."""
    return Path(path) / fingerprint


@dataclass(frozen=True)
class _Loc:
    shard: Path
    row: int
    offset: int
    length: int


class EmbeddingStore:
    def __init__(self, root: str | Path, fingerprint: str, residue_dtype: str = "float16"):
        self.root = store_root(root, fingerprint)
        self.fingerprint = fingerprint
        self.residue_dtype = np.dtype(residue_dtype)
        self._index: dict[tuple[str, int], _Loc] = {}
        self._spans: dict[tuple[str, int], dict[tuple[int, int], tuple[Path, int]]] = {}
        self._has_residues: dict[Path, set[int]] = {}
        self._samples: dict[tuple[str, int], list[tuple[Path, int, np.ndarray]]] = {}
        self._mmaps: dict[Path, np.ndarray] = {}
        self._known: set[str] = set()
        self.refresh()

    # ------------------------------------------------------------------ reading
    def refresh(self) -> None:
        """Read the indexes of shards added since the last look (other runs, SLURM tasks)."""
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.glob("shard-*")):
            if ".tmp" in shard.name or shard.name in self._known:
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
        self._known.add(shard.name)
        res_layers = set(idx["residue_layers"])
        self._has_residues[shard] = res_layers
        for row, (h, off, length) in enumerate(
            zip(idx["seq_hashes"], idx["offsets"], idx["lengths"], strict=True)
        ):
            for layer in idx["layers"]:
                old = self._index.get((h, layer))
                # a copy with per-residue states wins over one without (same sequence, same model)
                if old is None or (
                    layer in res_layers and layer not in self._has_residues[old.shard]
                ):
                    self._index[(h, layer)] = _Loc(shard, row, off, length)
        if idx.get("sampled_layers"):
            kept = np.load(shard / "sample_positions.npy", allow_pickle=False)
            for h, off, count in zip(
                idx["seq_hashes"], idx["sample_offsets"], idx["sample_counts"], strict=True
            ):
                for layer in idx["sampled_layers"]:
                    entry = (shard, off, kept[off : off + count])
                    self._samples.setdefault((h, layer), []).append(entry)
        for srow, (prow, start, end, _name) in enumerate(idx["spans"]):
            h = idx["seq_hashes"][prow]
            for layer in idx["layers"]:
                self._spans.setdefault((h, layer), {})[(start, end)] = (shard, srow)

    def _array(self, path: Path) -> np.ndarray:
        arr = self._mmaps.get(path)
        if arr is None:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            self._mmaps[path] = arr
        return arr

    def has(self, seq_hash: str, layer: int, residues: bool = False) -> bool:
        """Is the sequence stored at this layer (with `residues`: every residue state, in a
        full shard or in a sample that holds them all)?"""
        loc = self._index.get((seq_hash, layer))
        if loc is None:
            return False
        if not residues or layer in self._has_residues[loc.shard]:
            return True
        return self._sample(seq_hash, layer, np.arange(loc.length)) is not None

    def covers(self, seq_hash: str, layer: int, positions: np.ndarray) -> bool:
        """Are the residue states at these 0-based positions stored (all residues or a sample)?"""
        loc = self._index.get((seq_hash, layer))
        if loc is not None and layer in self._has_residues[loc.shard]:
            return True
        return self._sample(seq_hash, layer, positions) is not None

    def _sample(self, seq_hash: str, layer: int, positions: np.ndarray):
        """(sampled rows file, rows) of a stored sample holding every position, or None."""
        positions = np.asarray(positions, dtype=np.int64)
        for shard, off, kept in self._samples.get((seq_hash, layer), []):
            at = np.searchsorted(kept, positions)
            if positions.size == 0 or (
                (at < kept.size).all() and (kept[np.minimum(at, kept.size - 1)] == positions).all()
            ):
                return shard / f"L{layer}.sampled.npy", off + at
        return None

    def missing(
        self, proteins: Iterable[Protein], layers: list[int], residues: Keep = False
    ) -> list[Protein]:
        """Proteins whose sequence some requested layer has not been stored for yet, with the
        residue states `residues` asks to keep (see `Keep`).

        Spans never make a protein missing while its residues are stored (span vectors are
        pooled from them); only a protein stored without residues needs a span's pooled row,
        which the shard caches when the protein is embedded.
        """
        out, seen = [], set()
        for p in proteins:
            if p.seq_hash in seen:
                continue
            seen.add(p.seq_hash)
            rows = kept_rows(residues, p.seq_hash)
            if any(self._needs(p, layer, rows) for layer in layers):
                out.append(p)
        return out

    def _needs(self, p: Protein, layer: int, rows: np.ndarray | bool) -> bool:
        if not self.has(p.seq_hash, layer):
            return True
        if rows is True:
            return not self.has(p.seq_hash, layer, residues=True)
        if rows is not False:
            return not self.covers(p.seq_hash, layer, rows)
        if self.has(p.seq_hash, layer, residues=True):
            return False
        cached = self._spans.get((p.seq_hash, layer), {})
        return any((s.start, s.end) not in cached for s in p.spans)

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
            return self.residue_rows(seq_hash, layer, np.arange(loc.length))
        arr = self._array(loc.shard / f"L{layer}.residues.npy")
        return np.asarray(arr[loc.offset : loc.offset + loc.length], dtype=np.float32)

    def residue_rows(self, seq_hash: str, layer: int, positions: np.ndarray) -> np.ndarray:
        """States [n, H] float32 of the residues at these 0-based positions (sorted or not),
        from all of the protein's residues or from a stored sample that holds them."""
        loc = self._loc(seq_hash, layer)
        if layer in self._has_residues[loc.shard]:
            return self.residues(seq_hash, layer)[positions]
        found = self._sample(seq_hash, layer, positions)
        if found is None:
            raise ArtifactError(
                f"per-residue states of sequence {seq_hash} at layer {layer} are not in the "
                "store (it keeps pooled vectors only with embed.per_residue: false, and only "
                "the training sample with store.residue_states: sample); rerun embed with "
                "embed.per_residue: true and store.residue_states: all"
            )
        path, rows = found
        return np.asarray(self._array(path)[rows], dtype=np.float32)

    def span(self, seq_hash: str, layer: int, start: int, end: int, name: str) -> np.ndarray:
        """Mean state over residues start..end (1-based inclusive); `name` plays no part."""
        shard, row = self._spans.get((seq_hash, layer), {}).get((start, end), (None, None))
        if shard is None:
            return span_pool(self.residues(seq_hash, layer), start, end)
        return np.asarray(self._array(shard / f"L{layer}.spans.npy")[row])

    def proteins_stored(self) -> int:
        return len({h for h, _ in self._index})

    def residues_stored(self) -> int:
        """Residues of the distinct sequences held (any layer): what a benchmark counts."""
        return sum(loc.length for loc in {h: loc for (h, _), loc in self._index.items()}.values())

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())

    # ------------------------------------------------------------------ claims
    @property
    def _claims(self) -> Path:
        return self.root / "claims"

    def claim(
        self, proteins: Iterable[Protein], residue_budget: int, max_proteins: int | None = None
    ) -> list[Protein]:
        """Claim proteins no other live writer holds, in order, up to `residue_budget` residues
        (at least one protein); the caller embeds them, writes their shard, then `release`s."""
        self._claims.mkdir(parents=True, exist_ok=True)
        mine: list[Protein] = []
        total = 0
        for p in proteins:
            if mine and (
                total + len(p.sequence) > residue_budget
                or (max_proteins is not None and len(mine) >= max_proteins)
            ):
                break
            if self._take(self._claims / p.seq_hash):
                mine.append(p)
                total += len(p.sequence)
        return mine

    def release(self, proteins: Iterable[Protein]) -> None:
        for p in proteins:
            (self._claims / p.seq_hash).unlink(missing_ok=True)

    def _take(self, path: Path) -> bool:
        record = json.dumps({"host": _HOST, "pid": os.getpid(), "time": time.time()})
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if not _stale(path):
                    return False
                path.unlink(missing_ok=True)  # its writer is gone: take the protein over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(record)
            return True
        return False

    def clean_stale_temporaries(self) -> None:
        """Remove temporary shard folders that killed writers on this host left behind."""
        for tmp in self.root.glob("shard-*.tmp-*"):
            host, _, pid = tmp.name.rpartition(".tmp-")[2].rpartition("-")
            if host == _HOST and pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ writing
    def compact(
        self, prot: Protein, states: dict[int, np.ndarray], rows: np.ndarray | bool
    ) -> tuple:
        """What a shard keeps of one protein: pooled vectors, and the residues `rows` says
        (True all, False none, or the sorted positions of a sample) in the store dtype.

        Done as soon as a protein is embedded, so a pending shard holds float16 residues (or
        few or none) instead of float32 states: memory stays small whatever the shard size.
        """
        pooled = {
            layer: (mean_pool(st), [span_pool(st, s.start, s.end) for s in prot.spans])
            for layer, st in states.items()
        }
        # sorted and unique: what `covers` searches
        positions = None if isinstance(rows, bool) else np.unique(np.asarray(rows, dtype=np.int64))
        residues = None
        if rows is True or positions is not None:
            residues = {
                layer: (st if positions is None else st[positions]).astype(self.residue_dtype)
                for layer, st in states.items()
            }
        return prot, pooled, residues, positions

    def write_shard(self, items: list, per_residue: bool = True) -> Path:
        """Write one shard atomically: a temporary folder renamed into place.

        `items` are `(protein, {layer: states})` pairs or what `compact` made of them.
        """
        if not items:
            raise ValueError("empty shard")
        items = [self.compact(*it, per_residue) if len(it) == 2 else it for it in items]
        per_residue = all(r is not None and pos is None for _, _, r, pos in items)
        sampled = not per_residue and any(r is not None for _, _, r, _ in items)
        layers = sorted(items[0][1])
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex[:12]}"
        tmp = self.root / f"{name}.tmp-{_HOST}-{os.getpid()}"
        tmp.mkdir()
        try:
            offsets, lengths, spans = [], [], []
            off = 0
            for row, (prot, _, _, _) in enumerate(items):
                offsets.append(off)
                lengths.append(len(prot.sequence))
                off += len(prot.sequence)
                spans.extend([row, s.start, s.end, s.name] for s in prot.spans)
            for layer in layers:
                save_npy(
                    tmp / f"L{layer}.mean.npy", np.stack([p[layer][0] for _, p, _, _ in items])
                )
                span_vecs = [v for _, p, _, _ in items for v in p[layer][1]]
                hidden = items[0][1][layer][0].shape[0]
                save_npy(
                    tmp / f"L{layer}.spans.npy",
                    np.stack(span_vecs) if span_vecs else np.zeros((0, hidden), np.float32),
                )
                if per_residue:
                    save_npy(
                        tmp / f"L{layer}.residues.npy",
                        np.concatenate([r[layer] for _, _, r, _ in items]),
                    )
                if sampled:
                    rows = [r for _, _, r, _ in items]
                    save_npy(
                        tmp / f"L{layer}.sampled.npy",
                        np.concatenate(
                            [_rows_of(r, layer, hidden, self.residue_dtype) for r in rows]
                        ),
                    )
            index = {
                "format": FORMAT,
                "fingerprint": self.fingerprint,
                "layers": layers,
                "residue_layers": layers if per_residue else [],
                "ids": [p.id for p, _, _, _ in items],
                "seq_hashes": [p.seq_hash for p, _, _, _ in items],
                "offsets": offsets,
                "lengths": lengths,
                "spans": spans,
            }
            if sampled:
                kept = [_kept_positions(prot, r, pos) for prot, _, r, pos in items]
                counts = [int(k.size) for k in kept]
                index["sampled_layers"] = layers
                index["sample_offsets"] = np.r_[0, np.cumsum(counts)[:-1]].astype(int).tolist()
                index["sample_counts"] = counts
                save_npy(tmp / "sample_positions.npy", np.concatenate(kept).astype(np.int64))
            atomic_write_text(tmp / "index.json", json.dumps(index))
            final = self.root / name
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._add(final, index)
        return final


def _rows_of(residues, layer: int, hidden: int, dtype) -> np.ndarray:
    return residues[layer] if residues is not None else np.zeros((0, hidden), dtype)


def _kept_positions(prot: Protein, residues, positions) -> np.ndarray:
    if positions is not None:
        return positions
    return np.arange(len(prot.sequence) if residues is not None else 0, dtype=np.int64)


def _stale(path: Path) -> bool:
    """A claim whose writer is gone: a dead PID on this host, or older than `CLAIM_STALE_S`
    (PIDs mean nothing on another host, and a PID may be reused). The worst a wrong call does is
    embed a protein twice: shards never share files, and the index keeps one copy."""
    try:
        rec = json.loads(path.read_text())
        if rec["host"] == _HOST and not pid_alive(int(rec["pid"])):
            return True
        return time.time() - float(rec["time"]) > CLAIM_STALE_S
    except FileNotFoundError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        # unreadable: being written right now, or garbage left by a crash; judge by its age
        try:
            return time.time() - path.stat().st_mtime > 60
        except FileNotFoundError:
            return True
