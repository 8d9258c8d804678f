"""Every file this package writes goes through here: atomic, fsynced, group-readable.

Why one module: a killed run must never leave a half-written file behind a valid name, and a
result folder must appear whole or not at all. Text, JSON, numpy arrays, safetensors and figures
all take the same path: write to a unique temporary sibling, fsync, rename. (Appends that stream
by design, such as the scan's output files and logs, say so where they open their file.)
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from esm_tcav.errors import ArtifactError, ConfigError, EsmTcavError


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write(tmp)` fill a temporary sibling, then fsync and rename it to `path`.

    For writers that want a file name (matplotlib's savefig, safetensors, numpy.save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_figure(fig: Any, path: Path, **kwargs: Any) -> None:
    """matplotlib figure to PNG, atomically (the format is named: the temp name has no suffix)."""
    kwargs.setdefault("format", Path(path).suffix.lstrip(".") or "png")
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, **kwargs))


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays to Python, non-finite floats to None (JSON has no NaN/inf)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, rename: readers see the old file or the new one."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write_with(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    """Text given piece by piece (a big table is never held whole), written atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.writelines(lines)

    atomic_write_with(path, write)


def save_npy(path: Path, array: np.ndarray) -> None:
    """A .npy file, atomically (through a handle: numpy.save would add '.npy' to the temp name)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    atomic_write_with(path, write)


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON with numpy values converted and NaN/inf written as null (strict JSON)."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; the artifact is incomplete, retrain it") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable JSON ({exc})") from exc


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(obj: Any) -> str:
    """Stable sha256 of a JSON-able object (sorted keys): the identity of a run's inputs."""
    text = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder into place, replacing an older result."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Temporary name, then rename; mode 0666 minus the umask (safetensors itself makes 0600)."""
    atomic_write_with(
        path,
        lambda tmp: save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()},
            str(tmp),
            metadata={k: str(v) for k, v in (metadata or {}).items()},
        ),
    )


def load_tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, meta


# ---------------------------------------------------------------------- output locations


def check_output_dir(path: Path, what: str = "output folder") -> None:
    """Refuse, before anything is written, an output folder that cannot be one: a file, a
    path under a file, or a folder on a read-only file system (or not writable by this user).

    Writes nothing (root ignores permission bits, so the read-only test asks the file system).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: is a file, not a folder; choose another {what}")
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError(f"{what} {path}: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{what} {path}: {existing} is a file, so no folder can be made under it; choose "
            f"another {what}"
        )
    try:
        readonly = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        readonly = False
    if readonly:
        raise ConfigError(
            f"{what} {path}: {existing} is on a read-only file system; choose another {what}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: {existing} is not writable by this user")


def free_bytes(path: Path) -> int | None:
    """Bytes free for this user on the file system holding `path` (or its nearest parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class DiskError(EsmTcavError):
    """A write failed for a reason of the disk (full, quota, read-only): the message says where."""


def disk_error(exc: OSError, path: Path | None = None, needed: int | None = None) -> EsmTcavError:
    """One line for an OSError of the file system: the path, the reason and, when the disk is
    full, the space free and (if known) the space needed."""
    where = path or (Path(exc.filename) if exc.filename else None)
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(where) if where is not None else None
        parts = [f"{where}: {reason}"]
        if needed is not None:
            parts.append(f"needs about {human_bytes(needed)} more")
        if free is not None:
            parts.append(f"{human_bytes(free)} free there")
        return DiskError(
            "; ".join(parts) + "; free some space or choose another output folder, then rerun "
            "(finished work is kept)"
        )
    if exc.errno == errno.EROFS:
        return DiskError(f"{where}: read-only file system; choose another output folder")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return DiskError(f"{where}: permission denied; choose a folder you can write")
    if exc.errno == errno.ENOTDIR:
        return DiskError(f"{where}: a part of this path is a file, not a folder")
    if exc.errno == errno.EISDIR:
        return DiskError(f"{where}: is a folder, expected a file")
    if exc.errno == errno.ENOENT:
        return DiskError(f"{where}: no such file or folder")
    return DiskError(f"{where}: {reason}")
