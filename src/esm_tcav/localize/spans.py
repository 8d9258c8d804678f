"""Scores → spans and span metrics: re-exported from `concepts.spans`, where they live so that
`train` can choose each concept's span decoding on out-of-fold training scores (concepts sits
below localize in the layer order)."""

from esm_tcav.concepts.spans import (  # noqa: F401
    ScoredSpan,
    add_counts,
    best_iou_per_domain,
    domain_hit_rate,
    evaluate_spans,
    false_spans_per_kres,
    prf_from_counts,
    residue_counts,
    residue_prf,
    scores_to_spans,
    span_iou,
    spans_mask,
)
