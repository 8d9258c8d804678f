"""The forward engine: per-residue outputs at the tapped layers for any number of proteins.

One engine for every stage that runs the model forward. It brings back either
- the states of the tapped layers (`iter_residue_states`: what `embed` stores), or
- the scores of every concept, projected on the device (`score`, with a `Projection`: a scan
  needs only [L, K] floats per protein, not [L, H] per layer).

How: proteins longer than the window are cut into overlapping tiles (stitched back after);
pieces are sorted by length and grouped into batches of at most `toks_per_batch` tokens
(`engine.batching`); a batch runs **packed** when the backend has a packed forward (the tokens
of many proteins in one row, attention within each, no padding; the default) or **padded**
(rows padded to the longest; the reference); the indexing guard checks where every piece's
residues sit among its tokens. On CUDA, inputs go up from pinned memory with non-blocking
copies, the outputs come back through pinned buffers on a side stream, and the host stitches
batch n-1 while the device computes batch n. The same code runs on the CPU, where those steps
are plain copies.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esm_tcav.engine.batching import (
    pack_rows,
    packed_batches,
    padded_batches,
    release_heap,
    stitch,
    tile_starts,
)
from esm_tcav.errors import ConfigError, InputError
from esm_tcav.io.proteins import Protein
from esm_tcav.models.base import ProteinLM
from esm_tcav.models.tokens import Alphabet, IndexingGuard

log = logging.getLogger("esm_tcav.engine.forward")

MODES = ("auto", "padded", "packed")


# ---------------------------------------------------------------------- the projection


@dataclass
class Projection:
    """Every concept as one column of one matrix over the concatenated tapped layers.

    scores[t, k] = concat(states[l][t] for l in layers) @ weight[:, k] + bias[k]; concept k's
    column is its CAV direction in the block of its own layer and zero elsewhere, so K concepts
    on any mix of layers cost one matrix product.
    """

    layers: list[int]
    weight: torch.Tensor  # [len(layers) * H, K] float32
    bias: torch.Tensor  # [K] float32
    names: list[str]

    @classmethod
    def from_cavs(cls, cavs: Sequence[Any], hidden_size: int) -> Projection:
        if not cavs:
            raise ConfigError("the library has no concepts to scan with")
        layers = sorted({c.layer for c in cavs})
        block = {layer: i for i, layer in enumerate(layers)}
        weight = torch.zeros(len(layers) * hidden_size, len(cavs), dtype=torch.float32)
        for k, cav in enumerate(cavs):
            if cav.hidden_size != hidden_size:
                raise ConfigError(
                    f"concept {cav.concept!r} has hidden size {cav.hidden_size} but the model has "
                    f"{hidden_size}; it was trained on another model"
                )
            b = block[cav.layer] * hidden_size
            weight[b : b + hidden_size, k] = torch.from_numpy(
                np.asarray(cav.direction, dtype=np.float32)
            )
        bias = torch.tensor([float(c.bias) for c in cavs], dtype=torch.float32)
        return cls(layers, weight, bias, [c.concept for c in cavs])

    def to(self, device: torch.device | str) -> Projection:
        return Projection(self.layers, self.weight.to(device), self.bias.to(device), self.names)

    def __call__(self, states: dict[int, torch.Tensor]) -> torch.Tensor:
        """[..., K] float32 scores from {layer: [..., H]} states (any leading shape)."""
        x = torch.cat([states[layer] for layer in self.layers], dim=-1)
        # float32 product: a bfloat16 output would round scores to 3 significant digits, which
        # moves residues across thresholds; the product is tiny next to the forward pass
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]).float(), self.weight).reshape(
            *x.shape[:-1], -1
        )


# ---------------------------------------------------------------------- host copies


class _Pending:
    """Scores on their way to the host; `get()` waits only for this batch's copy."""

    def __init__(self, host: torch.Tensor, event=None):
        self.host = host
        self.event = event

    def get(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


class HostCopier:
    """Device → host copies of the scores into pinned buffers on a side stream.

    Two pinned buffers are reused in turn: batch n's copy overlaps batch n+1's compute, and a
    buffer is refilled only after the host has read it (the engine reads batch n-1 before it
    submits batch n+1).
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.ring: list[torch.Tensor | None] = [None, None]
        self.turn = 0

    def submit(self, scores: torch.Tensor) -> _Pending:
        if not self.cuda:
            return _Pending(scores.detach().cpu())
        slot = self.turn % 2
        self.turn += 1
        buf = self.ring[slot]
        if buf is None or buf.numel() < scores.numel():
            buf = torch.empty(max(scores.numel(), 1 << 16), dtype=scores.dtype, pin_memory=True)
            self.ring[slot] = buf
        dst = buf[: scores.numel()].view(scores.shape)
        self.stream.wait_stream(torch.cuda.current_stream(scores.device))
        with torch.cuda.stream(self.stream):
            dst.copy_(scores, non_blocking=True)
            scores.record_stream(self.stream)
            event = torch.cuda.Event()
            event.record(self.stream)
        return _Pending(dst, event)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# ---------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class _Piece:
    """One forward-pass unit: a whole protein or one tile of a long protein."""

    index: int  # position of the protein in its chunk
    start: int  # 0-based first residue of the tile
    seq: str
    pid: str


class ForwardEngine:
    """Per-residue states at `layers`, or scores of a `projection`, for a list of proteins.

    Give `layers` for states ([L, H] per layer) or `projection` for scores ([L, K]); only the
    layers up to the deepest one asked for are computed. `mode`: auto (packed when the backend
    supports it), packed or padded. `alphabet` overrides the model's tokenization (tests of the
    indexing guard).
    """

    def __init__(
        self,
        model: ProteinLM,
        layers: Sequence[int] | None = None,
        projection: Projection | None = None,
        *,
        toks_per_batch: int = 8192,
        window: int | None = None,
        tile_overlap: int = 256,
        mode: str = "auto",
        attention: str = "auto",
        chunk_size: int = 2048,
        log_dir: Path | None = None,
        alphabet: Alphabet | None = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"engine mode {mode!r} unknown; use one of {', '.join(MODES)}")
        if (layers is None) == (projection is None):
            raise ConfigError("the forward engine needs either layers or a projection")
        self.model = model
        self.device = model.device
        if projection is not None:
            self.projection: Projection | None = projection.to(self.device)
            self.layers = list(projection.layers)
            if max(self.layers) > model.num_layers:
                raise ConfigError(
                    f"concept layer {max(self.layers)} is deeper than the model "
                    f"({model.num_layers} layers)"
                )
        else:
            self.projection = None
            self.layers = sorted(layers)
            if max(self.layers) > model.num_layers or min(self.layers) < 0:
                raise ConfigError(f"layers {list(layers)} out of range 0..{model.num_layers}")
        self.packed = None
        if mode != "padded":
            if model.supports_packed:
                self.packed = model.packed_encoder(attention)
            elif mode == "packed":
                model.packed_encoder(attention)  # raises: says why there is none
            else:
                log.info("packed forward not supported for this model; using padded batches")
        self.mode = "packed" if self.packed is not None else "padded"
        self.window = window or model.max_residues
        if not 0 <= tile_overlap < self.window // 2 + 1:
            raise ConfigError(
                f"embed.tile_overlap={tile_overlap} must be between 0 and half the window "
                f"({self.window // 2})"
            )
        self.overlap = tile_overlap
        self.toks_per_batch = max(int(toks_per_batch), self.window + 2)
        self.chunk_size = chunk_size
        self.alphabet = alphabet or model.alphabet
        log_path = Path(log_dir) / "indexing_corrections.jsonl" if log_dir else None
        self.guard = IndexingGuard(self.alphabet, log_path, model.residue_offset)
        self.copier = HostCopier(self.device)
        self.stats = {"batches": 0, "token_slots": 0, "tokens": 0}

    @property
    def num_outputs(self) -> int:
        """Columns per residue: concepts when projecting, tapped layers x hidden size otherwise."""
        if self.projection is not None:
            return int(self.projection.bias.shape[0])
        return len(self.layers) * self.model.hidden_size

    # -------------------------------------------------------------- one batch
    def _outputs(self, out: dict[int, torch.Tensor]) -> torch.Tensor:
        """[..., C] float32: the concept scores, or the tapped layers side by side."""
        if self.projection is not None:
            return self.projection(out)
        return torch.cat([out[layer] for layer in self.layers], dim=-1).float()

    def _encode(self, pieces: list[_Piece]) -> tuple[list[np.ndarray], list[int]]:
        """Token ids of every piece and where its residue 1 sits, checked by the guard."""
        rows = [self.alphabet.encode_array(p.seq) for p in pieces]
        guard = self.guard.residue_offset
        offsets = [guard(row, p.seq, p.pid) for row, p in zip(rows, pieces, strict=True)]
        return rows, offsets

    def _launch(self, pieces: list[_Piece]) -> tuple[_Pending, list[int], list[_Piece]]:
        """Start the forward pass and the output copy of one batch; returns without waiting."""
        rows, offsets = self._encode(pieces)
        lengths = np.array([len(r) for r in rows])
        with torch.inference_mode():
            if self.packed is None:
                width = int(lengths.max())
                tokens = np.full((len(rows), width), self.alphabet.pad_id, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for r, row in enumerate(rows):
                    tokens[r, : len(row)] = row
                    mask[r, : len(row)] = 1
                offsets = [r * width + off for r, off in enumerate(offsets)]
                out = self.model.forward(
                    _to_device(torch.from_numpy(tokens), self.device),
                    _to_device(torch.from_numpy(mask), self.device),
                    self.layers,
                )
                slots = tokens.size
            else:
                flat, cu_host, positions = pack_rows(rows)
                offsets = [cu_host[r] + off for r, off in enumerate(offsets)]
                out = self.packed(
                    _to_device(torch.from_numpy(flat), self.device),
                    _to_device(torch.tensor(cu_host, dtype=torch.int32), self.device),
                    cu_host,
                    _to_device(torch.from_numpy(positions), self.device),
                    int(lengths.max()),
                    self.layers,
                )
                slots = len(flat)
            dense = self._outputs(out)
            pending = self.copier.submit(dense.reshape(-1, dense.shape[-1]))
        self.stats["batches"] += 1
        self.stats["token_slots"] += slots
        self.stats["tokens"] += sum(len(p.seq) + 2 for p in pieces)
        return pending, offsets, pieces

    # -------------------------------------------------------------- public
    def run(self, proteins: Sequence[Protein]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, [L, C] float32) per protein, tiles stitched, as batches finish (any order)."""
        pieces: list[_Piece] = []
        n_tiles: dict[int, int] = {}
        for i, prot in enumerate(proteins):
            if not prot.sequence:
                raise InputError(f"protein {prot.id!r} has no residues; remove it from the input")
            self.model.check_sequence(prot.sequence, f"protein {prot.id!r}")
            starts = tile_starts(len(prot.sequence), self.window, self.overlap)
            n_tiles[i] = len(starts)
            pieces.extend(_Piece(i, s, prot.sequence[s : s + self.window], prot.id) for s in starts)
        lengths = [len(p.seq) for p in pieces]
        group = packed_batches if self.packed is not None else padded_batches
        partial: dict[int, dict[int, np.ndarray]] = {}
        pending = None
        for batch in group(lengths, self.toks_per_batch):
            launched = self._launch([pieces[i] for i in batch])  # device works on batch n ...
            if pending is not None:  # ... while the host finishes batch n-1
                yield from self._finish(pending, proteins, n_tiles, partial)
            pending = launched
        if pending is not None:
            yield from self._finish(pending, proteins, n_tiles, partial)

    def _finish(self, launched, proteins, n_tiles, partial) -> Iterator[tuple[int, np.ndarray]]:
        pend, offsets, pieces = launched
        host = pend.get()
        for off, piece in zip(offsets, pieces, strict=True):
            rows = np.array(host[off : off + len(piece.seq)], dtype=np.float32)  # a copy
            if n_tiles[piece.index] == 1:
                yield piece.index, rows
                continue
            tiles = partial.setdefault(piece.index, {})
            tiles[piece.start] = rows
            if len(tiles) == n_tiles[piece.index]:
                del partial[piece.index]
                yield piece.index, stitch(len(proteins[piece.index].sequence), tiles, self.window)

    def score(self, proteins: Sequence[Protein]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, [L, K] scores) per protein; the caller puts them back in input order."""
        if self.projection is None:
            raise ConfigError("score needs an engine built with a projection")
        return self.run(proteins)

    def iter_residue_states(
        self,
        proteins: Iterable[Protein],
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[tuple[Protein, dict[int, np.ndarray]]]:
        """Yield (protein, {layer: float32 [L, H]}) for every protein, chunk by chunk.

        Proteins are read `chunk_size` at a time, so memory does not grow with the input.
        """
        if self.projection is not None:
            raise ConfigError("iter_residue_states needs an engine built with layers")
        hidden = self.model.hidden_size
        it = iter(proteins)
        while chunk := list(islice(it, self.chunk_size)):
            for i, rows in self.run(chunk):
                prot = chunk[i]
                if progress:
                    progress(1, len(prot.sequence))
                yield (
                    prot,
                    {
                        layer: np.ascontiguousarray(rows[:, k * hidden : (k + 1) * hidden])
                        for k, layer in enumerate(self.layers)
                    },
                )
            release_heap()


def describe_device(device: torch.device | str) -> str:
    """One line naming the accelerator (for summaries and benchmark output)."""
    device = torch.device(device)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({math.floor(p.total_memory / 2**30)} GiB)"
    return f"CPU ({torch.get_num_threads()} threads)"
