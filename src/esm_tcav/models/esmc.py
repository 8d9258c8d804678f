"""The ESM-C backend (EvolutionaryScale's ESM Cambrian), implemented here from its checkpoint.

EvolutionaryScale's `esm` package pins `transformers<4.48.2` and pulls heavy dependencies, so the
architecture is written out here, with the reference's module and parameter names so that its
checkpoint (`data/weights/esmc_*.pth`, a plain state dict) loads strictly:

- `embed` (64 rows; ids 0-32 are the ESM vocabulary, `|` where ESM-2 has `<null_1>`);
- 30 or 36 blocks, each: pre-LayerNorm fused q/k/v (no bias) → LayerNorm on q and on k (over the
  whole width, no bias) → rotary on q/k per head (GPT-NeoX halves, base 10000) → SDPA →
  `out_proj`; pre-LayerNorm SwiGLU FFN (width 8/3·d rounded up to 256); both residual branches
  divided by sqrt(n_layers / 36);
- a final LayerNorm (no bias) and the sequence head (Linear, GELU, LayerNorm, Linear → 64), a
  masked-LM head over the same ids: TCAV's masked-LM target.

Layer i is block i's output, layer `num_layers` the final (normed) states, as `ProteinLM` says.
Rotary positions restart at every protein, so the packed forward (no padding) is exact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from esm_tcav.errors import ConfigError, ModelMismatchError
from esm_tcav.models.base import ProteinLM
from esm_tcav.models.packed import attend_loop, attend_varlen, choose_attention, rotate_half
from esm_tcav.models.registry import ModelSpec
from esm_tcav.models.tokens import Alphabet
from esm_tcav.models.weights import check_shape, fingerprint, freeze, spec_for_shape

log = logging.getLogger("esm_tcav.models.esmc")

#: EvolutionaryScale's sequence vocabulary (esm/utils/constants/esm3.py SEQUENCE_VOCAB)
ESMC_VOCAB = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K",
    "Q", "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z",
    "O", ".", "-", "|",
    "<mask>",
)  # fmt: skip
EMBED_ROWS = 64


def esmc_alphabet() -> Alphabet:
    """<cls> before the residues, <eos> after, one token per residue (as ESM-2)."""
    return Alphabet(ESMC_VOCAB, extra_specials=("|",), name="ESM-C")


def ffn_width(d_model: int, expansion: float = 8 / 3) -> int:
    """The SwiGLU hidden width: expansion x d_model rounded up to a multiple of 256."""
    return int(((expansion * d_model) + 255) // 256 * 256)


# ---------------------------------------------------------------- modules (reference names)


class SwiGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return F.silu(x1) * x2


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.layernorm_qkv = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, 3 * d_model, bias=False)
        )
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.q_ln = nn.LayerNorm(d_model, bias=False)
        self.k_ln = nn.LayerNorm(d_model, bias=False)


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_layers: int, ffn: int):
        super().__init__()
        self.attn = Attention(d_model, n_heads)
        self.ffn = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, 2 * ffn, bias=False),
            SwiGLU(),
            nn.Linear(ffn, d_model, bias=False),
        )
        self.scaling_factor = math.sqrt(n_layers / 36)


class Stack(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_layers: int, ffn: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d_model, n_heads, n_layers, ffn) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model, bias=False)


class EsmcNet(nn.Module):
    """ESM-C's weights under the reference's names (its state dict loads strictly)."""

    def __init__(
        self, d_model: int, n_heads: int, n_layers: int, ffn: int | None = None, head: bool = True
    ):
        super().__init__()
        self.embed = nn.Embedding(EMBED_ROWS, d_model)
        self.transformer = Stack(d_model, n_heads, n_layers, ffn or ffn_width(d_model))
        self.sequence_head = (
            nn.Sequential(
                nn.Linear(d_model, d_model),
                nn.GELU(),
                nn.LayerNorm(d_model),
                nn.Linear(d_model, EMBED_ROWS),
            )
            if head
            else None
        )


# ---------------------------------------------------------------- the layer, any layout

#: attend(q, k, v) with [..., T, heads, d_head] inputs (rotary applied) -> same shape
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rotary_tables(
    positions: torch.Tensor, d_head: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, 1, d_head] for positions [T]: computed in float32, rounded to `dtype` (as
    the reference's RotaryEmbedding)."""
    inv_freq = 1.0 / (
        10000.0 ** (torch.arange(0, d_head, 2, device=positions.device).float() / d_head)
    )
    freqs = positions.float().unsqueeze(-1) * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype).unsqueeze(1), emb.sin().to(dtype).unsqueeze(1)


