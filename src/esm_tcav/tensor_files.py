"""safetensors files: written atomically and readable by the group (shared cluster folders)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from .errors import ArtifactError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Temporary name, then rename; mode 0666 minus the umask (safetensors itself makes 0600)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata={k: str(v) for k, v in (metadata or {}).items()})
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, meta
