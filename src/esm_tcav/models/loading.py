"""`load_model`: the one entry point; the registry entry's `backend` picks the module that loads.

A backend is one module with a `load(spec, path, *, allow_download, device, dtype)` function
returning a `ProteinLM`. Built-in backends are modules of `esm_tcav.models` (`esm2`); a user's
registry may name its own by import path, `package.module` (its `load`) or `package.module:attr`,
so adding a model family takes one module and one registry entry, no change to the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch

from esm_tcav.errors import ConfigError
from esm_tcav.models.base import ProteinLM
from esm_tcav.models.registry import get_spec

DEFAULT_BACKEND = "esm2"


def backend_loader(backend: str) -> Callable[..., ProteinLM]:
    """The `load` function of a backend named in a registry entry."""
    module_name, _, attr = backend.partition(":")
    if "." not in module_name:
        module_name = f"esm_tcav.models.{module_name}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"model backend {backend!r}: cannot import {module_name} ({exc}); name a built-in "
            "backend (esm2) or an importable module, e.g. backend: mypackage.my_backend"
        ) from exc
    loader = getattr(module, attr or "load", None)
    if not callable(loader):
        raise ConfigError(f"model backend {backend!r}: {module_name} has no {attr or 'load'}()")
    return loader


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            name
        ]
    except KeyError as exc:
        raise ConfigError(
            f"dtype {name!r} unknown; use auto, float32, bfloat16 or float16"
        ) from exc


def check_device(device: str) -> None:
    """Refuse a device this torch cannot use, naming what it has (before loading anything)."""
    kind = str(device).split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        built = "built without CUDA" if torch.version.cuda is None else "sees no CUDA GPU"
        raise ConfigError(
            f"device {device!r}: this torch ({torch.__version__}) {built}; use device: cpu, "
            "or run on a GPU node with a CUDA build of torch"
        )
    if kind == "cuda" and ":" in str(device):
        index = int(str(device).split(":")[1] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available here; use device: cpu")
    if kind not in {"cpu", "cuda", "mps"}:
        raise ConfigError(f"device {device!r}: unknown; use cpu, cuda, cuda:N or mps")


def load_model(
    name: str | None = None,
    path: str | Path | None = None,
    *,
    allow_download: bool = False,
    device: str = "cpu",
    dtype: str = "auto",
    registry_file: str | Path | None = None,
) -> ProteinLM:
    """The model named `name` in the registry (and/or the checkpoint at `path`), checked."""
    if name is None and path is None:
        raise ConfigError("model: give model.name (a registry entry) or model.path")
    check_device(device)
    spec = get_spec(name, registry_file) if name else None
    loader = backend_loader(spec.backend if spec else DEFAULT_BACKEND)
    return loader(
        spec,
        Path(path).expanduser() if path is not None else None,
        allow_download=allow_download,
        device=device,
        dtype=resolve_dtype(dtype, device),
    )