def block_forward(
    block: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend
) -> torch.Tensor:
    """One ESM-C block on [B, T, D] (padded) or [N, D] (packed) states."""
    att = block.attn
    q, k, v = att.layernorm_qkv(x).chunk(3, dim=-1)
    q, k = att.q_ln(q).to(q.dtype), att.k_ln(k).to(q.dtype)
    shape = (*x.shape[:-1], att.n_heads, x.shape[-1] // att.n_heads)
    q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    a = attend(q, k, v.contiguous())
    x = x + att.out_proj(a.reshape(x.shape)) / block.scaling_factor
    return x + block.ffn(x) / block.scaling_factor


def padded_attend(mask: torch.Tensor) -> Attend:
    """SDPA over a padded batch; padding keys masked out (the reference masks by sequence id,
    which is the same for every real token)."""
    keys = mask.bool()[:, None, None, :]

    def attend(q, k, v):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keys).transpose(1, 2)

    return attend


class Esmc(ProteinLM):
    """ESM-C run block by block; the sequence head is a masked-LM head (TCAV target)."""

    def __init__(self, net: EsmcNet, spec: ModelSpec, digest: str, source: str):
        super().__init__(spec, esmc_alphabet(), net, digest, source)
        self.net = net
        self.head_kind = "masked_lm" if net.sequence_head is not None else None

    @property
    def d_head(self) -> int:
        return self.hidden_size // self.spec.num_heads

    def _run(
        self, x: torch.Tensor, start: int, stop: int, cos, sin, attend: Attend, layers=()
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        out = {}
        blocks = self.net.transformer.blocks
        for i in range(start + 1, stop + 1):
            x = block_forward(blocks[i - 1], x, cos, sin, attend)
            if i == self.num_layers:
                x = self.net.transformer.norm(x)
            if i in layers:
                out[i] = x
        return x, out

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, layers: Sequence[int]
    ) -> dict[int, torch.Tensor]:
        x = self.net.embed(tokens)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        cos, sin = rotary_tables(positions, self.d_head, x.dtype)
        _, out = self._run(x, 0, max(layers), cos, sin, padded_attend(mask), layers)
        if 0 in layers:
            out[0] = x
        return out

    def forward_from(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        cos, sin = rotary_tables(positions, self.d_head, hidden.dtype)
        final, _ = self._run(hidden, layer, self.num_layers, cos, sin, padded_attend(mask))
        return final

    @property
    def supports_packed(self) -> bool:
        return True

    def packed_encoder(self, attention: str = "auto", compile: bool = False) -> PackedEsmc:
        return PackedEsmc(self, attention, compile)

    def head_logits(self, final: torch.Tensor) -> torch.Tensor:
        if self.net.sequence_head is None:
            return super().head_logits(final)
        return self.net.sequence_head(final)


class PackedEsmc:
    """ESM-C on packed rows (no padding): the same blocks, attention within each protein
    (varlen flash attention on CUDA in half precision, one SDPA call per protein elsewhere)."""

    def __init__(self, loaded: Esmc, attention: str = "auto", compile: bool = False):
        self.loaded = loaded
        self.attention = choose_attention(attention, loaded.device, loaded.dtype)
        self.scale = loaded.d_head**-0.5
        if compile:
            raise ConfigError("compile is not available for the ESM-C packed forward yet")

    def __call__(
        self,
        tokens: torch.Tensor,
        cu: torch.Tensor,
        cu_host: list[int],
        positions: torch.Tensor,
        max_len: int,
        layers: Sequence[int],
    ) -> dict[int, torch.Tensor]:
        m = self.loaded
        x = m.net.embed(tokens)
        cos, sin = rotary_tables(positions, m.d_head, x.dtype)
        attend = self._attend(cu, cu_host, max_len)
        _, out = m._run(x, 0, max(layers), cos, sin, attend, layers)
        if 0 in layers:
            out[0] = x
        return out

    def between(
        self,
        start: int,
        stop: int,
        hidden: torch.Tensor,
        cu: torch.Tensor,
        cu_host: list[int],
        positions: torch.Tensor,
        max_len: int,
        first_only: bool = False,
    ) -> torch.Tensor:
        """States at `stop` from the states [N, D] at `start` (differentiable); `first_only`
        keeps each protein's first token (every token is computed: ESM-C's head is an LM head,
        which reads them all)."""
        m = self.loaded
        cos, sin = rotary_tables(positions, m.d_head, hidden.dtype)
        x, _ = m._run(hidden, start, stop, cos, sin, self._attend(cu, cu_host, max_len))
        return x[cu[:-1].long()] if first_only else x

    def _attend(self, cu: torch.Tensor, cu_host: list[int], max_len: int) -> Attend:
        if self.attention == "varlen":

            def attend(q, k, v):
                return attend_varlen(q, k, v, cu, max_len, self.scale)
        else:

            def attend(q, k, v):
                return attend_loop(q, k, v, cu_host, self.scale)

        return attend


# ---------------------------------------------------------------- loading


def checkpoint_file(path: Path) -> Path:
    """The weights file: the path itself, or the one `.pth`/`.safetensors` in a folder (the
    Hugging Face repo layout keeps it under data/weights/)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"model.path {str(path)!r} does not exist")
    found = [
        p
        for pattern in ("data/weights/*.pth", "*.pth", "*.pt", "*.safetensors")
        for p in sorted(path.glob(pattern))
    ]
    if len(found) != 1:
        raise ModelMismatchError(
            f"{path}: expected one ESM-C weights file (data/weights/esmc_*.pth, *.pth or "
            f"*.safetensors), found {len(found)}; point model.path at the file"
        )
    return found[0]


def read_state(file: Path) -> dict[str, torch.Tensor]:
    """A state dict without pickle code: torch.load(weights_only=True) or safetensors."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or not a tensor file: one clear line
        raise ModelMismatchError(
            f"{file}: cannot read as an ESM-C checkpoint ({str(exc).splitlines()[0]})"
        ) from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or "embed.weight" not in state:
        for prefix in ("esm.", "model."):
            stripped = {k.removeprefix(prefix): v for k, v in state.items()}
            if "embed.weight" in stripped:
                return stripped
        raise ModelMismatchError(f"{file}: no embed.weight; not an ESM-C checkpoint")
    return state


def build(
    state: dict[str, torch.Tensor], spec: ModelSpec | None, where: str
) -> tuple[EsmcNet, ModelSpec]:
    """The network for a state dict, checked against its registry entry."""
    rows, d_model = state["embed.weight"].shape
    n_layers = sum(1 for k in state if k.endswith(".attn.out_proj.weight"))
    spec = spec or spec_for_shape("esmc", d_model, n_layers, where)
    checks = [
        ("hidden size", d_model, spec.hidden_size),
        ("number of layers", n_layers, spec.num_layers),
        ("embedding rows", rows, EMBED_ROWS),
    ]
    check_shape(checks, spec, where)
    if spec.num_heads <= 0 or d_model % spec.num_heads:
        raise ConfigError(
            f"registry entry {spec.name!r}: num_heads {spec.num_heads} must divide the hidden "
            f"size {d_model} (the checkpoint does not record it)"
        )
    ffn = state["transformer.blocks.0.ffn.3.weight"].shape[1]
    net = EsmcNet(d_model, spec.num_heads, n_layers, ffn, head="sequence_head.3.weight" in state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelMismatchError(
            f"{where}: checkpoint does not fit ESM-C (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )
    return net, spec


def _download(spec: ModelSpec, allow_download: bool) -> Path:
    source = spec.source or {}
    if "hub" not in source:
        raise ConfigError(f"model {spec.name!r} has no source; set model.path")
    if not allow_download:
        raise ConfigError(
            f"model {spec.name!r} would be downloaded from the Hugging Face hub "
            f"({source['hub']}), but downloads are off; set model.path to the local "
            "esmc_*.pth file (or its folder) or set model.allow_download: true"
        )
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source["hub"], source["file"]))
    except Exception as exc:
        raise ConfigError(
            f"cannot download {source['hub']} ({str(exc).splitlines()[0]}); check the network "
            "or set model.path to a local checkpoint"
        ) from exc


def load(
    spec: ModelSpec | None,
    path: Path | None = None,
    *,
    allow_download: bool = False,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Esmc:
    """The backend entry point: an ESM-C checkpoint file or folder (or the hub, if allowed)."""
    if path is None:
        if spec is None:
            raise ConfigError("model: give model.name (an ESM-C registry entry) or model.path")
        path = _download(spec, allow_download)
    file = checkpoint_file(Path(path).expanduser())
    state = read_state(file)
    net, spec = build(state, spec, str(file))
    digest = fingerprint(
        ["esmc", spec.hidden_size, spec.num_layers, spec.num_heads],
        net.state_dict(),
        ("embed.weight", "transformer.norm.weight", "q_ln.weight"),
    )
    freeze(net, device, dtype)
    loaded = Esmc(net, spec, digest, str(file))
    log.info("loaded %s from %s (fingerprint %s)", spec.name, file, digest)
    return loaded
