"""stats.py against SciPy, scikit-learn and hand-computed values."""

import json
import math

import numpy as np
import pytest
from scipy import stats as st
from sklearn.metrics import average_precision_score, roc_auc_score

from esm_tcav.concepts.stats import (
    RankedScores,
    add_qvalues,
    bh_qvalues,
    bootstrap_ci,
    compare_to_randoms,
    empirical_p,
    layer_statistics,
    min_p,
    qvalues,
    random_t_p,
    tcav_verdict,
    welch_t,
    z_score,
)


def test_empirical_p_by_hand():
    assert empirical_p(0.9, [0.5] * 20) == pytest.approx(1 / 21)
    assert empirical_p(0.5, [0.4, 0.5, 0.6]) == pytest.approx(3 / 4)  # ties count against
    assert empirical_p(0.1, [0.4, 0.5, 0.6]) == 1.0
    assert min_p(20) == pytest.approx(1 / 21)
    assert min_p(999) == pytest.approx(0.001)


def test_z_score_by_hand_and_degenerate():
    assert z_score(4.0, [1.0, 2.0, 3.0]) == pytest.approx((4 - 2) / 1.0)
    assert z_score(0.9, [0.5, 0.5]) == math.inf
    assert z_score(0.5, [0.5, 0.5]) == 0.0
    assert math.isnan(z_score(0.5, [0.5]))


def test_welch_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.9, 0.02, 5), rng.normal(0.5, 0.05, 20)
    t, p = welch_t(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # hand-computed Welch statistic
    se = math.sqrt(a.var(ddof=1) / 5 + b.var(ddof=1) / 20)
    assert t == pytest.approx((a.mean() - b.mean()) / se)
    assert all(math.isnan(x) for x in welch_t([1.0], [1.0, 2.0]))


def test_bh_matches_scipy_and_hand():
    p = [0.01, 0.04, 0.03, 0.2, 0.5]
    q = bh_qvalues(p)
    assert np.allclose(q, st.false_discovery_control(p, method="bh"))
    # by hand: sorted .01 .03 .04 .2 .5 -> .05 .05(.075->min .0667) ...
    assert q[0] == pytest.approx(0.05)
    assert q[2] == pytest.approx(min(0.03 * 5 / 2, 0.04 * 5 / 3))
    with_nan = bh_qvalues([0.01, None, 0.02])
    assert math.isnan(with_nan[1])
    assert np.allclose(with_nan[[0, 2]], st.false_discovery_control([0.01, 0.02]))


def test_layer_statistics_and_verdict_words():
    per = {
        2: layer_statistics(0.95, [0.94, 0.96, 0.95], np.linspace(0.45, 0.55, 99)),
        4: layer_statistics(0.50, [0.5, 0.52, 0.48], np.linspace(0.4, 0.6, 99)),
    }
    per[2]["auroc"], per[4]["auroc"] = 0.95, 0.50
    add_qvalues(per, 0.05)
    # the verdict's p is the one-sided single-observation t-test; the empirical p sits beside it
    r = np.linspace(0.45, 0.55, 99)
    t = (0.95 - r.mean()) / (r.std(ddof=1) * np.sqrt(1 + 1 / 99))
    assert per[2]["t"] == pytest.approx(t)
    assert per[2]["p"] == pytest.approx(st.t.sf(t, 98))
    assert per[2]["p_empirical"] == pytest.approx(0.01) and per[2]["min_p"] == 0.01
    assert per[2]["q"] == pytest.approx(per[2]["p"] * 2)  # BH over 2 layers, both ranks
    assert per[2]["significant"] and per[2]["verdict"].startswith("significant")
    assert "empirical p = 0.01" in per[2]["verdict"]
    assert not per[4]["significant"] and per[4]["verdict"].startswith("not significant")
    assert per[4]["p"] == pytest.approx(0.5, abs=1e-9)
    # 20 random CAVs: the empirical p floor (1/21) no longer caps the verdict's p
    two = {
        n: {
            **layer_statistics(0.998, [0.99, 0.99], 0.5 + 0.05 * np.sin(np.arange(20))),
            "auroc": 0.998,
        }
        for n in (1, 2)
    }
    add_qvalues(two, 0.05)
    assert two[1]["q"] < 0.01 and two[1]["p_empirical"] == pytest.approx(1 / 21)
    one = {1: {**layer_statistics(0.99, [0.99], [0.5]), "auroc": 0.99}}
    add_qvalues(one, 0.05)  # a single random CAV: no t-test, the empirical p and its floor
    assert one[1]["p_test"] == "empirical" and "raise train.n_random" in one[1]["verdict"]


def test_random_t_p_degenerate_cases():
    assert all(math.isnan(v) for v in random_t_p(0.9, [0.5]))
    assert random_t_p(0.9, [0.5, 0.5])[1] == 0.0
    assert random_t_p(0.5, [0.5, 0.5]) == (0.0, 1.0)
    assert random_t_p(0.1, [0.5, 0.5])[1] == 1.0
    t, p = random_t_p(0.5, [0.4, 0.6])
    assert t == 0.0 and p == pytest.approx(0.5)


def test_weighted_auc_matches_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 8, 300).astype(float)  # many ties
    y = rng.random(300) < 0.3
    w = rng.integers(0, 4, 300).astype(float)
    auroc, ap = RankedScores(s, y).metrics(w)
    assert auroc == pytest.approx(roc_auc_score(y, s, sample_weight=w))
    assert ap == pytest.approx(average_precision_score(y, s, sample_weight=w))
    auroc1, ap1 = RankedScores(s, y).metrics()
    assert auroc1 == pytest.approx(roc_auc_score(y, s))
    assert ap1 == pytest.approx(average_precision_score(y, s))


