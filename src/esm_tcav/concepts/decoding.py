"""Per-concept span decoding and probability calibration, chosen on out-of-fold training scores.

Span decoding (smoothing window, minimum span length, merge gap) turns per-residue scores into
spans. One fixed setting cannot suit 21-aa zinc fingers, 25-aa TM helices and 200-aa domains, so
`train` picks it per concept and layer from the small grid `GRID`, on the out-of-fold scores of
the training proteins (each protein scored by the CV fold model that never saw it), at the
layer's default threshold. The test proteins never enter the choice.

Criterion (`CRITERION`): symmetric per-domain IoU, the harmonic mean of
- recall side: mean over annotated domains of the IoU of their best-matching predicted span;
- precision side: mean over predicted spans (on positives and negatives) of the IoU of their
  best-matching annotated domain (0 for a span on a protein without the concept).
The recall side alone is the usual per-domain IoU but rewards calling many short fragments
(extra spans cost nothing); the precision side makes them cost. Ties go to residue F1, then to
the simplest setting (smaller window, shorter minimum, smaller gap).

Calibration (`fit_platt`): Platt scaling (a logistic fit of label on score) on the same out-of-fold
scores, so a residue's probability means the same across concepts; the raw projection stays the
score spans are called on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from esm_tcav.concepts.spans import best_iou_per_domain, residue_counts, scores_to_spans
from esm_tcav.engine.pooling import moving_average

GRID = {
    "smoothing_window": (1, 5, 11),
    "min_span_length": (1, 5, 10, 20),
    "merge_gap": (0, 3, 8),
}
DECODING_KEYS = tuple(GRID)
CRITERION = (
    "symmetric per-domain IoU (harmonic mean of domain -> best span and span -> best domain "
    "IoU), ties by residue F1"
)
SOURCE = "out-of-fold CV scores of the training proteins"


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average (a no-op for window 1): the one smoothing detect and scan use."""
    return moving_average(scores, window) if window > 1 else np.asarray(scores, np.float32)


def _evaluate(
    scores: Sequence[np.ndarray], truth: Sequence[Sequence], threshold: float, setting: dict
) -> tuple[float, float]:
    """(symmetric IoU, residue F1) of one decoding setting over proteins."""
    dom_ious, span_ious = [], []
    tp = fp = fn = 0
    for s, spans in zip(scores, truth, strict=True):
        pred = scores_to_spans(s, threshold, setting["min_span_length"], setting["merge_gap"])
        dom_ious.extend(best_iou_per_domain(pred, spans))
        span_ious.extend(best_iou_per_domain(spans, pred))
        c = residue_counts(pred, spans, len(s))
        tp, fp, fn = tp + c["tp"], fp + c["fp"], fn + c["fn"]
    rec = float(np.mean(dom_ious)) if dom_ious else 0.0
    prec = float(np.mean(span_ious)) if span_ious else 0.0
    sym = 2 * rec * prec / (rec + prec) if rec + prec else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return sym, f1


def choose_decoding(
    scores: Sequence[np.ndarray], truth: Sequence[Sequence], threshold: float
) -> dict:
    """The grid setting with the best `CRITERION` on these (out-of-fold) per-protein scores.

    `scores[i]` are protein i's raw residue scores, `truth[i]` its annotated spans (1-based,
    empty for a negative). Returns the setting, its criterion and F1, and every grid point.
    """
    smoothed = {w: [smooth(s, w) for s in scores] for w in GRID["smoothing_window"]}
    rows = []
    for w, m, g in itertools.product(*GRID.values()):
        setting = {"smoothing_window": w, "min_span_length": m, "merge_gap": g}
        sym, f1 = _evaluate(smoothed[w], truth, threshold, setting)
        rows.append({**setting, "symmetric_iou": round(sym, 6), "residue_f1": round(f1, 6)})
    best = max(
        rows,
        key=lambda r: (
            r["symmetric_iou"],
            r["residue_f1"],
            -r["smoothing_window"],
            -r["min_span_length"],
            -r["merge_gap"],
        ),
    )
    return {
        **{k: int(best[k]) for k in DECODING_KEYS},
        "criterion": CRITERION,
        "symmetric_iou": best["symmetric_iou"],
        "residue_f1": best["residue_f1"],
        "chosen_on": SOURCE,
        "proteins": len(scores),
        "grid": rows,
    }


def fit_platt(scores: np.ndarray, labels: np.ndarray, max_n: int = 200_000, seed: int = 0) -> dict:
    """Platt scaling P(concept | s) = 1 / (1 + exp(-(a s + b))), fitted on (out-of-fold) scores.

    At most `max_n` examples (a seeded draw) enter the fit: two parameters need no more.
    """
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).astype(int).ravel()
    if s.size > max_n:
        keep = np.random.default_rng(seed).choice(s.size, max_n, replace=False)
        s, y = s[keep], y[keep]
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(s[:, None], y)
    return {
        "method": "platt",
        "a": float(lr.coef_[0, 0]),
        "b": float(lr.intercept_[0]),
        "formula": "p = 1 / (1 + exp(-(a * score + b)))",
        "fitted_on": SOURCE,
        "n": int(s.size),
        "prevalence": float(y.mean()),
    }


def apply_platt(calibration: dict, scores: np.ndarray) -> np.ndarray:
    """Probabilities of raw scores under a stored Platt calibration."""
    z = calibration["a"] * np.asarray(scores, np.float64) + calibration["b"]
    return (1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))).astype(np.float32)


def decoding_of(thresholds: dict) -> dict:
    """The stored decoding settings of a thresholds.json (empty when trained before them)."""
    dec = thresholds.get("decoding") or {}
    return {k: int(dec[k]) for k in DECODING_KEYS if k in dec and not math.isnan(dec[k])}
