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
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from esm_tcav.cli import app
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


# ---------------------------------------------------------------------- shared set-up
def cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command in its own process (exit status and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-m", "esm_tcav", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=timeout,
    )


def one_error_line(res) -> str:
    """stderr of an expected failure: exactly one line, 'error: ...', no traceback."""
    err = res.stderr if isinstance(res, subprocess.CompletedProcess) else res.stderr
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("Loading weights")]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def listing(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its sha256 (to prove nothing changed)."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def scanlib(tiny, tiny_hf_folder, tiny_registry, tmp_path_factory):
    """A one-concept library recording its model's path, and FASTAs of 12 and 240 proteins."""
    from esm_tcav.concepts.concept import Concept
    from esm_tcav.concepts.library import add_to_library
    from tests.test_scan import planted_cav, planted_proteins, write_fasta

    root = tmp_path_factory.mktemp("rel_scan")
    model = {
        "name": "tiny_esm2",
        "fingerprint": tiny.fingerprint,
        "hidden_size": 32,
        "path": str(tiny_hf_folder),
        "registry_file": str(tiny_registry),
    }
    cav = planted_cav(tiny, 3)
    add_to_library(root / "lib", model, Concept(cav, threshold=0.0, min_span_length=4, merge_gap=1))
    small = write_fasta(root / "small.fasta", [p for p, _ in planted_proteins(12)])
    big = write_fasta(root / "big.fasta", [p for p, _ in planted_proteins(240, seed=3)])
    return {"lib": root / "lib", "small": small, "big": big, "root": root}


_SCAN = """
import sys
from esm_tcav.localize.scan import run_scan
run_scan(sys.argv[1], sys.argv[2], sys.argv[3], chunk_proteins=int(sys.argv[4]), progress=False)
"""


def _wait_for(pred, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


# ---------------------------------------------------------------------- 1. concurrent writers
def test_second_scan_is_refused_and_kill9_resume_is_byte_identical(scanlib, tmp_path, tiny):
    """Finding 1 (two scans into one folder) and kill -9 → stale lock → resume."""
    from esm_tcav.localize.scan import CHECKPOINT, FILES, read_checkpoint, run_scan

    lib, big = scanlib["lib"], scanlib["big"]
    ref = tmp_path / "ref"
    run_scan(big, lib, ref, loaded=tiny, chunk_proteins=20, progress=False)

    out = tmp_path / "out"
    a = subprocess.Popen(
        [sys.executable, "-c", _SCAN, str(big), str(lib), str(out), "20"],
        env=ENV,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: (out / CHECKPOINT).is_file())
        # the second scan, in this process (a new process would start after A finished)
        b = CliRunner().invoke(app, ["scan", str(big), "--library", str(lib), "--out", str(out)])
        line = _row("second scan into a folder being scanned", b)
        assert b.exit_code == 2
        assert f"in use by esm-tcav scan (PID {a.pid} on {socket.gethostname()}" in line
        # kill -9 once a few chunks are done
        _wait_for(lambda: read_checkpoint(out / CHECKPOINT)["chunks_done"] >= 2)
        os.kill(a.pid, signal.SIGKILL)
    finally:
        a.wait()
    state = read_checkpoint(out / CHECKPOINT)
    assert not state["complete"] and read_lock(lock_path(out)).pid == a.pid  # left behind
    run_scan(big, lib, out, loaded=tiny, chunk_proteins=20, progress=False)  # stale: resumes
    for name in FILES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    ids = [ln.split("\t")[0] for ln in (out / "proteins.tsv").read_text().splitlines()[1:]]
    assert len(ids) == len(set(ids)) == 240
    assert not lock_path(out).exists()


def test_second_run_into_one_output_dir_is_refused(tmp_path, tiny_hf_folder, tiny_registry):
    from tests.test_detect import write_config, write_planted_data

    write_planted_data(tmp_path)
    cfg = write_config(tmp_path, tiny_hf_folder, tiny_registry)
    out = tmp_path / "out"
    args = ["run", str(cfg), "--steps", "embed,train", "--set", "train.n_random=40"]
    a = subprocess.Popen(
        [sys.executable, "-m", "esm_tcav", *args], env=ENV, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(lambda: lock_path(out).exists())
        b = CliRunner().invoke(app, args)  # in this process: starts at once
        line = _row("second run into an output_dir being written", b)
        assert b.exit_code == 2 and f"PID {a.pid}" in line and "esm-tcav run" in line
    finally:
        _, err = a.communicate(timeout=300)
    assert a.returncode == 0, err
    cavs = sorted(p.name for p in (out / "cavs" / "tiny_esm2").iterdir() if "concept" in p.name)
    assert cavs == ["L1_concept_v1", "L2_concept_v1", "L3_concept_v1"]  # one writer, one version


# ---------------------------------------------------------------------- 2. tampered settings
def test_edited_library_threshold_and_scan_checkpoint_are_refused(scanlib, tmp_path, tiny):
    import shutil

    from esm_tcav.concepts.library import INDEX, load_library
    from esm_tcav.errors import ArtifactError
    from esm_tcav.localize.scan import CHECKPOINT, run_scan

    lib = tmp_path / "lib"
    shutil.copytree(scanlib["lib"], lib)
    doc = json.loads((lib / INDEX).read_text())
    for field, value in (("threshold", -99.0), ("min_span_length", 1), ("merge_gap", 50)):
        edited = json.loads(json.dumps(doc))
        edited["concepts"][0][field] = value
        (lib / INDEX).write_text(json.dumps(edited))
        with pytest.raises(ArtifactError, match="was edited"):
            load_library(lib)
    res = cli("scan", scanlib["small"], "--library", lib, "--out", tmp_path / "s")
    assert res.returncode == 2 and "trp_run" in _row("scan, library merge_gap edited", res)
    assert not (tmp_path / "s").exists()
    del doc["concepts"][0]["settings_sha256"]
    (lib / INDEX).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="has no settings seal"):
        load_library(lib)

    out = tmp_path / "scan"
    run_scan(scanlib["small"], scanlib["lib"], out, loaded=tiny, chunk_proteins=4, progress=False)
    state = json.loads((out / CHECKPOINT).read_text())
    state["identity"]["chunk_proteins"] = 3  # any edit breaks the seal
    (out / CHECKPOINT).write_text(json.dumps(state))
    with pytest.raises(ArtifactError, match="checkpoint was edited"):
        run_scan(scanlib["small"], scanlib["lib"], out, loaded=tiny, progress=False)
    res = CliRunner().invoke(
        app, ["scan", str(scanlib["small"]), "--library", str(scanlib["lib"]), "--out", str(out)]
    )
    assert res.exit_code == 2 and "checkpoint was edited" in _row("scan, checkpoint edited", res)


# ---------------------------------------------------------------------- 3. colliding inputs
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_hf_folder, tiny_registry) -> Path:
    from tests.test_detect import _train

    return _train(tmp_path_factory.mktemp("rel_run"), tiny_hf_folder, tiny_registry)


def test_detect_inputs_with_one_file_name_never_collide(trained, tmp_path):
    from esm_tcav.config import load_config
    from esm_tcav.localize.detect import run_detect
    from esm_tcav.run.context import RunContext

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = tmp_path / "a" / "stop.fasta"
    b = tmp_path / "b" / "stop.fasta"
    a.write_text(">A\nMKLVCWHCHWCYHWCHPQRSTVAD\n")
    b.write_text(">B\nMKLVPQRSTVADEGIKLMNPQ\n")
    ra = run_detect(RunContext(load_config(trained)), input_path=a)
    before = listing(Path(ra["output"]))
    rb = run_detect(RunContext(load_config(trained)), input_path=b)
    assert ra["output"] != rb["output"]
    assert listing(Path(ra["output"])) == before  # the first results are still there
    assert "\tA\t" in "\t" + (Path(ra["output"]) / "spans.tsv").read_text() or before
    # the same content again finds its own folder
    assert run_detect(RunContext(load_config(trained)), input_path=a)["output"] == ra["output"]


def test_detect_refuses_a_tampered_other_layer(trained, tmp_path):
    import shutil

    from esm_tcav.config import load_config
    from esm_tcav.errors import ArtifactError
    from esm_tcav.localize.detect import run_detect
    from esm_tcav.run.context import RunContext

    run = tmp_path / "run"
    shutil.copytree(trained.parent, run)
    cfg = load_config(run / "run.yaml", {"detect.layer": 1})
    cav = run / "out" / "cavs" / "tiny_esm2" / "L2_concept_v1" / "cav.safetensors"
    data = bytearray(cav.read_bytes())
    data[-1] ^= 1
    cav.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="L2_concept_v1"):
        run_detect(RunContext(cfg))
    res = CliRunner().invoke(app, ["detect", str(run / "run.yaml"), "--set", "detect.layer=1"])
    assert res.exit_code == 2 and "L2_concept_v1" in _row("detect, another layer's CAV edited", res)