def test_bootstrap_by_protein_is_wider_than_by_residue():
    # 10 proteins; all residues of a protein share one protein-level offset: residues are not
    # independent, so the protein bootstrap must show that uncertainty
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(10), 200)
    is_pos = np.arange(10) < 5
    y = is_pos[groups] & (rng.random(2000) < 0.5)
    s = y * 1.0 + rng.normal(0, 1, 10)[groups] + rng.normal(0, 0.3, 2000)
    ranked = RankedScores(s, y)
    by_protein = bootstrap_ci(ranked, groups, is_pos, 300, 0.05, 0)
    by_residue = bootstrap_ci(ranked, np.arange(2000), y, 300, 0.05, 0)
    lo, hi = by_protein["auroc_ci"]
    assert lo < ranked.metrics()[0] < hi
    assert hi - lo > 1.5 * (by_residue["auroc_ci"][1] - by_residue["auroc_ci"][0])


# ---------------------------------------------------------------------- TCAV scores vs randoms


def test_compare_to_randoms_single_case_t_test():
    out = compare_to_randoms(0.9, [0.4, 0.5, 0.6])
    t = 0.4 / (0.1 * math.sqrt(1 + 1 / 3))
    assert out["t"] == pytest.approx(t)
    assert out["p"] == pytest.approx(2 * st.t.sf(t, df=2))
    assert out["p_empirical"] == pytest.approx(1 / 4)
    assert out["random_mean"] == pytest.approx(0.5) and out["random_sd"] == pytest.approx(0.1)
    same = compare_to_randoms(0.5, [0.4, 0.5, 0.6])
    assert same["p"] == pytest.approx(1.0) and same["p_empirical"] == 1.0
    flat = compare_to_randoms(1.0, [0.5, 0.5])
    assert flat["p"] == 0.0 and flat["t"] is None
    assert compare_to_randoms(1.0, [0.5])["p"] is None


def test_bh_across_layers():
    assert qvalues([0.01, 0.04, None]) == [pytest.approx(0.02), pytest.approx(0.04), None]


def test_json_of_bh_is_plain_floats():
    json.dumps(qvalues([0.5, 0.2]))


def test_tcav_rows_get_q_significance_and_verdict_without_alpha():
    rows = {
        "2": {"score": 0.9, "random_mean": 0.5, "random_sd": 0.1, "p": 0.01},
        "4": {"score": 0.6, "random_mean": 0.5, "random_sd": 0.1, "p": 0.04},
        "6": {"testable": False, "p": None},
    }
    add_qvalues(rows, 0.05, say=tcav_verdict, record_alpha=False)
    assert rows["2"]["q"] == pytest.approx(0.02) and rows["4"]["q"] == pytest.approx(0.04)
    assert rows["2"]["significant"] and rows["4"]["significant"] and "alpha" not in rows["2"]
    assert rows["2"]["verdict"].startswith("significant: TCAV 0.90 vs random 0.50")
    assert rows["6"]["q"] is None and rows["6"]["verdict"].startswith("not testable")
