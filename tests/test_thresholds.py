"""Threshold registry: each method's rule on hand-made scores, and the lookup errors."""

import numpy as np
import pytest

from esm_tcav.concepts.thresholds import (
    build_thresholds,
    compute_methods,
    get_threshold,
    metrics_at,
)
from esm_tcav.errors import ArtifactError

SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3, 0.2, 0.1])
LABELS = np.array([1, 1, 0, 1, 1, 0, 0, 1, 0, 0])


def test_f1_max_by_hand():
    m = compute_methods(SCORES, LABELS)["f1_max"]
    # thresholds 0.55 -> tp4 fp1: P .8 R .8 F1 .8 ; 0.3 -> tp5 fp3: F1 .714 ; best is 0.55
    assert m["value"] == pytest.approx(0.55)
    assert m["f1"] == pytest.approx(0.8) and m["precision"] == pytest.approx(0.8)


def test_precision_at_recall_by_hand():
    m = compute_methods(SCORES, LABELS, precision_at_recall=0.9)["precision_at_recall"]
    assert m["target"] == 0.9
    assert m["value"] == pytest.approx(0.3)  # recall 1.0 needs the 5th positive at 0.3
    assert m["recall"] >= 0.9 and m["precision"] == pytest.approx(5 / 8)


def test_fpr_by_hand():
    m = compute_methods(SCORES, LABELS, fpr=0.2)["fpr"]
    # 5 negatives: fpr <= 0.2 allows one false positive (0.7); lowest such threshold is 0.55
    assert m["value"] == pytest.approx(0.55) and m["fpr"] == pytest.approx(0.2)
    strict = compute_methods(SCORES, LABELS, fpr=0.01)["fpr"]
    assert strict["fpr"] == 0.0 and strict["value"] == pytest.approx(0.8)  # 0.9, 0.8 free


def test_metrics_at_rule_is_score_ge_value():
    m = metrics_at(SCORES, LABELS, 0.6)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 2, 4)


def test_document_and_lookup():
    doc = build_thresholds(4, "residue", SCORES, LABELS, 0.9, 0.05, "fpr")
    assert doc["layer"] == 4 and doc["granularity"] == "residue"
    assert doc["score"] == "cav projection (signed distance, raw units)"
    assert set(doc["methods"]) == {"f1_max", "precision_at_recall", "fpr"}
    assert get_threshold(doc, "f1_max") == pytest.approx(0.55)
    with pytest.raises(
        ArtifactError,
        match="thresholds.json has no method 'x'; available: f1_max, fpr, precision_at_recall",
    ):
        get_threshold(doc, "x")


def test_one_class_refused():
    with pytest.raises(ArtifactError, match="both classes"):
        compute_methods(SCORES, np.zeros(10))
