"""Reliability (issue 14): locks, protected settings, inputs that never collide, validation
before the first write, one clean line for every expected failure, SLURM resubmission."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esm_tcav.io.locks import LockHeldError, folder_lock, holder, lock_path, read_lock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

_HOLD = """
import sys, time
from esm_tcav.io.locks import folder_lock
with folder_lock(sys.argv[1], what="holder test"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder_process(folder: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


# ---------------------------------------------------------------------- 1. the lock itself
def test_second_process_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    proc = _holder_process(out, 30)
    try:
        with pytest.raises(LockHeldError) as err, folder_lock(out, what="second"):
            pass
        msg = str(err.value)
        assert f"PID {proc.pid} on {socket.gethostname()}" in msg and "holder test" in msg
        assert holder(out).pid == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    proc = _holder_process(out, 30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_lock(lock_path(out)).pid == proc.pid  # left behind by kill -9
    assert holder(out) is None  # ... but recognized as stale
    with folder_lock(out, what="rerun") as info:
        assert read_lock(lock_path(out)).token == info.token
    assert not lock_path(out).exists()


def test_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    # a live process with the recorded PID but another start time is not the holder
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out, what="x"):
        doc = json.loads(lock_path(out).read_text())
    doc["pid_start"] = "1"  # our own PID, started at another time: PID reuse
    lock_path(out).write_text(json.dumps(doc))
    with folder_lock(out, what="y"):
        pass


def test_other_host_lock_is_stale_only_without_heartbeat(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    doc = {"pid": 1, "host": "node-elsewhere", "started": "then", "what": "run", "token": "t"}
    lock_path(out).write_text(json.dumps(doc))
    with pytest.raises(LockHeldError, match="node-elsewhere"), folder_lock(out, what="x"):
        pass
    old = time.time() - 3600
    os.utime(lock_path(out), (old, old))
    with folder_lock(out, what="x") as info:
        assert info.host == socket.gethostname()


def test_reentrant_in_one_process_and_failure_leaves_no_folder(tmp_path):
    out = tmp_path / "a" / "b"
    with folder_lock(out, what="outer"), folder_lock(out, what="inner"):
        assert lock_path(out).exists()
    assert not lock_path(out).exists()
    assert not (tmp_path / "a").exists()  # created here, left empty: removed
    with pytest.raises(RuntimeError), folder_lock(out, what="fails"):
        raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()