# ---------------------------------------------------------------------- 4./5. failures
def _row(case: str, res) -> str:
    """The closing note's table: one row per case (printed with pytest -s)."""
    code = res.returncode if isinstance(res, subprocess.CompletedProcess) else res.exit_code
    line = one_error_line(res) if code == 2 else "(exit 0)"
    print(f"TABLE|{case}|{code}|{line}")
    return line


@contextmanager
def tmpfs(path: Path, size: str = "64k", ro: bool = False):
    """A real small (or read-only) file system; tests run as root, where chmod stops nothing."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class Evil:
    """Anything but tensors in a pickle: a weights_only load refuses it."""


def test_every_expected_failure_is_one_line_and_writes_nothing(
    trained, tmp_path, tiny_hf_folder, tiny_registry
):
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(trained.parent, run)
    cfg = run / "run.yaml"
    before = listing(run)

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    empty_pt = tmp_path / "empty.pt"
    empty_pt.touch()
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(tiny_hf_folder / name, no_weights / name)
    empty_weights = tmp_path / "empty_weights"
    shutil.copytree(no_weights, empty_weights)
    (empty_weights / "model.safetensors").touch()
    pickled = tmp_path / "pickled"
    shutil.copytree(no_weights, pickled)
    torch.save(
        {"esm.embeddings.word_embeddings.weight": torch.zeros(1), "x": Evil()},
        pickled / "pytorch_model.bin",
    )

    fresh = {"output_dir": str(tmp_path / "fresh")}
    cases = {
        "output_dir is a file": ({"output_dir": str(a_file)}, "is a file"),
        "output_dir under a file": ({"output_dir": str(a_file / "sub")}, "is a file"),
        "0-byte model .pt": ({**fresh, "model.path": str(empty_pt)}, "empty.pt"),
        "0-byte model.safetensors": ({**fresh, "model.path": str(empty_weights)}, "0 bytes"),
        "HF folder without weights": ({**fresh, "model.path": str(no_weights)}, "no weights"),
        "pickled pytorch_model.bin": ({**fresh, "model.path": str(pickled)}, "never executed"),
        "device: cuda on CPU-only torch": ({**fresh, "model.device": "cuda"}, "cuda"),
        "missing positives file": ({**fresh, "data.positives": "nope.jsonl"}, "nope.jsonl"),
    }
    if torch.cuda.is_available():
        del cases["device: cuda on CPU-only torch"]
    for case, (sets, expected) in cases.items():
        args = ["train", str(cfg)]
        for k, v in sets.items():
            args += ["--set", f"{k}={v}"]
        res = CliRunner().invoke(app, args)
        line = _row(case, res)
        assert res.exit_code == 2 and expected in line, (case, line)
    for case, pair in {
        "--set seed.x=1": "seed.x=1",
        "--set 'train.n_random=[1,'": "train.n_random=[1,",
    }.items():
        res = CliRunner().invoke(app, ["train", str(cfg), "--set", pair])
        line = _row(case, res)
        assert res.exit_code == 2 and pair.split("=")[0] in line
    assert not (tmp_path / "fresh").exists()  # nothing created
    assert a_file.read_text() == "x"
    assert listing(run) == before  # the existing run (its config snapshot too) untouched


def test_failing_scan_leaves_no_out_folder_and_read_only_is_one_line(scanlib, tmp_path):
    bad = tmp_path / "bad.fasta"
    bad.write_text(">A\nMKV\n>B\nMK1V\n")
    res = CliRunner().invoke(
        app, ["scan", str(bad), "--library", str(scanlib["lib"]), "--out", str(tmp_path / "o")]
    )
    line = _row("scan of a bad FASTA", res)
    assert res.exit_code == 2 and "bad.fasta" in line and not (tmp_path / "o").exists()
    with tmpfs(tmp_path / "ro", ro=True) as ro:
        res = CliRunner().invoke(
            app,
            [
                "scan",
                str(scanlib["small"]),
                "--library",
                str(scanlib["lib"]),
                "--out",
                str(ro / "scan"),
            ],
        )
        line = _row("scan --out on a read-only file system", res)
        assert res.exit_code == 2 and "read-only file system" in line and str(ro) in line


def test_disk_full_during_scan_is_one_line_and_the_rerun_is_byte_identical(scanlib, tmp_path, tiny):
    from esm_tcav.localize.scan import CHECKPOINT, FILES, read_checkpoint, run_scan

    ref = tmp_path / "ref"
    run_scan(scanlib["big"], scanlib["lib"], ref, loaded=tiny, progress=False)
    args = ["scan", str(scanlib["big"]), "--library", str(scanlib["lib"])]
    with tmpfs(tmp_path / "disk", size="24k") as disk:
        out = disk / "scan"
        res = CliRunner().invoke(app, [*args, "--out", str(out)])
        line = _row("scan onto a full disk", res)
        assert res.exit_code == 2 and str(out) in line
        assert "No space left on device" in line and "needs about" in line and "free" in line
        # what is left is consistent: a sealed checkpoint vouching for file prefixes, or nothing
        if (out / CHECKPOINT).is_file():
            state = read_checkpoint(out / CHECKPOINT)
            for name, size in state["offsets"].items():
                assert (out / name).stat().st_size >= size
        else:
            assert not any((out / name).exists() for name in FILES)
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        res = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert res.exit_code == 0, res.output
        for name in FILES:
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name


# ---------------------------------------------------------------------- 6. quiet gaps
def test_scan_log_file_records_normalizations(scanlib, tmp_path):
    fasta = tmp_path / "messy.fasta"
    fasta.write_text(">lower\nmkvlaadegiklmnpqrstvy*\n>odd\nMKVUAADEGIKLMNPQRSTVY\n")
    out = tmp_path / "scan"
    res = CliRunner().invoke(
        app, ["scan", str(fasta), "--library", str(scanlib["lib"]), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    log = (out / "scan.log").read_text()
    assert "lower" in log and "odd" in log  # each clean-up, with its record, without -v


def test_report_warns_about_a_tampered_cav(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained.parent, run)
    cav = run / "out" / "cavs" / "tiny_esm2" / "L1_concept_v1" / "cav.safetensors"
    data = bytearray(cav.read_bytes())
    data[-1] ^= 1
    cav.write_bytes(bytes(data))
    res = cli("report", run / "run.yaml")
    print(f"TABLE|report on a run with a tampered CAV|{res.returncode}|{res.stderr.strip()}")
    assert "WARNING" in res.stderr and "L1_concept_v1" in res.stderr


# ---------------------------------------------------------------------- 7. SLURM
def _slurm_yaml(path: Path, **extra) -> Path:
    doc = {
        "data": {"positives": "x", "negatives": "y"},
        "slurm": {"shards": 3, "mem": "1G", "time": "00:05:00", "cpus_per_task": 1},
    }
    doc.update(extra)
    path.write_text(__import__("yaml").safe_dump(doc))
    return path


def test_dry_run_writes_nothing_and_quotes_paths(scanlib, tmp_path):
    out = tmp_path / "out dir"
    cfg = _slurm_yaml(tmp_path / "slurm.yaml", output_dir=str(tmp_path / "run dir"))
    for args in (
        ["slurm", str(cfg), "--dry-run"],
        [
            "slurm",
            str(cfg),
            "--scan",
            str(scanlib["small"]),
            "--library",
            str(scanlib["lib"]),
            "--out",
            str(out),
            "--dry-run",
            "--only-failed",
        ],
    ):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        outputs = [ln for ln in res.stdout.splitlines() if ln.startswith("#SBATCH --output=")]
        assert outputs and all(ln.startswith('#SBATCH --output="') for ln in outputs)
        assert " dir/slurm/logs/" in outputs[0] and outputs[0].endswith('.out"')
        assert "# plan (what would be submitted):" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm.yaml"]  # nothing written


@pytest.mark.slurm
def test_scan_only_failed_on_the_cluster_resubmits_the_unfinished_shard(
    slurm_cluster, scanlib, tmp_path, tiny
):
    import shutil

    from esm_tcav.config import load_config
    from esm_tcav.localize.scan import FILES, run_scan
    from esm_tcav.run.slurm import run_slurm_scan

    local = tmp_path / "local"
    run_scan(scanlib["small"], scanlib["lib"], local, loaded=tiny, progress=False)
    cfg = load_config(_slurm_yaml(tmp_path / "slurm.yaml"))
    out = tmp_path / "out dir"  # a space: the #SBATCH --output paths must be quoted
    args = (cfg, scanlib["small"], scanlib["lib"], out)
    jobs = run_slurm_scan(*args, submit=True)["jobs"]
    states = slurm_cluster.wait_for_jobs(list(jobs.values()), timeout=300)
    assert set(states.values()) == {"COMPLETED"}, (states, slurm_cluster.log_tail())
    assert list((out / "slurm" / "logs").glob("scan-*_1.out"))  # sbatch wrote the quoted path

    # shard 1 lost: the plan names it alone, and the dry run writes nothing
    shutil.rmtree(out / "shards" / "1-of-3")
    kept = {i: listing(out / "shards" / f"{i}-of-3") for i in (0, 2)}
    before = listing(out)
    res = CliRunner().invoke(
        app,
        [
            "slurm",
            str(tmp_path / "slurm.yaml"),
            "--scan",
            str(scanlib["small"]),
            "--library",
            str(scanlib["lib"]),
            "--out",
            str(out),
            "--only-failed",
            "--dry-run",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "#   scan: array 1\n" in res.stdout and "#   merge: after" in res.stdout
    assert listing(out) == before
    again = run_slurm_scan(*args, submit=True, only_failed=True)["jobs"]
    states = slurm_cluster.wait_for_jobs(list(again.values()), timeout=300)
    assert set(states) == {f"{again['scan']}_1", again["merge"]}, states  # task 1 only
    assert set(states.values()) == {"COMPLETED"}, (states, slurm_cluster.log_tail())
    for i in (0, 2):
        assert listing(out / "shards" / f"{i}-of-3") == kept[i]  # not rescanned
    for name in FILES:
        assert (out / name).read_text() == (local / name).read_text()
    # all finished: nothing to resubmit
    assert run_slurm_scan(*args, submit=True, only_failed=True)["jobs"] == {}


@pytest.mark.slurm
def test_pipeline_only_failed_on_the_cluster_resubmits_unfinished_stages(
    slurm_cluster, tmp_path, tiny_hf_folder, tiny_registry
):
    from esm_tcav.config import load_config
    from esm_tcav.run.slurm import run_slurm
    from tests.test_detect import write_config, write_planted_data

    write_planted_data(tmp_path)
    cfg_path = write_config(
        tmp_path,
        tiny_hf_folder,
        tiny_registry,
        slurm={"shards": 3, "mem": "1G", "time": "00:05:00", "cpus_per_task": 1},
    )
    doc = __import__("yaml").safe_load(cfg_path.read_text())
    doc["output_dir"] = "out dir"
    doc["steps"] = ["embed", "train", "evaluate", "detect", "report"]
    cfg_path.write_text(__import__("yaml").safe_dump(doc))
    res = cli("run", cfg_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out dir"
    manifest = json.loads((out / "run_manifest.json").read_text())
    for step in ("detect", "report"):  # as if those jobs had failed
        del manifest["steps"][step]
    (out / "run_manifest.json").write_text(json.dumps(manifest))
    cfg = load_config(cfg_path)

    before = listing(out)
    plan = run_slurm(cfg, cfg_path, dry_run=True, only_failed=True)["plan"]
    assert plan == {
        "embed": None,
        "train": None,
        "evaluate": None,
        "detect": "after the jobs before it",
        "report": "after the jobs before it",
    }
    assert listing(out) == before  # --dry-run writes nothing
    jobs = run_slurm(cfg, cfg_path, submit=True, only_failed=True)["jobs"]
    assert list(jobs) == ["detect", "report"]
    states = slurm_cluster.wait_for_jobs(list(jobs.values()), timeout=300)
    assert set(states.values()) == {"COMPLETED"}, (states, slurm_cluster.log_tail())
    assert list((out / "slurm" / "logs").glob("report-*.out"))
    done = json.loads((out / "run_manifest.json").read_text())["steps"]
    assert {"detect", "report"} <= set(done)
    assert run_slurm(cfg, cfg_path, submit=True, only_failed=True)["jobs"] == {}

    # embeddings lost: every shard and every stage again
    __import__("shutil").rmtree(out / "embeddings")
    plan = run_slurm(cfg, cfg_path, dry_run=True, only_failed=True)["plan"]
    assert plan["embed"] == "array 0,1,2" and all(plan[s] for s in ("train", "report"))


def test_library_add_into_a_locked_library_is_refused(tmp_path, tiny_hf_folder, tiny_registry):
    from tests.test_detect import write_config, write_planted_data

    write_planted_data(tmp_path)
    cfg = write_config(tmp_path, tiny_hf_folder, tiny_registry)
    lib = tmp_path / "lib"
    holder_proc = _holder_process(lib, 60)
    try:
        res = CliRunner().invoke(app, ["library", "add", str(lib), str(cfg)])
        line = _row("library add into a library being written", res)
        assert res.exit_code == 2 and f"PID {holder_proc.pid}" in line
    finally:
        holder_proc.kill()
        holder_proc.wait()
    assert sorted(p.name for p in lib.iterdir()) == [".esm-tcav.lock"]  # nothing else written
