"""The scan engine: one forward pass per protein, every concept projected on the device.

Why a separate engine from `embed.Embedder`: the embedder brings every tapped layer's states back
to the host ([L, H] floats per layer); a scan needs only the concept scores ([L, K] floats), so
the projection runs on the device and the host receives K numbers per residue.

Two forward paths, the same results (checked by the tests against float32 on the CPU):

- **packed** (the default): no padding at all. The tokens of many proteins are concatenated
  into one row and attention runs per protein: variable-length flash attention on CUDA
  (`torch.nn.attention.varlen.varlen_attn`, cumulative sequence lengths) in bfloat16/float16,
  a loop of SDPA calls per protein elsewhere. ESM-2's layer is re-run from the Hugging Face
  module's own weights (pre-LayerNorm attention with rotary q/k restarting at every protein,
  pre-LayerNorm GELU MLP, residuals, final LayerNorm after the last layer, embeddings scaled by
  0.88 for token dropout). Also the faster path on the CPU (t6, 2 cores: about 30% faster than
  padded batches, measured with benchmarks/scan_throughput.py's engine comparison).
- **padded**: length-sorted batches filled to a token budget, run through the Hugging Face
  modules (`LoadedModel.run_layers`, SDPA attention with a padding mask); the reference.

On CUDA, inputs go up from pinned memory with non-blocking copies, the scores come back through
pinned buffers on a side stream, and the host stitches/thresholds batch n-1 while the device
computes batch n. The same code runs on the CPU, where those steps are plain copies.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from esm_tcav.engine.batching import packed_batches, padded_batches, stitch, tile_starts
from esm_tcav.errors import ConfigError, InputError
from esm_tcav.io.proteins import Protein
from esm_tcav.models.esm2 import LoadedModel
from esm_tcav.models.tokens import IndexingGuard

log = logging.getLogger("esm_tcav.engine.packed")

MODES = ("auto", "padded", "packed")


# ---------------------------------------------------------------------- batching


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


# ---------------------------------------------------------------------- packed ESM-2 forward


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def varlen_available(device: torch.device) -> bool:
    """True where PyTorch ships variable-length flash attention (CUDA builds only)."""
    if device.type != "cuda":
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def _attend_loop(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_host: list[int]
) -> torch.Tensor:
    """Attention within each protein of a packed row: one SDPA call per protein (any device)."""
    out = torch.empty_like(q)
    for a, b in zip(cu_host[:-1], cu_host[1:], strict=True):
        qs, ks, vs = (t[a:b].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        out[a:b] = F.scaled_dot_product_attention(qs, ks, vs, scale=1.0)[0].transpose(0, 1)
    return out


def _attend_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int
) -> torch.Tensor:
    """Variable-length flash attention over the packed row (CUDA; q is pre-scaled)."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=1.0)


def esm_layer(
    x: torch.Tensor,
    w: tuple[torch.Tensor, ...],
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    eps: float,
    cu: torch.Tensor,
    max_len: int,
    cu_host: list[int] | None = None,
) -> torch.Tensor:
    """One ESM-2 layer on packed tokens [N, H], from plain weight tensors.

    Pre-LayerNorm self-attention (q scaled by head_dim^-0.5 before the rotary embedding, as
    ESM-2 does), residual; pre-LayerNorm erf-GELU MLP, residual. Plain tensors in, so one
    compiled graph serves every layer.
    """
    ln1_w, ln1_b, qkv_w, qkv_b, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b = w
    n, hidden = x.shape
    head_dim = hidden // heads
    dtype = x.dtype
    h = F.layer_norm(x, (hidden,), ln1_w, ln1_b, eps)
    q, k, v = F.linear(h, qkv_w, qkv_b).view(n, 3, heads, head_dim).unbind(1)
    q = q * head_dim**-0.5
    q = ((q.float() * cos) + (_rotate_half(q.float()) * sin)).to(dtype)
    k = ((k.float() * cos) + (_rotate_half(k.float()) * sin)).to(dtype)
    v = v.contiguous()
    a = _attend_varlen(q, k, v, cu, max_len) if cu_host is None else _attend_loop(q, k, v, cu_host)
    x = F.linear(a.reshape(n, hidden), out_w, out_b) + x
    h = F.layer_norm(x, (hidden,), ln2_w, ln2_b, eps)
    return F.linear(F.gelu(F.linear(h, fc1_w, fc1_b)), fc2_w, fc2_b) + x


