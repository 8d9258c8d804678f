"""Is the concept CAV better than chance? Pure functions over AUROCs of concept and random CAVs.

- `random_t_p`: the p that drives every verdict: a one-sided single-observation t-test of the
  concept CAV's held-out AUROC against the random CAVs' AUROCs (t = (c - mean) / (sd * sqrt(1 +
  1/N)), N - 1 degrees of freedom; "is the concept CAV an unusually high draw from the random
  CAVs' distribution?"). It is what lets q go below 0.01 with a few dozen random CAVs: the demo's
  AUROC 0.998 vs 0.50 ± 0.05 is t ≈ 10, p ≈ 1e-9, where the empirical p cannot go below 1/(N+1).
  Calibration is measured, not assumed: tests/test_null_calibration.py trains >= 50 null concepts
  (random spans in real proteins) and checks the false-positive rate at 0.05.
- `empirical_p`: (1 + #random >= concept) / (N + 1), the permutation-test p (never 0: with N
  random CAVs the smallest reachable p is `min_p(N)` = 1 / (N + 1)); shown beside the t-test p
  as a model-free check, with its floor.
- `z_score`: how many random-CAV standard deviations the concept sits above their mean.
- `welch_t`: two-sided Welch t-test (unequal variances) of two samples of scores.
- `bh_qvalues` / `qvalues`: Benjamini–Hochberg adjusted p-values across layers (and concepts);
  `add_qvalues` writes q, significance and a verdict in words onto per-layer rows.
- `compare_to_randoms`: one TCAV score against the random CAVs' scores (single-observation
  t-test and empirical two-sided p); `tcav_verdict` says the outcome in words.
- `auc_weighted` / `bootstrap_ci`: AUROC and AUPRC with per-example weights, so a bootstrap
  that resamples whole proteins is one weighted pass over a fixed sort (no re-sorting).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _st

P_TEST = "one-sided t-test of the concept AUROC vs the random CAVs' AUROCs"


def min_p(n_random: int) -> float:
    """Smallest empirical p reachable with `n_random` random CAVs."""
    return 1.0 / (n_random + 1)


def empirical_p(concept: float, randoms: Sequence[float]) -> float:
    randoms = np.asarray(randoms, dtype=np.float64)
    return float((1 + np.sum(randoms >= concept)) / (randoms.size + 1))


def random_t_p(concept: float, randoms: Sequence[float]) -> tuple[float, float]:
    """(t, one-sided p) of the concept score as one more draw from the randoms' distribution.

    t = (c - mean) / (sd * sqrt(1 + 1/N)) with N - 1 degrees of freedom (a prediction interval
    for a single new draw, not a test of a mean). nan with < 2 randoms; p is 0 or 1 when the
    randoms do not vary.
    """
    r = np.asarray(randoms, dtype=np.float64)
    n = r.size
    if n < 2 or not np.isfinite(concept):
        return math.nan, math.nan
    mean, sd = float(r.mean()), float(r.std(ddof=1))
    if sd == 0:
        if concept == mean:
            return 0.0, 1.0
        return math.copysign(math.inf, concept - mean), 0.0 if concept > mean else 1.0
    t = (concept - mean) / (sd * math.sqrt(1 + 1 / n))
    return float(t), float(_st.t.sf(t, df=n - 1))


def z_score(concept: float, randoms: Sequence[float]) -> float:
    """(concept - mean) / sd (ddof=1); ±inf when the randoms do not vary, nan with < 2."""
    randoms = np.asarray(randoms, dtype=np.float64)
    if randoms.size < 2:
        return math.nan
    mean, sd = float(randoms.mean()), float(randoms.std(ddof=1))
    if sd == 0:
        return 0.0 if concept == mean else math.copysign(math.inf, concept - mean)
    return (concept - mean) / sd


def welch_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of Welch's unequal-variance t-test; nan when undefined."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():  # identical fold scores (e.g. all 1.0) are fine here
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _st.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def bh_qvalues(pvalues: Sequence[float | None]) -> np.ndarray:
    """Benjamini–Hochberg q-values; None/nan entries stay nan and do not count as tests."""
    p = np.array([math.nan if v is None else v for v in pvalues], dtype=np.float64)
    q = np.full(p.shape, math.nan)
    ok = np.nonzero(np.isfinite(p))[0]
    m = ok.size
    if m == 0:
        return q
    order = ok[np.argsort(p[ok], kind="mergesort")]
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q[order] = np.minimum(ranked, 1.0)
    return q


def qvalues(pvalues: Sequence[float | None]) -> list[float | None]:
    """`bh_qvalues` as JSON-ready values: None where there is no test."""
    return [None if not np.isfinite(v) else float(v) for v in bh_qvalues(pvalues)]


def compare_to_randoms(concept: float, randoms: Sequence[float]) -> dict:
    """Two-sided single-observation t-test and empirical p of the concept vs random scores.

    t = (c - mean) / (sd * sqrt(1 + 1/N)), N - 1 degrees of freedom: the concept score is one
    draw, not a mean. The empirical p is (1 + #{|r - mean| >= |c - mean|}) / (N + 1).
    """
    r = np.asarray(randoms, dtype=np.float64)
    n = r.size
    if n < 2:
        return {
            "n_random": int(n),
            "t": None,
            "p": None,
            "p_empirical": None,
            "random_mean": float(r.mean()) if n else None,
            "random_sd": None,
        }
    mean, sd = float(r.mean()), float(r.std(ddof=1))
    if sd == 0:
        t = 0.0 if concept == mean else math.copysign(math.inf, concept - mean)
        p = 1.0 if concept == mean else 0.0
    else:
        t = (concept - mean) / (sd * math.sqrt(1 + 1 / n))
        p = float(2 * _st.t.sf(abs(t), df=n - 1))
    extreme = np.abs(r - mean) >= abs(concept - mean) - 1e-12
    return {
        "n_random": int(n),
        "t": float(t) if math.isfinite(t) else None,
        "p": p,
        "p_empirical": float((1 + extreme.sum()) / (n + 1)),
        "min_p_empirical": 1 / (n + 1),
        "random_mean": mean,
        "random_sd": sd,
    }


def layer_statistics(
    concept_auroc: float, fold_aurocs: Sequence[float], random_aurocs: Sequence[float]
) -> dict:
    """Everything but q for one layer (q needs all layers: see `add_qvalues`)."""
    r = np.asarray(random_aurocs, dtype=np.float64)
    r = r[np.isfinite(r)]
    n = int(r.size)
    if n == 0:
        return {
            "n_random": 0,
            "p": None,
            "p_test": None,
            "p_empirical": None,
            "t": None,
            "min_p": None,
            "z": None,
            "welch_t": None,
            "welch_p": None,
            "random_mean": None,
            "random_sd": None,
        }
    t, tp = welch_t(fold_aurocs, r)
    rt, rp = random_t_p(concept_auroc, r)
    p_emp = empirical_p(concept_auroc, r)
    return {
        "n_random": n,
        # the verdict's p: the t-test over the random distribution (empirical p with < 2)
        "p": rp if np.isfinite(rp) else p_emp,
        "p_test": P_TEST if np.isfinite(rp) else "empirical",
        "t": rt if np.isfinite(rt) else None,
        "p_empirical": p_emp,
        "min_p": min_p(n),
        "z": z_score(concept_auroc, r),
        "welch_t": t,
        "welch_p": tp,
        "random_mean": float(r.mean()),
        "random_sd": float(r.std(ddof=1)) if n > 1 else 0.0,
    }


# what a layer's line in a summary carries from `layer_statistics` + `add_qvalues`
SUMMARY_FIELDS = (
    "random_mean",
    "random_sd",
    "p",
    "p_test",
    "t",
    "p_empirical",
    "min_p",
    "q",
    "z",
    "welch_t",
    "welch_p",
    "significant",
    "verdict",
)


def summary_fields(stats: dict) -> dict:
    """A layer's statistics as the train and evaluate summaries list them."""
    return {k: stats[k] for k in SUMMARY_FIELDS}


def is_significant(q: float | None, alpha: float) -> bool:
    """q <= alpha, tolerant of the rounding in p * m / rank (0.05000000000000001 is 0.05)."""
    return q is not None and q <= alpha * (1 + 1e-9)


def add_qvalues(
    per_layer: dict[str, dict],
    alpha: float,
    say: Callable[[dict, float], str] | None = None,
    record_alpha: bool = True,
) -> None:
    """BH q over the rows' `p` (in place): q, (alpha), significant and a verdict in words.

    `say` words the verdict (`verdict` for held-out AUROCs, `tcav_verdict` for TCAV scores).
    """
    say = say or verdict
    keys = list(per_layer)
    for k, q in zip(keys, qvalues([per_layer[k].get("p") for k in keys]), strict=True):
        s = per_layer[k]
        s["q"] = q
        if record_alpha:
            s["alpha"] = alpha
        s["significant"] = is_significant(q, alpha)
        s["verdict"] = say(s, alpha)


def verdict(s: dict, alpha: float) -> str:
    """One sentence a biologist can read: significant or not, and why."""
    if not s.get("n_random"):
        return "not tested: no random CAVs were trained (train.n_random is 0)"
    auc, p, q, n = s.get("auroc"), s["p"], s.get("q"), s["n_random"]
    head = (
        f"AUROC {auc:.3f} vs random {s['random_mean']:.3f} ± {s['random_sd']:.3f}"
        if auc is not None
        else "concept"
    )
    emp = s.get("p_empirical")
    floor = (
        f"; empirical p = {emp:.3g} (smallest possible with {n} random CAVs: {s['min_p']:.3g})"
        if emp is not None
        else f" (smallest possible with {n} random CAVs: {s['min_p']:.3g})"
    )
    what = "t-test p" if s.get("p_test", "").startswith("one-sided t") else "p"
    qtext = f"{q:.3g}" if q is not None else "n/a"
    if s.get("significant"):
        return f"significant: {head}; {what} = {p:.3g}, q = {qtext} <= {alpha}{floor}"
    reason = ""
    if s.get("p_test") == "empirical" and s["min_p"] > alpha:
        reason = (
            f"; with {n} random CAVs p cannot go below {s['min_p']:.3g} > {alpha}, "
            "raise train.n_random"
        )
    elif s.get("p_test") == "empirical" and p <= s["min_p"]:
        reason = (
            f"; p is at its minimum for {n} random CAVs but does not survive the "
            "correction across layers: raise train.n_random"
        )
    return f"not significant: {head}; {what} = {p:.3g}, q = {qtext} > {alpha}{floor}{reason}"


def tcav_verdict(row: dict, alpha: float) -> str:
    """One sentence on a layer's TCAV score vs the random CAVs' (q from `add_qvalues`)."""
    if not row.get("testable", True):
        return (
            "not testable: the target does not depend on the residue states at this layer "
            "(after the last layer a classification head reads only the BOS token)"
        )
    if row.get("p") is None:
        return "not tested: fewer than 2 random CAVs (raise train.n_random)"
    head = (
        f"TCAV {row['score']:.2f} vs random {row['random_mean']:.2f} ± "
        f"{row['random_sd']:.2f}; p = {row['p']:.3g}, q = {row['q']:.3g}"
    )
    return ("significant: " if row["significant"] else "not significant: ") + head


# ---------------------------------------------------------------------- weighted AUROC / AUPRC


class RankedScores:
    """Scores sorted once (descending, ties grouped) for fast weighted AUROC/AUPRC."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray):
        scores = np.asarray(scores, dtype=np.float64).ravel()
        self.labels = np.asarray(labels).astype(bool).ravel()
        order = np.argsort(-scores, kind="mergesort")
        s = scores[order]
        new_group = np.r_[True, s[1:] != s[:-1]]
        self.group = np.empty(len(s), dtype=np.int64)
        self.group[order] = np.cumsum(new_group) - 1  # group id per original example
        self.n_groups = int(new_group.sum())

    def metrics(self, weights: np.ndarray | None = None) -> tuple[float, float]:
        """(AUROC, average precision) with per-example weights (ties count half for AUROC)."""
        y = self.labels
        w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=np.float64)
        pos = np.bincount(self.group, weights=w * y, minlength=self.n_groups)
        neg = np.bincount(self.group, weights=w * ~y, minlength=self.n_groups)
        P, N = pos.sum(), neg.sum()
        if P <= 0 or N <= 0:
            return math.nan, math.nan
        neg_above = np.cumsum(neg) - neg  # negatives with a strictly higher score
        # AUROC = P(score_pos > score_neg) + 0.5 P(tie)
        auroc = float(np.sum(pos * (N - neg_above - 0.5 * neg)) / (P * N))
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = float(np.sum(pos / P * precision))
        return auroc, ap


def resample_proteins(
    rng: np.random.Generator, pos_g: np.ndarray, neg_g: np.ndarray, n_groups: int
) -> np.ndarray:
    """One bootstrap replicate as per-protein multiplicities: positives and negatives drawn
    with replacement apart (each replicate keeps the class mix of proteins)."""
    mult = np.zeros(n_groups)
    if pos_g.size:
        np.add.at(mult, rng.choice(pos_g, pos_g.size), 1.0)
    if neg_g.size:
        np.add.at(mult, rng.choice(neg_g, neg_g.size), 1.0)
    return mult


def bootstrap_ci(
    ranked: RankedScores,
    example_group: np.ndarray,
    group_is_pos: np.ndarray,
    n_boot: int,
    alpha: float,
    seed: int,
) -> dict:
    """Percentile CIs of AUROC and AUPRC, resampling whole proteins (groups) with replacement,
    positives and negatives separately (each replicate keeps the class mix of proteins)."""
    example_group = np.asarray(example_group, dtype=np.int64)
    group_is_pos = np.asarray(group_is_pos, dtype=bool)
    n_groups = group_is_pos.size
    pos_g, neg_g = np.nonzero(group_is_pos)[0], np.nonzero(~group_is_pos)[0]
    rng = np.random.default_rng(seed)
    aucs, aps = [], []
    for _ in range(n_boot):
        mult = resample_proteins(rng, pos_g, neg_g, n_groups)
        auc, ap = ranked.metrics(mult[example_group])
        if np.isfinite(auc):
            aucs.append(auc)
            aps.append(ap)
    if not aucs:
        return {"n_boot": 0, "auroc_ci": [None, None], "auprc_ci": [None, None]}
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    return {
        "n_boot": len(aucs),
        "level": 1 - alpha,
        "resampled": "proteins, within each class",
        "auroc_ci": [float(np.percentile(aucs, lo)), float(np.percentile(aucs, hi))],
        "auprc_ci": [float(np.percentile(aps, lo)), float(np.percentile(aps, hi))],
        "auroc_sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
    }
