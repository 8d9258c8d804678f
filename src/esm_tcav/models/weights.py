"""What every backend does with a checkpoint: find it, check its shape, fingerprint, freeze.

The fingerprint identifies a checkpoint cheaply (every tensor's name and shape plus a few full
tensors), before any cast: a bfloat16 load on a GPU must match the CAVs trained from a float32
load of the same file. Libraries and CAVs record it; a different checkpoint is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from esm_tcav.errors import ConfigError, ModelMismatchError
from esm_tcav.models.registry import ModelSpec, load_registry


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


# ---------------------------------------------------------------- checks every loader shares


def spec_for_shape(backend: str, hidden_size: int, num_layers: int, where: str) -> ModelSpec:
    """The one registry entry of `backend` with this shape (a checkpoint loaded by path alone)."""
    matches = [
        s
        for s in load_registry().values()
        if s.backend == backend and (s.hidden_size, s.num_layers) == (hidden_size, num_layers)
    ]
    if len(matches) != 1:
        raise ModelMismatchError(
            f"{where}: no {backend} registry entry has hidden size {hidden_size} and "
            f"{num_layers} layers; add one to a registry YAML (backend: {backend}) and name it "
            "in model.name"
        )
    return matches[0]


def check_shape(checks: Sequence[tuple[str, object, object]], spec: ModelSpec, where: str) -> None:
    """One clear line per (what, actual, expected) that differs between checkpoint and entry."""
    for what, actual, expected in checks:
        if actual != expected:
            raise ModelMismatchError(
                f"{where}: {what} is {actual} but registry entry {spec.name!r} expects "
                f"{expected}; point model.name at the matching entry or use the right checkpoint"
            )


def hf_source(
    spec: ModelSpec | None, path: Path | None, allow_download: bool
) -> tuple[str | Path, bool]:
    """(folder or hub name, local only) of a Hugging Face model: `model.path` when given, the
    registry's hub name only when downloads are allowed."""
    if path is not None:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"model.path {str(folder)!r}: no config.json; point it at the Hugging Face "
                "model folder (config.json, weights, tokenizer files)"
            )
        return folder, True
    hub = (spec.source or {}).get("hub") if spec else None
    if hub is None:
        raise ConfigError("model: give model.path (a model folder) or a registry name")
    if not allow_download:
        raise ConfigError(
            f"model {spec.name!r} would be downloaded from the Hugging Face hub ({hub}), but "
            "downloads are off; set model.path to the local model folder or set "
            "model.allow_download: true"
        )
    return hub, False
