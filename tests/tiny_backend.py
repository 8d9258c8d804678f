"""A second model family in one module: how a newcomer adds a backend without touching esm_tcav.

A tiny random-weight BERT-like encoder (learned absolute positions, post-LayerNorm
`torch.nn.TransformerEncoderLayer` blocks, its own 30-token vocabulary with [CLS]/[SEP]
specials, a classification head on [CLS]). Nothing like ESM-2 but the `ProteinLM` interface.
A registry entry names it: `backend: tests.tiny_backend` (see tests/test_backend_interface.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from esm_tcav.models.base import ProteinLM
from esm_tcav.models.registry import ModelSpec
from esm_tcav.models.tokens import Alphabet

SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
VOCAB = SPECIALS + tuple("ACDEFGHIKLMNPQRSTVWYXBUZO")


class _Net(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        h = spec.hidden_size
        self.embed = nn.Embedding(len(VOCAB), h, padding_idx=0)
        self.pos = nn.Embedding(spec.max_tokens, h)
        self.norm = nn.LayerNorm(h)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                h, spec.num_heads, 2 * h, dropout=0.0, activation="gelu", batch_first=True
            )
            for _ in range(spec.num_layers)
        )
        self.head = nn.Linear(h, 2)


class TinyBert(ProteinLM):
    head_kind = "sequence_classification"

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, layers: Sequence[int]
    ) -> dict[int, torch.Tensor]:
        net = self.module
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = net.norm(net.embed(tokens) + net.pos(positions)[None])
        out = {0: hidden} if 0 in layers else {}
        for i, block in enumerate(net.blocks[: max(layers)], start=1):
            hidden = block(hidden, src_key_padding_mask=mask == 0)
            if i in layers:
                out[i] = hidden
        return out

    def forward_from(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.module.blocks[layer:]:
            hidden = block(hidden, src_key_padding_mask=mask == 0)
        return hidden

    @property
    def num_classes(self) -> int:
        return 2

    def head_logits(self, final: torch.Tensor) -> torch.Tensor:
        return self.module.head(final[:, 0])


def load(
    spec: ModelSpec,
    path: Path | None = None,
    *,
    allow_download: bool = False,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TinyBert:
    """Random weights from the registry entry's seed (`source: {seed: N}`), or a saved state."""
    torch.manual_seed(int((spec.source or {}).get("seed", 0)))
    net = _Net(spec)
    if path is not None:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    net.eval().to(device=device, dtype=dtype)
    for p in net.parameters():
        p.requires_grad_(False)
    alphabet = Alphabet(
        VOCAB, bos="[CLS]", eos="[SEP]", pad="[PAD]", unk="[UNK]", mask="[MASK]", name="tiny"
    )
    return TinyBert(spec, alphabet, net, digest.hexdigest()[:16], str(path or "random weights"))
