"""What every backend does with loaded weights: fingerprint them as stored, then freeze them.

The fingerprint identifies a checkpoint cheaply (every tensor's name and shape plus a few full
tensors), before any cast: a bfloat16 load on a GPU must match the CAVs trained from a float32
load of the same file. Libraries and CAVs record it; a different checkpoint is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import torch
from torch import nn


def fingerprint(meta: Sequence, state: Mapping[str, torch.Tensor], full: Sequence[str]) -> str:
    """sha256 (16 hex) of `meta` (JSON), every tensor's name and shape, and the tensors whose
    names end with one of `full` (their values)."""
    h = hashlib.sha256()
    h.update(json.dumps(list(meta)).encode())
    for name in sorted(state):
        h.update(f"{name}:{tuple(state[name].shape)}".encode())
    for name in sorted(state):
        if name.endswith(tuple(full)):
            h.update(state[name].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def freeze(module: nn.Module, device: str, dtype: torch.dtype) -> nn.Module:
    """Evaluation mode on `device` in `dtype`, no gradients for the weights (TCAV differentiates
    with respect to hidden states only)."""
    module.eval().to(device=device, dtype=dtype)
    for p in module.parameters():
        p.requires_grad_(False)
    return module
