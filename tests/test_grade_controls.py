"""The grade rule, the controls, span-decoding choice and Platt calibration, on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from esm_tcav.concepts import controls as ctl
from esm_tcav.concepts.decoding import apply_platt, choose_decoding, fit_platt
from esm_tcav.concepts.grade import grade
from esm_tcav.concepts.train import all_residue_examples, residue_examples
from esm_tcav.config import config_from_dict
from esm_tcav.io.proteins import Protein, Span

BEAT = {"sequence": {"beaten": True}, "position": {"beaten": True}}


@pytest.mark.parametrize(
    ("metrics", "label"),
    [
        ({"q": 1e-6, "auroc": 0.99, "residue_f1": 0.9, "controls": BEAT}, "strong"),
        ({"q": 1e-6, "auroc": 0.99, "residue_f1": None, "controls": BEAT}, "strong"),
        ({"q": 0.02, "auroc": 0.99, "residue_f1": 0.9, "controls": BEAT}, "usable"),
        ({"q": 1e-6, "auroc": 0.85, "residue_f1": 0.5, "controls": BEAT}, "usable"),
        # the shipped dna_binding case: significant, AUROC 0.84, F1 0.197
        ({"q": 1e-6, "auroc": 0.84, "residue_f1": 0.197, "controls": BEAT}, "weak"),
        (
            {
                "q": 1e-6,
                "auroc": 0.99,
                "residue_f1": 0.9,
                "controls": {"sequence": {"beaten": True}, "position": {"beaten": False}},
            },
            "weak",
        ),
        ({"q": 0.2, "auroc": 0.99, "residue_f1": 0.9, "controls": BEAT}, "not a concept"),
        ({"q": 1e-6, "auroc": 0.99, "residue_f1": 0.9, "controls": {}}, "not a concept"),
    ],
)
def test_grade_rule(metrics, label):
    assert grade(metrics).label == label


def _proteins(rng, n, terminal: bool, motif: str | None):
    aa = list("ADEFGIKLMNPQRSTVY")
    out = []
    for i in range(n):
        length = int(rng.integers(80, 120))
        seq = "".join(rng.choice(aa, length))
        start = 0 if terminal else int(rng.integers(0, length - 19))
        if motif:
            seq = seq[:start] + motif + seq[start + len(motif) :]
        span = Span(start + 1, start + 20, "c")
        out.append(Protein(f"P{i}", seq, (span,)))
    return out


def _control_aurocs(pos, neg, test_pos, test_neg):
    cfg = config_from_dict({"data": {"positives": "x", "negatives": "y"}})
    tr = residue_examples(pos, neg, 4000, np.random.default_rng(0))
    te = all_residue_examples(test_pos, test_neg)
    scores = {n: ctl.control_scores(n, tr, te, cfg.train, 0) for n in ctl.CONTROLS}
    rows = ctl.compare(te, {1: scores["sequence"]}, scores, 50, 0.05, 0)
    return {n: rows[1][n]["auroc"] for n in ctl.CONTROLS}


def test_position_control_sees_a_terminal_concept_and_sequence_sees_a_motif():
    rng = np.random.default_rng(0)
    neg = [Protein(f"N{i}", p.sequence) for i, p in enumerate(_proteins(rng, 30, False, None))]
    # spans at the N-terminus, no sequence signal: position explains it
    term = _proteins(rng, 40, True, None)
    a = _control_aurocs(term[:30], neg[:20], term[30:], neg[20:])
    assert a["position"] > 0.9 and a["sequence"] < a["position"]
    # a C/W/H motif placed anywhere: the windowed one-hot explains it, position does not
    mot = _proteins(rng, 40, False, "CWHCWHCWHCWHCWHCWHCW")
    b = _control_aurocs(mot[:30], neg[:20], mot[30:], neg[20:])
    assert b["sequence"] > 0.95 and b["position"] < 0.8


def test_decoding_choice_merges_dips_and_drops_blips():
    rng = np.random.default_rng(0)
    scores, truth = [], []
    for _ in range(20):
        s = rng.normal(-2, 0.3, 120)
        s[30:60] = 2.0
        s[44:46] = -2.0  # a dip inside the domain: needs a merge gap
        s[90:92] = 2.0  # a short blip: needs a minimum length
        scores.append(s)
        truth.append([(31, 60)])
    dec = choose_decoding(scores, truth, 0.0)
    assert dec["merge_gap"] >= 2 and dec["min_span_length"] >= 5
    assert dec["symmetric_iou"] == pytest.approx(1.0)
    assert len(dec["grid"]) == 36


def test_decoding_leaves_the_default_only_on_evidence():
    """Single-residue sites on 40 proteins: the default (minimum length 5) finds none, the grid's
    best (no smoothing, length 1) finds them all, far beyond one bootstrap SE. A concept whose
    training proteins cannot tell settings apart keeps the default."""
    rng = np.random.default_rng(1)
    scores, truth = [], []
    for _ in range(40):
        s = rng.normal(-2, 0.3, 100)
        sites = rng.choice(np.arange(5, 95, 10), 4, replace=False)
        s[sites] = 3.0
        scores.append(s)
        truth.append([(int(i) + 1, int(i) + 1) for i in sorted(sites)])
    dec = choose_decoding(scores, truth, 0.0)
    assert not dec["kept_default"] and dec["min_span_length"] == 1
    assert dec["smoothing_window"] == 1 and dec["symmetric_iou"] == pytest.approx(1.0)
    assert dec["gain_over_default"] > 0.9 and dec["gain_over_default"] > dec["gain_se"]
    # a domain every setting finds exactly: nothing beats the default, so it stays
    flat = [np.r_[np.full(30, -3.0), np.full(40, 3.0), np.full(30, -3.0)] for _ in range(4)]
    dec = choose_decoding(flat, [[(31, 70)]] * 4, 0.0)
    assert dec["kept_default"] and dec["gain_over_default"] <= dec["gain_se"]
    assert {k: dec[k] for k in ("smoothing_window", "min_span_length", "merge_gap")} == {
        "smoothing_window": 5, "min_span_length": 5, "merge_gap": 3
    }  # fmt: skip


def test_platt_recovers_a_known_logistic():
    rng = np.random.default_rng(0)
    s = rng.normal(0, 2, 50_000)
    y = rng.random(s.size) < 1 / (1 + np.exp(-(1.5 * s - 0.5)))
    cal = fit_platt(s, y)
    assert cal["a"] == pytest.approx(1.5, rel=0.05) and cal["b"] == pytest.approx(-0.5, abs=0.05)
    p = apply_platt(cal, np.array([-100.0, 0.0, 100.0]))
    assert p[0] < 1e-6 and p[1] == pytest.approx(1 / (1 + np.exp(0.5)), abs=0.02) and p[2] > 0.999
