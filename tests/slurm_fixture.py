"""Pytest plugin: a real single-node Slurm cluster (slurmctld + slurmd + munged).

Register it with ``pytest_plugins = ["tests.slurm_fixture"]`` in ``tests/conftest.py``.

Prerequisite (once per machine, as root): ``scripts/slurm_cluster.sh install``.
The session-scoped ``slurm_cluster`` fixture runs ``scripts/slurm_cluster.sh start``
(idempotent, ~1 s), puts ``SLURM_CONF`` into ``os.environ`` (the config lives in the state
folder ``$ESM_TCAV_SLURM_DIR``, default ``/tmp/esm-tcav-slurm``, not in /etc/slurm), and
at session end stops the daemons again if -- and only if -- this fixture started them.

Example::

    @pytest.mark.slurm
    def test_x(slurm_cluster, tmp_path):
        jid = slurm_cluster.sbatch("--array=0-3", "--wrap", "echo $SLURM_ARRAY_TASK_ID",
                                   cwd=tmp_path)
        states = slurm_cluster.wait_for_jobs([jid], timeout=60)
        assert set(states.values()) == {"COMPLETED"}
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"

#: job states after which a job never runs again
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
        "UNKNOWN",  # purged from slurmctld's memory (older than MinJobAge=600 s)
    }
)

_FIELD = re.compile(r"(\w+)=(\S*)")


@dataclass
class SlurmCluster:
    """Handle on the running cluster, yielded by the ``slurm_cluster`` fixture."""

    state_dir: Path
    conf: Path
    env: dict[str, str]
    """os.environ plus SLURM_CONF: pass as ``env=`` to subprocesses that call Slurm."""
    started_here: bool
    node: str = field(default_factory=lambda: os.uname().nodename.split(".")[0])

    def run(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (``sinfo``, ``squeue``, ...) with this cluster's env."""
        return subprocess.run(
            list(args), env=self.env, check=check, capture_output=True, text=True, **kw
        )

    def sbatch(self, *args: str, cwd: str | os.PathLike[str] | None = None) -> str:
        """``sbatch --parsable ARGS`` and return the job id (array jobs: the array id)."""
        proc = self.run("sbatch", "--parsable", *args, cwd=cwd, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job_states(self, job_ids: Iterable[str | int]) -> dict[str, str]:
        """Current state of each job via ``scontrol -o show job``.

        Keys: the plain job id for a normal job; ``"<array id>_<task id>"`` for each task of
        an array job (a not-yet-split pending array shows as e.g. ``"7_[1-3]"``).
        A job id that slurmctld no longer knows maps to ``"UNKNOWN"``.
        """
        states: dict[str, str] = {}
        for jid in job_ids:
            jid = str(jid)
            proc = self.run("scontrol", "-o", "show", "job", jid, check=False)
            if proc.returncode != 0:
                if "Invalid job id" in proc.stderr:
                    states[jid] = "UNKNOWN"
                    continue
                raise RuntimeError(f"scontrol show job {jid}: {proc.stderr.strip()}")
            for line in proc.stdout.splitlines():
                rec = dict(_FIELD.findall(line))
                if not rec.get("JobId"):
                    continue
                task = rec.get("ArrayTaskId")
                key = f"{rec['ArrayJobId']}_{task}" if task and rec.get("ArrayJobId") else jid
                states[key] = rec.get("JobState", "UNKNOWN")
        return states

    def wait_for_jobs(
        self, job_ids: Iterable[str | int], timeout: float = 120.0, poll: float = 0.5
    ) -> dict[str, str]:
        """Poll until every job (and every array task) is in a terminal state.

        Returns ``job_states(job_ids)`` -- e.g. ``{"1_0": "COMPLETED", ..., "2": "FAILED"}``.
        Raises TimeoutError (with squeue output and the slurmctld log tail) on timeout.
        A job whose dependency can never be met is CANCELLED by slurmctld
        (``DependencyParameters=kill_invalid_depend``), so it does not hang.
        """
        ids = [str(j) for j in job_ids]
        deadline = time.monotonic() + timeout
        while True:
            states = self.job_states(ids)
            if states and all(s in TERMINAL_STATES for s in states.values()):
                return states
            if time.monotonic() > deadline:
                queue = self.run("squeue", "-a", check=False).stdout
                raise TimeoutError(
                    f"jobs {ids} not finished after {timeout}s: {states}\n{queue}\n"
                    f"{self.log_tail()}"
                )
            time.sleep(poll)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.state_dir / "log" / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(out)


def _script(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), action], env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    missing = [
        b
        for b in ("sbatch", "squeue", "scontrol", "slurmctld", "slurmd", "munged")
        if shutil.which(b) is None
    ]
    if missing:
        pytest.fail(
            f"Slurm is not installed ({', '.join(missing)} not on PATH): "
            "run scripts/slurm_cluster.sh install",
            pytrace=False,
        )
    state_dir = Path(os.environ.get("ESM_TCAV_SLURM_DIR", "/tmp/esm-tcav-slurm"))
    conf = state_dir / "slurm.conf"
    env = {**os.environ, "ESM_TCAV_SLURM_DIR": str(state_dir), "SLURM_CONF": str(conf)}

    already_running = _script("status", env).returncode == 0
    started = _script("start", env)
    if started.returncode != 0:
        if not already_running:
            _script("stop", env)
        pytest.fail(
            f"scripts/slurm_cluster.sh start failed (rc {started.returncode}):\n"
            f"{started.stdout}\n{started.stderr}",
            pytrace=False,
        )
    old_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)  # so code under test that shells out finds it
    cluster = SlurmCluster(
        state_dir=state_dir, conf=conf, env=env, started_here=not already_running
    )
    try:
        yield cluster
    finally:
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
        if cluster.started_here:
            _script("stop", env)
