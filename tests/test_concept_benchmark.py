"""The multi-concept benchmark's fast subset (3 concepts + 1 shuffled-label control) on the tiny
model: the summary line, resuming, and determinism (same seed -> same table)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(
    r"^concepts: (\d+), mean residue F1 (\d\.\d{3}|nan), mean per-domain IoU (\d\.\d{3}|nan), "
    r"significant \(q<0\.01\) (\d+)/(\d+), controls significant (\d+)/(\d+)$"
)


def _run(out: Path, settings: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "concept_benchmark.py"), "--subset", "fast",
           "--out", str(out), "--settings", str(settings)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


@pytest.fixture(scope="module")
def settings(tmp_path_factory, tiny_hf_folder, tiny_registry) -> Path:
    path = tmp_path_factory.mktemp("bench") / "settings.yaml"
    model = {"name": "tiny_esm2", "path": str(tiny_hf_folder),
             "registry_file": str(tiny_registry), "layers": [1, 2, 3]}  # fmt: skip
    defaults = {
        "embed": {"residue_dtype": "float32"},
        "train": {
            "granularity": "residue",
            "n_random": 9,
            "pca_components": 16,
            "folds": 3,
            "residue_cap": 1000,
        },  # fmt: skip
        "evaluate": {"bootstrap": 20},
        "detect": {"heatmaps_top": 0, "heatmaps_random": 0},
    }
    path.write_text(yaml.safe_dump({"model": model, "defaults": defaults}))
    return path


def test_fast_subset_runs_resumes_and_is_deterministic(tmp_path, settings):
    first = _run(tmp_path / "a", settings)
    m = SUMMARY.match(first[-1])
    assert m, first[-1]
    assert (int(m.group(1)), int(m.group(5)), int(m.group(7))) == (3, 3, 1)
    rows = [ln for ln in first if ln.startswith("| ") and not ln.startswith("| concept")]
    assert [r.split(" | ")[0][2:] for r in rows] == [
        "PF00440", "metal_binding", "signal_peptide", "control_PF00440"
    ]  # fmt: skip
    # grade and gain over the sequence-only baseline, read from the trained concepts' records
    from esm_tcav.concepts.grade import GRADES as grades

    gain = re.compile(r"[+-]\d\.\d{3}( \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\])?$")
    for r in rows:
        cells = r.strip("| ").split(" | ")
        assert cells[7] in grades, r
        assert gain.match(cells[8]), r
    table = (tmp_path / "a" / "table.tsv").read_text()
    # resume: every concept is skipped, the table is the same
    again = _run(tmp_path / "a", settings)
    assert sum("done before" in ln for ln in again) == 4
    assert again[-1] == first[-1]
    assert (tmp_path / "a" / "table.tsv").read_text() == table
    # an interrupted run (one row file lost) trains only that concept again
    (tmp_path / "a" / "rows" / "metal_binding.json").unlink()
    third = _run(tmp_path / "a", settings)
    assert sum("done before" in ln for ln in third) == 3
    assert (tmp_path / "a" / "table.tsv").read_text().splitlines()[1:] == table.splitlines()[1:]
    # same seed, fresh folder: the same table
    _run(tmp_path / "b", settings)
    assert (tmp_path / "b" / "table.tsv").read_text() == table
