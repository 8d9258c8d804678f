"""Scores → spans, and spans compared with annotated domains. Pure functions, no I/O.

Coordinates are 1-based inclusive everywhere (as UniProt, Pfam and GFF3); inside numpy arrays
residue i is row i-1. A "span" argument may be a `sequences.Span`, a `ScoredSpan` or any
`(start, end, ...)` tuple, so the same metrics work on predictions and on annotations.

Metric definitions (kept here, in one place, because every number in a report comes from them):

- residue precision / recall / F1: every residue is one decision, predicted in a span or not,
  true in an annotated span or not; counts are summed over proteins (micro average) before the
  ratios are taken, so long proteins weigh more, as in per-residue benchmarks.
- IoU of two spans: shared residues / residues in either.
- per-domain IoU: for each annotated domain, the IoU of the best-matching predicted span. Two
  adjacent fingers merged into one predicted span therefore score about 0.5 each, which is the
  point: a merged prediction does not localize either finger.
- domain hit rate: fraction of annotated domains whose best IoU reaches `min_iou` (0.5 by
  default, the usual detection criterion); `min_iou=0` means "any overlap at all".
- false spans per 1,000 residues: predicted spans on proteins with no annotated domain (the
  negatives), per 1,000 of their residues.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np


class ScoredSpan(NamedTuple):
    """A detected span: 1-based inclusive start and end, and its mean per-residue score."""

    start: int
    end: int
    score: float

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _pair(span: Any) -> tuple[int, int]:
    if hasattr(span, "start") and hasattr(span, "end"):
        return int(span.start), int(span.end)
    return int(span[0]), int(span[1])


def _pairs(spans: Iterable[Any]) -> list[tuple[int, int]]:
    return [_pair(s) for s in spans]


# ------------------------------------------------------------------ scores to spans


def scores_to_spans(
    scores: np.ndarray, threshold: float, min_length: int = 1, merge_gap: int = 0
) -> list[ScoredSpan]:
    """Runs of residues scoring ≥ threshold, merged across short gaps, short ones dropped.

    Runs separated by at most `merge_gap` below-threshold residues become one span (the gap
    residues included); merging happens before the `min_length` filter, so two short halves of
    one domain split by a dip survive together. For C2H2 fingers (~21-23 aa joined by 5-7 aa
    linkers) `merge_gap` must stay below the linker length or neighbouring fingers fuse.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if min_length < 1 or merge_gap < 0:
        raise ValueError("min_length must be ≥ 1 and merge_gap ≥ 0")
    above = scores >= threshold
    if not above.any():
        return []
    padded = np.concatenate([[False], above, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    runs = [[int(s), int(e) - 1] for s, e in zip(edges[0::2], edges[1::2], strict=True)]
    merged = [runs[0]]
    for start, end in runs[1:]:
        if start - merged[-1][1] - 1 <= merge_gap:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    out = []
    for start, end in merged:
        if end - start + 1 >= min_length:
            out.append(ScoredSpan(start + 1, end + 1, float(scores[start : end + 1].mean())))
    return out


def spans_mask(spans: Iterable[Any], length: int) -> np.ndarray:
    """Boolean per-residue mask of the spans (row i-1 = residue i)."""
    mask = np.zeros(length, dtype=bool)
    for start, end in _pairs(spans):
        if start < 1 or end > length or start > end:
            raise ValueError(f"span {start}-{end} does not fit a protein of length {length}")
        mask[start - 1 : end] = True
    return mask


# ------------------------------------------------------------------ residue level


def residue_counts(pred_spans: Iterable[Any], true_spans: Iterable[Any], length: int) -> dict:
    """True/false positive and negative residue counts of one protein."""
    pred = spans_mask(pred_spans, length)
    true = spans_mask(true_spans, length)
    return {
        "tp": int((pred & true).sum()),
        "fp": int((pred & ~true).sum()),
        "fn": int((~pred & true).sum()),
        "tn": int((~pred & ~true).sum()),
    }


def prf_from_counts(counts: dict) -> dict:
    """Precision, recall and F1 from summed counts; 0 where a ratio is undefined."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {**counts, "precision": precision, "recall": recall, "f1": f1}


def residue_prf(pred_spans: Iterable[Any], true_spans: Iterable[Any], length: int) -> dict:
    """Residue-level precision, recall, F1 (and the counts) of one protein."""
    return prf_from_counts(residue_counts(pred_spans, true_spans, length))


def add_counts(total: dict, counts: dict) -> dict:
    """Sum two count dicts (micro averaging over proteins)."""
    return {k: total.get(k, 0) + counts[k] for k in ("tp", "fp", "fn", "tn")}


# ------------------------------------------------------------------ domain level


def span_iou(a: Any, b: Any) -> float:
    """Intersection over union of two 1-based inclusive spans."""
    (s1, e1), (s2, e2) = _pair(a), _pair(b)
    inter = min(e1, e2) - max(s1, s2) + 1
    if inter <= 0:
        return 0.0
    union = (e1 - s1 + 1) + (e2 - s2 + 1) - inter
    return inter / union


def best_iou_per_domain(pred_spans: Sequence[Any], true_spans: Sequence[Any]) -> list[float]:
    """For each annotated domain (in order), the IoU of its best-matching predicted span
    (`span_iou` over all pairs at once: decoding choice calls this thousands of times)."""
    true = np.array(_pairs(true_spans), dtype=np.int64).reshape(-1, 2)
    if not len(true):
        return []
    pred = np.array(_pairs(pred_spans), dtype=np.int64).reshape(-1, 2)
    if not len(pred):
        return [0.0] * len(true)
    ts, te = true[:, :1], true[:, 1:]
    ps, pe = pred[:, 0][None], pred[:, 1][None]
    inter = np.clip(np.minimum(te, pe) - np.maximum(ts, ps) + 1, 0, None)
    union = (te - ts + 1) + (pe - ps + 1) - inter
    return (inter / union).max(axis=1).astype(float).tolist()


def domain_hit_rate(
    pred_spans: Sequence[Any], true_spans: Sequence[Any], min_iou: float = 0.5
) -> float | None:
    """Fraction of domains hit: best IoU ≥ min_iou, or any overlap when min_iou is 0.

    None when there are no annotated domains (a rate of nothing is not 0).
    """
    ious = best_iou_per_domain(pred_spans, true_spans)
    if not ious:
        return None
    hits = [iou > 0 if min_iou <= 0 else iou >= min_iou for iou in ious]
    return float(np.mean(hits))


def false_spans_per_kres(negatives: Iterable[tuple[Sequence[Any], int]]) -> float | None:
    """Predicted spans per 1,000 residues over proteins without the concept.

    `negatives` yields (predicted spans, protein length) pairs; None when there are no residues.
    """
    n_spans, n_res = 0, 0
    for spans, length in negatives:
        n_spans += len(spans)
        n_res += int(length)
    return 1000.0 * n_spans / n_res if n_res else None


def evaluate_spans(
    predictions: dict[str, Sequence[Any]],
    truth: dict[str, Sequence[Any]],
    lengths: dict[str, int],
    negatives: Iterable[str] = (),
) -> dict:
    """All span metrics for a set of proteins.

    `truth` holds the annotated domains of the positives; `negatives` names proteins known to
    lack the concept (their residues all count as true negatives, their spans as false spans).
    Proteins in neither are ignored. Returns micro residue P/R/F1 over positives and negatives
    (`residue`), over positives alone (`residue_positives`), domain IoUs and hit rates, false
    spans per 1,000 negative residues, and `per_protein` rows (IoU, F1) for picking heatmaps.
    """
    negatives = [n for n in negatives if n not in truth]
    all_counts: dict = {}
    pos_counts: dict = {}
    per_protein: dict[str, dict] = {}
    domain_ious: list[float] = []
    hits50 = hits_any = 0
    for pid, true_spans in truth.items():
        pred = predictions.get(pid, [])
        counts = residue_counts(pred, true_spans, lengths[pid])
        all_counts = add_counts(all_counts, counts)
        pos_counts = add_counts(pos_counts, counts)
        ious = best_iou_per_domain(pred, true_spans)
        domain_ious.extend(ious)
        hits50 += sum(i >= 0.5 for i in ious)
        hits_any += sum(i > 0 for i in ious)
        per_protein[pid] = {
            "mean_iou": float(np.mean(ious)) if ious else None,
            "f1": prf_from_counts(counts)["f1"],
            "domains": len(true_spans),
            "predicted": len(pred),
        }
    for pid in negatives:
        counts = residue_counts(predictions.get(pid, []), [], lengths[pid])
        all_counts = add_counts(all_counts, counts)
    n_dom = len(domain_ious)
    return {
        "residue": prf_from_counts(all_counts) if all_counts else None,
        "residue_positives": prf_from_counts(pos_counts) if pos_counts else None,
        "mean_iou": float(np.mean(domain_ious)) if n_dom else None,
        "median_iou": float(np.median(domain_ious)) if n_dom else None,
        "domains": n_dom,
        "hit_rate_iou50": hits50 / n_dom if n_dom else None,
        "hit_rate_overlap": hits_any / n_dom if n_dom else None,
        "false_spans_per_kres": false_spans_per_kres(
            (predictions.get(pid, []), lengths[pid]) for pid in negatives
        ),
        "positives": len(truth),
        "negatives": len(negatives),
        "per_protein": per_protein,
    }
