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
the simplest setting (smaller window, shorter minimum, smaller gap). The grid's best replaces
`DEFAULT` only when it beats it by more than one protein-bootstrap standard error (the one-SE
rule): a concept with a handful of training proteins keeps the default, since the grid's best on
so few is mostly noise (measured on the multi-concept benchmark, see the README).

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
#: the setting a concept keeps unless its training proteins show another is better (see
#: `choose_decoding`): light smoothing, no fragments under 5 residues, 3-residue dips merged
DEFAULT = {"smoothing_window": 5, "min_span_length": 5, "merge_gap": 3}
CRITERION = (
    "symmetric per-domain IoU (harmonic mean of domain -> best span and span -> best domain "
    "IoU), ties by residue F1; the default setting is kept unless the best beats it by more "
    "than one protein-bootstrap standard error of the paired difference"
)
SOURCE = "out-of-fold CV scores of the training proteins"
BOOTSTRAP = 200


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average (a no-op for window 1): the one smoothing detect and scan use."""
    return moving_average(scores, window) if window > 1 else np.asarray(scores, np.float32)


def _per_protein(
    scores: Sequence[np.ndarray], truth: Sequence[Sequence], threshold: float, setting: dict
) -> np.ndarray:
    """[proteins, 7]: IoU sum and count of annotated domains (to their best span), the same of
    predicted spans (to their best domain), and residue tp, fp, fn, for one setting."""
    out = np.zeros((len(scores), 7))
    for i, (s, spans) in enumerate(zip(scores, truth, strict=True)):
        pred = scores_to_spans(s, threshold, setting["min_span_length"], setting["merge_gap"])
        dom = best_iou_per_domain(pred, spans)
        spn = best_iou_per_domain(spans, pred)
        c = residue_counts(pred, spans, len(s))
        out[i] = (sum(dom), len(dom), sum(spn), len(spn), c["tp"], c["fp"], c["fn"])
    return out


def _criteria(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(symmetric IoU, residue F1) from summed per-protein columns [..., 7]."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = np.where(totals[..., 1] > 0, totals[..., 0] / totals[..., 1], 0.0)
        prec = np.where(totals[..., 3] > 0, totals[..., 2] / totals[..., 3], 0.0)
        sym = np.where(rec + prec > 0, 2 * rec * prec / (rec + prec), 0.0)
        tp, fp, fn = totals[..., 4], totals[..., 5], totals[..., 6]
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return sym, f1


def choose_decoding(
    scores: Sequence[np.ndarray], truth: Sequence[Sequence], threshold: float, seed: int = 0
) -> dict:
    """The decoding setting for a concept, from (out-of-fold) per-protein training scores.

    `scores[i]` are protein i's raw residue scores, `truth[i]` its annotated spans (1-based,
    empty for a negative). The grid setting with the best `CRITERION` replaces `DEFAULT` only
    when it beats it by more than one standard error of the paired difference over
    `BOOTSTRAP` protein resamples: with four training proteins the grid's best is mostly noise
    and the default stays; with eighty, a real preference (single-residue sites, long domains)
    wins. Returns the setting, its criterion and F1, both candidates, and every grid point.
    """
    smoothed = {w: [smooth(s, w) for s in scores] for w in GRID["smoothing_window"]}
    settings = [
        dict(zip(DECODING_KEYS, combo, strict=True)) for combo in itertools.product(*GRID.values())
    ]
    per = np.stack(  # [settings, proteins, 7]
        [_per_protein(smoothed[st["smoothing_window"]], truth, threshold, st) for st in settings]
    )
    sym, f1 = _criteria(per.sum(axis=1))
    order = sorted(
        range(len(settings)),
        key=lambda k: (
            sym[k],
            f1[k],
            -settings[k]["smoothing_window"],
            -settings[k]["min_span_length"],
            -settings[k]["merge_gap"],
        ),
    )
    best, default = order[-1], settings.index(DEFAULT)
    se = 0.0
    if best != default and len(scores) > 1:
        rng = np.random.default_rng(seed)
        n = len(scores)
        draws = rng.integers(0, n, (BOOTSTRAP, n))
        weights = np.stack([np.bincount(d, minlength=n) for d in draws])
        boot = np.einsum("bp,spc->bsc", weights, per[[best, default]])
        bsym, _ = _criteria(boot)
        se = float(np.std(bsym[:, 0] - bsym[:, 1], ddof=1))
    gain = float(sym[best] - sym[default])
    chosen = best if gain > se else default
    rows = [
        {**st, "symmetric_iou": round(float(sym[k]), 6), "residue_f1": round(float(f1[k]), 6)}
        for k, st in enumerate(settings)
    ]
    return {
        **settings[chosen],
        "criterion": CRITERION,
        "symmetric_iou": rows[chosen]["symmetric_iou"],
        "residue_f1": rows[chosen]["residue_f1"],
        "best_on_grid": {**settings[best], "symmetric_iou": rows[best]["symmetric_iou"]},
        "default": {**DEFAULT, "symmetric_iou": rows[default]["symmetric_iou"]},
        "gain_over_default": round(gain, 6),
        "gain_se": round(se, 6),
        "kept_default": chosen == default,
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
