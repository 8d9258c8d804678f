"""Smoke tests of the test infrastructure itself: real Slurm and real headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import BrowserNotFound, find_chromium, render_html


@pytest.mark.slurm
def test_slurm_array_then_dependent_job(slurm_cluster, tmp_path: Path) -> None:
    array_id = slurm_cluster.sbatch(
        "--array=0-3",
        "--output=task-%A_%a.out",
        "--wrap",
        "echo task=$SLURM_ARRAY_TASK_ID > result-$SLURM_ARRAY_TASK_ID.txt",
        cwd=tmp_path,
    )
    dep_id = slurm_cluster.sbatch(
        f"--dependency=afterok:{array_id}",
        "--output=dep-%j.out",
        "--wrap",
        "cat result-*.txt | sort > combined.txt",
        cwd=tmp_path,
    )
    states = slurm_cluster.wait_for_jobs([array_id, dep_id], timeout=120)
    assert states == {
        **{f"{array_id}_{i}": "COMPLETED" for i in range(4)},
        dep_id: "COMPLETED",
    }, slurm_cluster.log_tail()
    for i in range(4):
        assert (tmp_path / f"result-{i}.txt").read_text() == f"task={i}\n"
        assert (tmp_path / f"task-{array_id}_{i}.out").exists()
    assert (tmp_path / "combined.txt").read_text().splitlines() == [f"task={i}" for i in range(4)]


@pytest.mark.slurm
def test_slurm_failed_job_cancels_dependent(slurm_cluster, tmp_path: Path) -> None:
    bad = slurm_cluster.sbatch("--output=bad-%j.out", "--wrap", "exit 3", cwd=tmp_path)
    dep = slurm_cluster.sbatch(f"--dependency=afterok:{bad}", "--wrap", "touch never", cwd=tmp_path)
    states = slurm_cluster.wait_for_jobs([bad, dep], timeout=120)
    assert states == {bad: "FAILED", dep: "CANCELLED"}
    assert not (tmp_path / "never").exists()


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return find_chromium()
    except BrowserNotFound as exc:
        pytest.fail(str(exc), pytrace=False)


CLEAN = """<!doctype html>
<html><head><meta charset="utf-8"><title>clean page</title></head>
<body><h1 id="h">static</h1><div id="out"></div>
<script>
  document.getElementById("h").textContent = "rendered by JS";
  document.getElementById("out").dataset.n = String(6 * 7);
  console.log("all good");
</script></body></html>
"""

BROKEN = """<!doctype html>
<html><head><meta charset="utf-8"><title>broken page</title></head>
<body><p>before</p>
<script>throw new Error('boom');</script>
<script>setTimeout(() => { undefinedFunction(); }, 10);</script>
</body></html>
"""


@pytest.mark.browser
def test_browser_clean_page(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "clean.html"
    page.write_text(CLEAN)
    png = tmp_path / "clean.png"
    res = render_html(page, png, width=800, height=600)
    assert res.console_errors == []
    assert res.title == "clean page"
    assert '<h1 id="h">rendered by JS</h1>' in res.dom
    assert 'data-n="42"' in res.dom
    assert "log: all good" in res.console_messages
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1000


@pytest.mark.browser
def test_browser_broken_page(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(BROKEN)
    res = render_html(page)
    assert "<p>before</p>" in res.dom
    assert len(res.console_errors) == 2, res.console_errors
    assert res.console_errors[0].startswith("Uncaught Error: boom")
    assert "undefinedFunction is not defined" in res.console_errors[1]
