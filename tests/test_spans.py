"""Span calling and span metrics, on hand-computed cases."""

import numpy as np
import pytest

from esm_tcav.io.proteins import Span
from esm_tcav.localize.spans import (
    ScoredSpan,
    best_iou_per_domain,
    domain_hit_rate,
    evaluate_spans,
    false_spans_per_kres,
    residue_prf,
    scores_to_spans,
    span_iou,
    spans_mask,
)


def test_scores_to_spans_runs_are_one_based_inclusive():
    s = np.array([0, 1, 1, 0, 0, 0, 1, 1, 1, 0], dtype=float)
    spans = scores_to_spans(s, 0.5)
    assert [(x.start, x.end) for x in spans] == [(2, 3), (7, 9)]
    assert spans[0].score == pytest.approx(1.0)
    assert spans[1].length == 3


def test_threshold_is_inclusive_and_edges_count():
    s = np.array([2.0, 2.0, 1.0, 0.0, 2.0])
    assert [(x.start, x.end) for x in scores_to_spans(s, 1.0)] == [(1, 3), (5, 5)]


def test_merge_gap_joins_runs_and_averages_gap():
    s = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 1], dtype=float)
    # gap of 2 between runs 1-2 and 5-6; gap of 3 between 5-6 and 10
    assert [(x.start, x.end) for x in scores_to_spans(s, 0.5, merge_gap=1)] == [
        (1, 2),
        (5, 6),
        (10, 10),
    ]
    merged = scores_to_spans(s, 0.5, merge_gap=2)
    assert [(x.start, x.end) for x in merged] == [(1, 6), (10, 10)]
    assert merged[0].score == pytest.approx(4 / 6)
    assert [(x.start, x.end) for x in scores_to_spans(s, 0.5, merge_gap=3)] == [(1, 10)]


def test_min_length_applies_after_merging():
    s = np.array([1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0], dtype=float)
    assert [(x.start, x.end) for x in scores_to_spans(s, 0.5, min_length=3)] == [(9, 11)]
    both = scores_to_spans(s, 0.5, min_length=5, merge_gap=1)
    assert [(x.start, x.end) for x in both] == [(1, 5)]


def test_no_span_and_bad_arguments():
    assert scores_to_spans(np.zeros(5), 0.5) == []
    assert scores_to_spans(np.zeros(0), 0.5) == []
    with pytest.raises(ValueError):
        scores_to_spans(np.ones(3), 0.5, min_length=0)


def test_several_fingers_stay_separate_when_gap_exceeds_merge_gap():
    # three 21-aa "fingers" with 7-aa linkers, noisy scores around the threshold
    rng = np.random.default_rng(0)
    s = np.full(100, -1.0)
    truth = [(5, 25), (33, 53), (61, 81)]
    for a, b in truth:
        s[a - 1 : b] = 1.0
    s += rng.normal(0, 0.1, 100)
    pred = scores_to_spans(s, 0.0, min_length=8, merge_gap=3)
    assert [(p.start, p.end) for p in pred] == truth


def test_spans_mask_and_residue_prf():
    mask = spans_mask([Span(2, 4, "x")], 6)
    assert mask.tolist() == [False, True, True, True, False, False]
    # pred 1-4, true 3-6 on 8 residues: tp 2 (3,4), fp 2 (1,2), fn 2 (5,6), tn 2
    r = residue_prf([(1, 4)], [Span(3, 6, "d")], 8)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 2, 2, 2)
    assert r["precision"] == r["recall"] == r["f1"] == pytest.approx(0.5)
    empty = residue_prf([], [], 5)
    assert empty["f1"] == 0.0 and empty["tn"] == 5
    with pytest.raises(ValueError):
        spans_mask([(3, 9)], 5)


def test_iou_and_best_match():
    assert span_iou((1, 10), (6, 15)) == pytest.approx(5 / 15)
    assert span_iou((1, 5), (6, 9)) == 0.0
    assert span_iou(ScoredSpan(3, 7, 1.0), Span(3, 7, "d")) == 1.0
    true = [(10, 30), (38, 58), (100, 120)]
    pred = [(10, 58)]  # two fingers merged into one prediction
    ious = best_iou_per_domain(pred, true)
    assert ious == pytest.approx([21 / 49, 21 / 49, 0.0])
    assert domain_hit_rate(pred, true) == 0.0
    assert domain_hit_rate(pred, true, min_iou=0) == pytest.approx(2 / 3)
    assert domain_hit_rate([(10, 30), (40, 58)], true) == pytest.approx(2 / 3)
    assert domain_hit_rate(pred, []) is None


def test_false_spans_per_kres():
    assert false_spans_per_kres([([(1, 5), (9, 12)], 500), ([], 1500)]) == pytest.approx(1.0)
    assert false_spans_per_kres([]) is None


def test_evaluate_spans_micro_average():
    truth = {"a": [Span(1, 10, "d"), Span(21, 30, "d")]}
    preds = {"a": [(1, 10), (21, 25)], "n": [(1, 4)]}
    lengths = {"a": 40, "n": 1000}
    m = evaluate_spans(preds, truth, lengths, negatives=["n"])
    # a: tp 15, fn 5, fp 0; n: fp 4
    assert m["residue"]["tp"] == 15 and m["residue"]["fp"] == 4 and m["residue"]["fn"] == 5
    assert m["residue"]["precision"] == pytest.approx(15 / 19)
    assert m["residue_positives"]["precision"] == 1.0
    assert m["mean_iou"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["hit_rate_iou50"] == 1.0
    assert m["false_spans_per_kres"] == pytest.approx(1.0)
    assert m["per_protein"]["a"]["mean_iou"] == pytest.approx(0.75)
    assert m["domains"] == 2 and m["negatives"] == 1
