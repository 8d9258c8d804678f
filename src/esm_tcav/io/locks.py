"""One writer per output folder: a lock file naming its holder (PID, host, start time).

Why: two commands writing one folder interleave their appends and version numbers and both
exit 0 (two scans into one `--out` duplicated 505 of 1,400 proteins). A second writer must stop
at once with one line naming the holder, and a lock left by a killed process must not block
the rerun that resumes its work.

    with folder_lock(out, what="scan"):
        ...  # the folder exists now; nobody else holds it

What the lock relies on (local disks and shared cluster file systems alike):
- Taking it is one hard link of a fully written temporary file to `<folder>/.esm-tcav.lock`
  (`link` fails if the name exists, atomically, also on NFSv3+); file systems without hard
  links fall back to `open(O_CREAT | O_EXCL)`. A reader never sees a half-written lock.
- A lock whose holder is gone is *stale* and taken over:
  - same host (same host name and boot id): the PID is not alive, or it is alive but is a
    different process (its start time in `/proc` differs from the recorded one: PID reuse);
    a lock from an earlier boot of this host is stale;
  - another host (PIDs mean nothing there): the holder touches the lock file every
    `HEARTBEAT_S` seconds; a lock not touched for `stale_after_s()` seconds (default 300,
    env `ESM_TCAV_LOCK_STALE_S`) is stale. This assumes the hosts' clocks agree to well
    under that (NTP, as on any cluster).
- Taking over is serialized by a second link-created file (`.esm-tcav.lock.takeover`), so two
  processes that both find a stale lock cannot both win.
- A process that already holds a folder's lock may enter it again (nested verbs of `run`).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from esm_tcav.errors import EsmTcavError

LOCK_NAME = ".esm-tcav.lock"
HEARTBEAT_S = 30.0
_TAKEOVER_STALE_S = 60.0  # a takeover guard older than this was left by a killed process
_WAIT_S = 5.0  # how long to retry while another process is mid-takeover


class LockHeldError(EsmTcavError):
    """Another live process writes into the folder (the message names it)."""


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock, as recorded in the lock file."""

    path: Path
    pid: int
    host: str
    started: str
    what: str
    boot_id: str = ""
    pid_start: str = ""
    token: str = ""

    def describe(self) -> str:
        return f"{self.what} (PID {self.pid} on {self.host}, started {self.started})"


def stale_after_s() -> float:
    """Seconds without a heartbeat after which another host's lock counts as stale."""
    try:
        return max(float(os.environ.get("ESM_TCAV_LOCK_STALE_S", "300")), 2 * HEARTBEAT_S)
    except ValueError:
        return 300.0


def lock_path(folder: Path, name: str = "") -> Path:
    """The lock file of `folder` (`name` gives a separate lock, e.g. one per shard)."""
    return Path(folder) / (f".esm-tcav.{name}.lock" if name else LOCK_NAME)


