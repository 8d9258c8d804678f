"""GFF3 from detect and scan is valid under GenomeTools' `gt gff3validator -typecheck so`.

genometools is installed by `scripts/install_test_tools.sh` (`make test-deps`); without `gt` on
the path the test is skipped with that instruction rather than passing silently.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from esm_tcav.io.files import atomic_write_lines
from esm_tcav.io.writers import GFF3_HEADER, gff3_lines
from esm_tcav.localize.spans import ScoredSpan

GT = shutil.which("gt")
pytestmark = pytest.mark.skipif(
    GT is None, reason="needs genometools' gt: run scripts/install_test_tools.sh (make test-deps)"
)


def _validate(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GT, "gff3validator", "-typecheck", "so", str(path)], capture_output=True, text=True
    )


def test_detect_gff3_passes_the_so_typecheck(tmp_path):
    rows = [
        ("sp|P12345|ZNF1_HUMAN", ScoredSpan(3, 9, 1.2)),
        ("sp|P12345|ZNF1_HUMAN", ScoredSpan(20, 31, 0.4)),
        ("Q9 odd;id=x", ScoredSpan(1, 5, -0.5)),
    ]
    lengths = {"sp|P12345|ZNF1_HUMAN": 40, "Q9 odd;id=x": 12}
    path = tmp_path / "spans.gff3"
    atomic_write_lines(
        path, gff3_lines(rows, "C2H2 zinc finger", 4, 0.25, "f1_max", "one-pass", lengths=lengths)
    )
    result = _validate(path)
    assert result.returncode == 0, result.stderr
    assert path.read_text().count("##sequence-region") == 2


def test_the_validator_catches_what_the_pragmas_prevent(tmp_path):
    # a feature past its sequence-region end is an error: the test can fail
    path = tmp_path / "bad.gff3"
    path.write_text(
        GFF3_HEADER
        + "##sequence-region P1 1 5\n"
        + "P1\tesm-tcav\tpolypeptide_region\t3\t9\t1.0\t.\t.\tID=a;Name=x\n"
    )
    assert _validate(path).returncode != 0


def test_scan_gff3_passes_the_so_typecheck(tmp_path):
    from types import SimpleNamespace

    from esm_tcav.io.proteins import Protein
    from esm_tcav.localize.scan import _headers, protein_lines

    concepts = [
        SimpleNamespace(
            name=name,
            layer=4,
            version=1,
            threshold=0.5,
            threshold_method="f1_max",
            smoothing_window=1,
            min_span_length=1,
            merge_gap=0,
            grade=None,
            calibration=None,
        )
        for name in ("zinc finger", "TM helix")
    ]
    lib = SimpleNamespace(concepts=concepts, model={"name": "tiny", "fingerprint": "f"})
    scores = np.array([[0, 1], [1, 1], [1, 0], [0, 0], [0.9, 1]], np.float32)
    body = [protein_lines(Protein(pid, "MKVLA"), scores, lib)[0] for pid in ("P1", "P2")]
    path = tmp_path / "scan.gff3"
    path.write_text(_headers(lib)["scan.gff3"] + "".join(body))
    result = _validate(path)
    assert result.returncode == 0, result.stderr + path.read_text()
