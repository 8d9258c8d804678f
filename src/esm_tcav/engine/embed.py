"""The embedding engine: token-budget batches, layer taps, tiling, indexing guardrails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from esm_tcav.engine.batching import release_heap, stitch, tile_starts
from esm_tcav.engine.context import StageContext
from esm_tcav.errors import ConfigError
from esm_tcav.io.proteins import Protein
from esm_tcav.models.esm2 import LoadedModel
from esm_tcav.models.tokens import Alphabet, IndexingGuard

log = logging.getLogger("esm_tcav.engine.embed")


@dataclass(frozen=True)
class _Piece:
    """One forward-pass unit: a whole protein or one tile of a long protein."""

    key: int  # position of the protein in its chunk
    start: int  # 0-based first residue of the tile
    seq: str


class Embedder:
    """Per-residue hidden states at the tapped layers for any number of proteins.

    Proteins are read in chunks, sorted by length inside a chunk, and grouped into batches of at
    most `toks_per_batch` tokens, so memory does not grow with the input. `mode="packed"` (the
    default) concatenates a batch's proteins into one row with no padding and attends within
    each protein (`gpu.PackedEncoder`: varlen flash attention on CUDA, one SDPA call per protein
    elsewhere); `mode="padded"` runs the Hugging Face modules on padded rows.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        layers: list[int],
        toks_per_batch: int = 8192,
        window: int | None = None,
        tile_overlap: int = 256,
        chunk_size: int = 2048,
        log_dir: Path | None = None,
        alphabet: Alphabet | None = None,
        mode: str = "packed",
    ):
        self.loaded = loaded
        if mode not in ("packed", "padded"):
            raise ConfigError(f"embed mode {mode!r} unknown; use packed or padded")
        self.mode = mode
        self._packed = None
        if mode == "packed":
            from esm_tcav.engine.packed import PackedEncoder

            self._packed = PackedEncoder(loaded)
        self.layers = sorted(layers)
        if max(self.layers) > loaded.num_layers or min(self.layers) < 0:
            raise ConfigError(f"layers {layers} out of range 0..{loaded.num_layers}")
        self.window = window or loaded.spec.max_residues
        if not 0 <= tile_overlap < self.window // 2 + 1:
            raise ConfigError(
                f"embed.tile_overlap={tile_overlap} must be between 0 and half the window "
                f"({self.window // 2})"
            )
        self.overlap = tile_overlap
        self.toks_per_batch = max(toks_per_batch, self.window + 2)
        self.chunk_size = chunk_size
        self.alphabet = alphabet or loaded.alphabet
        log_path = Path(log_dir) / "indexing_corrections.jsonl" if log_dir else None
        self.guard = IndexingGuard(self.alphabet, log_path)

    # ------------------------------------------------------------------ batching
    def _batches(self, pieces: list[_Piece]) -> Iterator[list[_Piece]]:
        pieces = sorted(pieces, key=lambda p: len(p.seq), reverse=True)
        batch: list[_Piece] = []
        used = 0
        for p in pieces:
            if self.mode == "packed":  # tokens actually computed: no padding
                used += len(p.seq) + 2
                full = used > self.toks_per_batch
            else:  # rows are padded to the longest (the first: sorted longest first)
                width = len(batch[0].seq) + 2 if batch else len(p.seq) + 2
                full = width * (len(batch) + 1) > self.toks_per_batch
            if batch and full:
                yield batch
                batch = []
                used = len(p.seq) + 2
            batch.append(p)
        if batch:
            yield batch

    def forward_batch(self, seqs: list[str], ids: list[str]) -> list[dict[int, np.ndarray]]:
        """States [len(seq), H] per sequence and layer, checked by the indexing guard."""
        if self._packed is not None:
            return self._forward_packed(seqs, ids)
        tokens, mask = self.alphabet.batch(seqs)
        device = self.loaded.device
        with torch.inference_mode():
            out = self.loaded.run_layers(tokens.to(device), mask.to(device), self.layers)
            host = {layer: t.float().cpu().numpy() for layer, t in out.items()}
        rows = tokens.tolist()
        results = []
        for r, (seq, pid) in enumerate(zip(seqs, ids, strict=True)):
            off = self.guard.residue_offset(rows[r], seq, pid)
            results.append({layer: host[layer][r, off : off + len(seq)] for layer in self.layers})
        return results

    def _forward_packed(self, seqs: list[str], ids: list[str]) -> list[dict[int, np.ndarray]]:
        encoded = [self.alphabet.encode(s) for s in seqs]
        cu = [0]
        for e in encoded:
            cu.append(cu[-1] + len(e))
        device = self.loaded.device
        tokens = torch.tensor([t for e in encoded for t in e], dtype=torch.long)
        positions = torch.cat([torch.arange(len(e)) for e in encoded])
        with torch.inference_mode():
            out = self._packed(
                tokens.to(device),
                torch.tensor(cu, dtype=torch.int32, device=device),
                cu,
                positions.to(device),
                max(len(e) for e in encoded),
                self.layers,
            )
            host = {layer: t.float().cpu().numpy() for layer, t in out.items()}
        results = []
        for r, (seq, pid) in enumerate(zip(seqs, ids, strict=True)):
            start = cu[r] + self.guard.residue_offset(encoded[r], seq, pid)
            results.append({layer: host[layer][start : start + len(seq)] for layer in self.layers})
        return results

    # ------------------------------------------------------------------ public
    def iter_residue_states(
        self,
        proteins: Iterable[Protein],
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[tuple[Protein, dict[int, np.ndarray]]]:
        """Yield (protein, {layer: float32 [L, H]}) for every protein, chunk by chunk."""
        it = iter(proteins)
        while chunk := list(islice(it, self.chunk_size)):
            yield from self._embed_chunk(chunk, progress)
            release_heap()

    def _embed_chunk(self, chunk: list[Protein], progress) -> Iterator:
        pieces = []
        n_tiles = {}
        for key, prot in enumerate(chunk):
            if not prot.sequence:
                from esm_tcav.errors import InputError

                raise InputError(f"protein {prot.id!r} has no residues; remove it from the input")
            starts = tile_starts(len(prot.sequence), self.window, self.overlap)
            n_tiles[key] = len(starts)
            for s in starts:
                pieces.append(_Piece(key, s, prot.sequence[s : s + self.window]))
        partial: dict[int, dict[int, dict[int, np.ndarray]]] = {}
        for batch in self._batches(pieces):
            states = self.forward_batch([p.seq for p in batch], [chunk[p.key].id for p in batch])
            for piece, st in zip(batch, states, strict=True):
                prot = chunk[piece.key]
                if n_tiles[piece.key] == 1:
                    if progress:
                        progress(1, len(prot.sequence))
                    yield prot, st
                    continue
                tiles = partial.setdefault(piece.key, {})
                tiles[piece.start] = st
                if len(tiles) == n_tiles[piece.key]:
                    del partial[piece.key]
                    merged = {
                        layer: stitch(
                            len(prot.sequence), {s: t[layer] for s, t in tiles.items()}, self.window
                        )
                        for layer in self.layers
                    }
                    if progress:
                        progress(1, len(prot.sequence))
                    yield prot, merged


# ---------------------------------------------------------------------- the `embed` stage


def open_store(cfg, loaded: LoadedModel):
    from esm_tcav.engine.store import EmbeddingStore

    return EmbeddingStore(cfg.out / "embeddings", loaded.fingerprint, cfg.embed.residue_dtype)


def make_embedder(cfg, loaded: LoadedModel, layers: list[int]) -> Embedder:
    return Embedder(
        loaded,
        layers,
        toks_per_batch=cfg.embed.toks_per_batch,
        window=cfg.embed.window,
        tile_overlap=cfg.embed.tile_overlap,
        log_dir=cfg.out / "logs",
    )


def embed_into_store(
    cfg,
    loaded: LoadedModel,
    proteins: list[Protein],
    layers: list[int],
    store,
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
) -> int:
    """Embed what the store lacks, writing a shard every `shard_proteins`; returns how many."""
    todo = proteins if force else store.missing(proteins, layers, cfg.embed.per_residue)
    if not todo:
        return 0
    embedder = make_embedder(cfg, loaded, layers)
    pending: list = []
    for prot, states in embedder.iter_residue_states(todo, progress):
        pending.append(store.compact(prot, states, cfg.embed.per_residue))
        if len(pending) >= cfg.embed.shard_proteins:
            store.write_shard(pending, cfg.embed.per_residue)
            pending = []
    if pending:
        store.write_shard(pending, cfg.embed.per_residue)
    return len(todo)


def run_embed(ctx: StageContext, shard: tuple[int, int] | None = None, force: bool = False) -> dict:
    """The `embed` verb: every protein of the dataset at every tapped layer, into the store.

    `shard=(i, n)` embeds only proteins i, i+n, i+2n, … (one SLURM array task).
    """
    from esm_tcav.ui import progress_bar

    proteins = ctx.dataset.proteins
    if shard is not None:
        i, n = shard
        proteins = proteins[i::n]
    todo = proteins if force else ctx.store.missing(proteins, ctx.layers, ctx.cfg.embed.per_residue)
    with progress_bar(len(todo), "embed") as advance:
        done = ctx.ensure_embeddings(todo, progress=advance, force=force)
    summary = {
        "model": ctx.model_name,
        "fingerprint": ctx.loaded.fingerprint,
        "layers": ctx.layers,
        "proteins": len(proteins),
        "embedded_now": done,
        "reused": len(proteins) - done,
        "indexing_corrections": _corrections_logged(ctx),
        "store": str(ctx.store.root),
    }
    log.info("embed summary: %s", summary)
    return summary


def _corrections_logged(ctx: StageContext) -> int:
    path = ctx.out / "logs" / "indexing_corrections.jsonl"
    return sum(1 for _ in path.open()) if path.exists() else 0