def read_lock(path: Path) -> LockInfo | None:
    """The holder recorded in lock file `path`, or None when there is no (readable) lock."""
    try:
        doc = json.loads(Path(path).read_text())
        return LockInfo(
            path=Path(path),
            pid=int(doc["pid"]),
            host=str(doc["host"]),
            started=str(doc["started"]),
            what=str(doc.get("what", "esm-tcav")),
            boot_id=str(doc.get("boot_id", "")),
            pid_start=str(doc.get("pid_start", "")),
            token=str(doc.get("token", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def holder(folder: Path, name: str = "") -> LockInfo | None:
    """Who holds `folder`'s lock now (a live holder), or None."""
    info = read_lock(lock_path(folder, name))
    return info if info is not None and not is_stale(info) else None


# ---------------------------------------------------------------------- liveness
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_start(pid: int) -> str:
    """Start time of process `pid` in clock ticks after boot ('' where /proc is absent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has that PID (another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(info: LockInfo, now: float | None = None) -> bool:
    """True when the holder recorded in `info` is certainly or (other host) presumably gone."""
    if info.host == socket.gethostname() and (not info.boot_id or info.boot_id == _boot_id()):
        if not pid_alive(info.pid):
            return True
        current = _pid_start(info.pid)
        return bool(info.pid_start and current and current != info.pid_start)
    if info.host == socket.gethostname():
        return True  # recorded before this host's last reboot
    try:
        age = (now or time.time()) - info.path.stat().st_mtime
    except OSError:
        return True
    return age > stale_after_s()


# ---------------------------------------------------------------------- taking and leaving
def _create_exclusive(path: Path, text: str) -> bool:
    """Create `path` holding `text` if it does not exist; False if it does. Never half-written."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            # NFS may report failure for a link that succeeded: the link count tells
            with suppress(OSError):
                if os.stat(tmp).st_nlink == 2:
                    return True
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
        try:  # no hard links on this file system: exclusive create, then write
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _held_error(folder: Path, info: LockInfo) -> LockHeldError:
    return LockHeldError(
        f"{folder}: in use by {info.describe()}; wait for it to finish "
        f"(if that process is gone for good, delete {info.path})"
    )


def _take_over(path: Path, stale: LockInfo) -> None:
    """Remove the stale lock `stale` unless someone replaced it meanwhile (serialized)."""
    guard = path.with_name(path.name + ".takeover")
    if not _create_exclusive(guard, json.dumps({"pid": os.getpid(), "host": socket.gethostname()})):
        with suppress(OSError):
            if time.time() - guard.stat().st_mtime > _TAKEOVER_STALE_S:
                guard.unlink()
        return
    try:
        current = read_lock(path)
        if current is not None and current.token == stale.token:
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


_held: dict[Path, int] = {}
_held_guard = threading.Lock()


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with suppress(OSError):
            os.utime(path)


def _missing_parents(folder: Path) -> list[Path]:
    """The folders mkdir -p would create for `folder`, deepest first."""
    out = []
    p = folder
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


@contextmanager
def folder_lock(folder: Path, what: str, name: str = "", wait_s: float = 0.0) -> Iterator[LockInfo]:
    """Hold `folder`'s lock (creating the folder) for the block; `LockHeldError` if taken.

    `what` says what the holder does ("scan", "run train", ...), shown to a second writer.
    `wait_s` > 0 waits up to that long for a live holder to finish (for short critical
    sections such as a manifest update); by default a held lock fails at once.
    Folders created here are removed again on the way out if the block left them empty, so
    a command that fails before writing leaves no trace.
    """
    folder = Path(folder)
    key = lock_path(folder, name).resolve()
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield read_lock(key) or LockInfo(key, os.getpid(), socket.gethostname(), "", what)
        finally:
            with _held_guard:
                _held[key] -= 1
        return

    created = _missing_parents(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder, name)
    info = LockInfo(
        path=path,
        pid=os.getpid(),
        host=socket.gethostname(),
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        what=what,
        boot_id=_boot_id(),
        pid_start=_pid_start(os.getpid()),
        token=uuid.uuid4().hex,
    )
    doc = {k: str(v) if isinstance(v, Path) else v for k, v in info.__dict__.items()}
    doc.pop("path")
    try:
        deadline = time.monotonic() + _WAIT_S
        patience = time.monotonic() + wait_s
        while not _create_exclusive(path, json.dumps(doc) + "\n"):
            other = read_lock(path)
            if other is not None and not is_stale(other):
                if time.monotonic() < patience:
                    time.sleep(0.1)
                    deadline = time.monotonic() + _WAIT_S
                    continue
                raise _held_error(folder, other)
            if other is None:
                # unreadable: a lock being taken over right now, or garbage left by a crash
                with suppress(OSError):
                    if time.time() - path.stat().st_mtime > _TAKEOVER_STALE_S:
                        path.unlink()
            else:
                _take_over(path, other)
            if time.monotonic() > deadline:
                raise LockHeldError(
                    f"{folder}: could not take the lock {path} (another process is taking it "
                    "over); try again"
                )
            time.sleep(0.05)
    except BaseException:
        _remove_empty(created)
        raise

    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), daemon=True)
    beat.start()
    with _held_guard:
        _held[key] = 1
    try:
        yield info
    finally:
        with _held_guard:
            _held.pop(key, None)
        stop.set()
        current = read_lock(path)
        if current is not None and current.token == info.token:
            path.unlink(missing_ok=True)
        _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    for p in created:  # deepest first; stops at the first folder that holds something
        try:
            p.rmdir()
        except OSError:
            return
