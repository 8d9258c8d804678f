"""The smoke test: it passes on the real backbone, and its checks are able to fail."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esm_tcav.errors import EsmTcavError
from esm_tcav.run import smoke


def test_planted_and_null_data_are_what_they_claim():
    records, negatives = smoke.make_planted(np.random.default_rng(0), 6, 6, plant=True)
    for r in records:
        for s in r["ground_truth_annotations"]:
            assert r["sequence"][s["start"] - 1 : s["end"]] == smoke.MOTIF
    assert all(smoke.MOTIF not in s for _, s in negatives)
    assert "XU" in negatives[0][1]
    null, _ = smoke.make_planted(np.random.default_rng(0), 6, 6, plant=False)
    for r in null:
        assert smoke.MOTIF not in r["sequence"]
        covered = sum(s["end"] - s["start"] + 1 for s in r["ground_truth_annotations"])
        assert covered in (len(smoke.MOTIF), 2 * len(smoke.MOTIF))
        # scattered: labelled residues are not one block that would avoid the termini
        assert len(r["ground_truth_annotations"]) > 2


def test_a_crashing_step_is_a_failed_check_not_a_crash():
    checks = smoke._Checks()
    assert checks.guard("training", lambda: 1 / 0) is None
    assert checks.items == [
        {"name": "training", "passed": False, "detail": "ZeroDivisionError: division by zero"}
    ]


def test_refuses_to_delete_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "planted").mkdir()
    with pytest.raises(EsmTcavError, match="was not written by esm-tcav smoke"):
        smoke._fresh(tmp_path / "planted")


@pytest.mark.slow
def test_smoke_passes_on_the_t6_backbone(tmp_path, t6):
    result = smoke.run_smoke(tmp_path)
    failed = [c for c in result["checks"] if not c["passed"]]
    assert result["passed"], failed
    names = {c["name"] for c in result["checks"]}
    assert {
        "model_load",
        "embedding",
        "guardrails",
        "planted_found",
        "evaluation",
        "artifacts",
        "detection_one_protein",
        "null_not_significant",
    } <= names
    doc = json.loads((tmp_path / "smoke_test_metrics.json").read_text())
    assert doc["passed"] and len(doc["metrics"]["detection"]["scores"]) > 0
    # the null concept's statistics are not a rubber stamp
    assert not any(v["significant"] for v in doc["metrics"]["null"].values())
    assert any(v["significant"] for v in doc["metrics"]["planted"].values())
    # a second run starts clean (its own folders are replaced, versions restart at 1)
    again = smoke.run_smoke(tmp_path)
    assert again["passed"]