class PackedEncoder:
    """ESM-2's encoder on packed rows, from the Hugging Face module's own weights.

    Checked against `EsmModel` on the same weights by the tests (relative error about 1e-5 in
    float32, about 1e-2 in bfloat16). Attention: varlen flash attention on CUDA, else a loop of
    SDPA calls, one per protein (varlen_attn raises NotImplementedError on the CPU).
    `compile=True` compiles the layer with `torch.compile` (varlen attention only: the loop's
    per-protein boundaries would make every batch a new graph).
    """

    def __init__(self, loaded: LoadedModel, attention: str = "auto", compile: bool = False):
        enc = loaded.encoder
        cfg = enc.config
        if getattr(cfg, "position_embedding_type", "rotary") != "rotary":
            raise ConfigError("the packed forward supports rotary ESM-2 models only")
        if getattr(enc.embeddings, "layer_norm", None) is not None:
            raise ConfigError("the packed forward does not support emb_layer_norm_before models")
        self.loaded = loaded
        self.final_norm = enc.encoder.emb_layer_norm_after
        self.word_embeddings = enc.embeddings.word_embeddings
        self.token_dropout = bool(cfg.token_dropout)
        self.mask_id = int(cfg.mask_token_id) if cfg.mask_token_id is not None else -1
        self.heads = int(cfg.num_attention_heads)
        self.eps = float(cfg.layer_norm_eps)
        self.inv_freq = enc.rotary_embeddings.inv_freq.detach().float()
        # per layer: plain tensors, q/k/v fused into one product
        self.weights: list[tuple[torch.Tensor, ...]] = []
        for block in enc.encoder.layer:
            att, s = block.attention, block.attention.self
            self.weights.append(
                tuple(
                    t.detach()
                    for t in (
                        att.LayerNorm.weight,
                        att.LayerNorm.bias,
                        torch.cat([s.query.weight, s.key.weight, s.value.weight]),
                        torch.cat([s.query.bias, s.key.bias, s.value.bias]),
                        att.output.dense.weight,
                        att.output.dense.bias,
                        block.LayerNorm.weight,
                        block.LayerNorm.bias,
                        block.intermediate.dense.weight,
                        block.intermediate.dense.bias,
                        block.output.dense.weight,
                        block.output.dense.bias,
                    )
                )
            )
        device = loaded.device
        if attention == "auto":
            attention = (
                "varlen"
                if varlen_available(device) and loaded.dtype in (torch.bfloat16, torch.float16)
                else "loop"
            )
        if attention not in ("varlen", "loop"):
            raise ConfigError(f"attention {attention!r} unknown; use auto, varlen or loop")
        self.attention = attention
        self.layer_fn = esm_layer
        if compile:
            if attention != "varlen":
                raise ConfigError("compile needs varlen attention (CUDA, bfloat16/float16)")
            self.layer_fn = torch.compile(esm_layer, dynamic=True)

    @property
    def num_layers(self) -> int:
        return len(self.weights)

    def __call__(
        self,
        tokens: torch.Tensor,
        cu: torch.Tensor,
        cu_host: list[int],
        positions: torch.Tensor,
        max_len: int,
        layers: Sequence[int],
    ) -> dict[int, torch.Tensor]:
        """Hidden states [N, H] at `layers` for a packed row of N tokens; stops at the deepest."""
        dtype = self.word_embeddings.weight.dtype
        x = self.word_embeddings(tokens)
        if self.token_dropout:
            # as EsmEmbeddings: <mask> zeroed, each protein scaled by 0.88 / (1 - its mask ratio)
            is_mask = tokens == self.mask_id
            x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
            lengths = torch.diff(cu).long()
            n_prot = len(cu_host) - 1
            seg = torch.repeat_interleave(
                torch.arange(n_prot, device=x.device), lengths, output_size=x.shape[0]
            )
            masked = torch.zeros(n_prot, device=x.device).index_add_(0, seg, is_mask.float())
            scale = (1 - 0.15 * 0.8) / (1 - masked / lengths.float())
            x = (x.float() * scale[seg].unsqueeze(-1)).to(dtype)
        out = {0: x} if 0 in layers else {}
        deepest = max(layers)
        if deepest == 0:
            return out
        freqs = positions.float().unsqueeze(-1) * self.inv_freq.to(x.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        # rounded to the model dtype, as the Hugging Face module does
        cos = emb.cos().to(dtype).unsqueeze(1)
        sin = emb.sin().to(dtype).unsqueeze(1)
        boundaries = None if self.attention == "varlen" else cu_host
        for i in range(1, deepest + 1):
            x = self.layer_fn(
                x, self.weights[i - 1], cos, sin, self.heads, self.eps, cu, max_len, boundaries
            )
            if i == self.num_layers:
                x = self.final_norm(x)
            if i in layers:
                out[i] = x
        return out


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
    index: int  # position of the protein in the chunk
    start: int  # 0-based first residue of the tile
    seq: str
    pid: str


class ScanEngine:
    """Per-residue scores [L, K] of every concept for a list of proteins, tiles stitched.

    `score(proteins)` yields (index, scores) as batches finish, in any order; the caller puts
    them back in input order. Only the tapped layers up to the deepest concept's are computed.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        projection: Projection,
        toks_per_batch: int = 8192,
        window: int | None = None,
        tile_overlap: int = 256,
        mode: str = "auto",
        attention: str = "auto",
        log_dir: Path | None = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"scan engine {mode!r} unknown; use one of {', '.join(MODES)}")
        self.loaded = loaded
        self.device = loaded.device
        packed = None
        if mode in ("auto", "packed"):
            try:
                packed = PackedEncoder(loaded, attention)
            except ConfigError:
                if mode == "packed":
                    raise
                log.info("packed forward not supported for this model; using padded batches")
            mode = "packed" if packed is not None else "padded"
        self.mode = mode
        self.projection = projection.to(self.device)
        if max(projection.layers) > loaded.num_layers:
            raise ConfigError(
                f"concept layer {max(projection.layers)} is deeper than the model "
                f"({loaded.num_layers} layers)"
            )
        self.window = window or loaded.spec.max_residues
        if not 0 <= tile_overlap < self.window // 2 + 1:
            raise ConfigError(f"tile overlap {tile_overlap} must be between 0 and half the window")
        self.overlap = tile_overlap
        self.toks_per_batch = max(int(toks_per_batch), self.window + 2)
        self.alphabet = loaded.alphabet
        log_path = Path(log_dir) / "indexing_corrections.jsonl" if log_dir else None
        self.guard = IndexingGuard(self.alphabet, log_path)
        self.packed = packed
        self.copier = HostCopier(self.device)
        self.stats = {"batches": 0, "token_slots": 0, "tokens": 0}
        index = self.alphabet.index
        self._unk = index["<unk>"]
        self._lut = np.full(256, self._unk, dtype=np.int64)
        for tok, i in index.items():
            if len(tok) == 1:
                self._lut[ord(tok)] = i
        self._guarded = False

    @property
    def num_concepts(self) -> int:
        return int(self.projection.bias.shape[0])

    # -------------------------------------------------------------- one batch
    def _encode_packed(self, pieces: list[_Piece]) -> tuple[np.ndarray, list[int], list[int]]:
        """Token ids of the packed row, protein boundaries and residue-1 rows, vectorized.

        A lookup table instead of a Python loop per residue: at GPU speeds the host must
        prepare a batch faster than the device runs one. The first piece (and any piece with
        a residue the table does not know) still goes through the indexing guard.
        """
        a = self.alphabet
        parts, bounds, offsets, total = [], [0], [], 0
        lead = [a.bos_id] if a.prepend_bos else []
        tail = [a.eos_id] if a.append_eos else []
        for p in pieces:
            ids = self._lut[np.frombuffer(p.seq.encode("ascii"), dtype=np.uint8)]
            row = np.concatenate([lead, ids, tail]).astype(np.int64)
            if not self._guarded or (ids == self._unk).any():
                off = self.guard.residue_offset(row.tolist(), p.seq, p.pid)
                self._guarded = True
            else:
                off = len(lead)
            parts.append(row)
            offsets.append(total + off)
            total += len(row)
            bounds.append(total)
        return np.concatenate(parts), bounds, offsets

    def _launch(self, pieces: list[_Piece]) -> tuple[_Pending, list[int], list[_Piece]]:
        """Start the forward pass and the score copy of one batch; returns without waiting."""
        seqs = [p.seq for p in pieces]
        with torch.inference_mode():
            if self.packed is None:
                tokens, mask = self.alphabet.batch(seqs)
                width = tokens.shape[1]
                rows = tokens.tolist()
                offsets = [
                    r * width + self.guard.residue_offset(rows[r], s, p.pid)
                    for r, (s, p) in enumerate(zip(seqs, pieces, strict=True))
                ]
                out = self.loaded.run_layers(
                    _to_device(tokens, self.device),
                    _to_device(mask, self.device),
                    self.projection.layers,
                )
                scores = self.projection(out).reshape(-1, self.num_concepts)
                slots = tokens.numel()
            else:
                flat, cu_host, offsets = self._encode_packed(pieces)
                lengths = np.diff(cu_host)
                positions = np.arange(len(flat)) - np.repeat(cu_host[:-1], lengths)
                out = self.packed(
                    _to_device(torch.from_numpy(flat), self.device),
                    _to_device(torch.tensor(cu_host, dtype=torch.int32), self.device),
                    cu_host,
                    _to_device(torch.from_numpy(positions), self.device),
                    int(lengths.max()),
                    self.projection.layers,
                )
                scores = self.projection(out)
                slots = len(flat)
            pending = self.copier.submit(scores)
        self.stats["batches"] += 1
        self.stats["token_slots"] += slots
        self.stats["tokens"] += sum(len(s) + 2 for s in seqs)
        return pending, offsets, pieces

    # -------------------------------------------------------------- public
    def score(self, proteins: Sequence[Protein]) -> Iterator[tuple[int, np.ndarray]]:
        pieces: list[_Piece] = []
        n_tiles: dict[int, int] = {}
        for i, prot in enumerate(proteins):
            if not prot.sequence:
                raise InputError(f"protein {prot.id!r} has no residues; remove it from the input")
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


def describe_device(device: torch.device | str) -> str:
    """One line naming the accelerator (for summaries and benchmark output)."""
    device = torch.device(device)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({math.floor(p.total_memory / 2**30)} GiB)"
    return f"CPU ({torch.get_num_threads()} threads)"
