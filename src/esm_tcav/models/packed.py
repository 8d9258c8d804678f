"""Attention within each protein of a packed row: the pieces every packed forward shares.

A packed row concatenates the tokens of many proteins (no padding); attention must stay inside
each protein. On CUDA in bfloat16/float16 that is variable-length flash attention
(`torch.nn.attention.varlen.varlen_attn`, cumulative sequence lengths); elsewhere one SDPA call
per protein (varlen_attn raises NotImplementedError on the CPU). Rotary models (ESM-2, ESM-C)
restart positions at every protein, so the same weights give the same states as padded batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from esm_tcav.errors import ConfigError


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The rotary embedding's half rotation (GPT-NeoX style: first half, second half)."""
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


def choose_attention(attention: str, device: torch.device, dtype: torch.dtype) -> str:
    """`auto` -> varlen where it runs (CUDA, half precision), else the per-protein loop."""
    if attention == "auto":
        half = dtype in (torch.bfloat16, torch.float16)
        attention = "varlen" if varlen_available(device) and half else "loop"
    if attention not in ("varlen", "loop"):
        raise ConfigError(f"attention {attention!r} unknown; use auto, varlen or loop")
    return attention


def attend_loop(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_host: list[int],
    scale: float = 1.0,
    q_host: list[int] | None = None,
) -> torch.Tensor:
    """Attention within each protein of a packed row [N, heads, d]: one SDPA call per protein.

    `q_host`: where each protein's queries start in `q` when they are not all its tokens (a
    last layer run for some tokens only); `cu_host` then bounds the keys and values alone.
    """
    q_host = cu_host if q_host is None else q_host
    out = torch.empty_like(q)
    spans = zip(q_host[:-1], q_host[1:], cu_host[:-1], cu_host[1:], strict=True)
    for qa, qb, a, b in spans:
        qs = q[qa:qb].transpose(0, 1).unsqueeze(0)
        ks, vs = (t[a:b].transpose(0, 1).unsqueeze(0) for t in (k, v))
        out[qa:qb] = F.scaled_dot_product_attention(qs, ks, vs, scale=scale)[0].transpose(0, 1)
    return out


def attend_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu: torch.Tensor,
    max_len: int,
    scale: float = 1.0,
    cu_q: torch.Tensor | None = None,
    max_q: int | None = None,
) -> torch.Tensor:
    """Variable-length flash attention over the packed row (CUDA, half precision); `cu_q` and
    `max_q` bound the queries when they are not every token (as `q_host` of `attend_loop`)."""
    from torch.nn.attention.varlen import varlen_attn

    if cu_q is None:
        cu_q, max_q = cu, max_len
    return varlen_attn(q, k, v, cu_q, cu, max_q, max_len, scale=scale)
