"""The threshold registry: turn held-out CAV scores into a decision rule, three ways.

A residue (or protein) is called "concept" when its score >= the threshold's `value`. Methods:

- `f1_max`: the threshold with the highest F1 on the held-out scores;
- `precision_at_recall`: the best precision among thresholds whose recall >= the target
  (e.g. 0.90): "find nearly all fingers, as cleanly as possible";
- `fpr`: the lowest threshold whose false-positive rate <= the target (e.g. 0.05): "at most
  5% of non-concept residues called", the most recall under that bound.

Each entry records the metrics at its threshold so a user sees what the choice costs. Scores
are `CAV.score_residues` values (signed distance to the decision boundary in raw activation
units), the scale detection works on, so a threshold can be applied to any new protein.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from esm_tcav.errors import ArtifactError
from esm_tcav.io.files import read_json

METHODS = ("f1_max", "precision_at_recall", "fpr")
SCORE = "cav projection (signed distance, raw units)"


def sweep(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Confusion counts at every distinct score used as threshold (descending)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError("scores and labels differ in length")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    return {
        "threshold": s[last_of_tie],
        "tp": tp,
        "fp": fp,
        "pos": np.int64(y.sum()),
        "neg": np.int64((~y).sum()),
    }


def metrics_at(scores: np.ndarray, labels: np.ndarray, value: float) -> dict:
    """Precision, recall, F1, FPR and counts when calling score >= value."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    pred = scores >= value
    tp = int(np.sum(pred & labels))
    fp = int(np.sum(pred & ~labels))
    fn = int(np.sum(~pred & labels))
    tn = int(np.sum(~pred & ~labels))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def compute_methods(
    scores: np.ndarray, labels: np.ndarray, precision_at_recall: float = 0.90, fpr: float = 0.05
) -> dict[str, dict]:
    """The three thresholds with their metrics (see the module docstring for the rules)."""
    sw = sweep(scores, labels)
    if sw["pos"] == 0 or sw["neg"] == 0:
        raise ArtifactError(
            "thresholds need held-out examples of both classes; the test part "
            "has only one (add proteins or raise data.test_fraction)"
        )
    tp, fp = sw["tp"].astype(np.float64), sw["fp"].astype(np.float64)
    precision = tp / (tp + fp)
    recall = tp / sw["pos"]
    rate = fp / sw["neg"]
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall + 1e-300), 0.0
    )
    t = sw["threshold"]
    # f1_max: first (highest) threshold among the best F1 values
    i_f1 = int(np.argmax(f1))
    # precision_at_recall: recall grows as the threshold falls; best precision among ok ones
    ok = np.nonzero(recall >= precision_at_recall - 1e-12)[0]
    i_pr = int(ok[np.argmax(precision[ok])])
    # fpr: the lowest threshold still within the FPR bound; if none, above every score
    within = np.nonzero(rate <= fpr + 1e-12)[0]
    if len(within):
        v_fpr = float(t[within[-1]])
    else:
        v_fpr = float(np.nextafter(t[0], np.inf))
    out = {
        "f1_max": {"value": float(t[i_f1])},
        "precision_at_recall": {"target": precision_at_recall, "value": float(t[i_pr])},
        "fpr": {"target": fpr, "value": v_fpr},
    }
    for entry in out.values():
        entry.update(metrics_at(scores, labels, entry["value"]))
    return out


def build_thresholds(
    layer: int,
    granularity: str,
    scores: np.ndarray,
    labels: np.ndarray,
    precision_at_recall: float = 0.90,
    fpr: float = 0.05,
    default_method: str = "f1_max",
    level: str = "residue",
    source: str = "held-out test proteins",
) -> dict:
    """The `thresholds.json` document of one layer."""
    labels = np.asarray(labels).astype(bool)
    return {
        "layer": layer,
        "granularity": granularity,
        "score": SCORE,
        "level": level,
        "rule": "concept when score >= value",
        "computed_on": source,
        "n": int(labels.size),
        "n_positive": int(labels.sum()),
        "default_method": default_method,
        "methods": compute_methods(scores, labels, precision_at_recall, fpr),
    }


def get_threshold(thresholds: dict, method: str) -> float:
    """The value of one method; ArtifactError listing the available ones when it is absent."""
    methods = thresholds.get("methods", {})
    if method not in methods:
        raise ArtifactError(
            f"thresholds.json has no method {method!r}; available: "
            f"{', '.join(sorted(methods)) or 'none'}"
        )
    return float(methods[method]["value"])


def load_thresholds(path: Path) -> dict:
    doc = read_json(path)
    if not isinstance(doc, dict) or "methods" not in doc:
        raise ArtifactError(f"{path}: not a thresholds.json (no 'methods')")
    return doc
