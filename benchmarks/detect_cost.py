"""One-pass vs sliding-window detection on the same proteins with the same CAV.

    .venv/bin/python benchmarks/detect_cost.py [--config configs/demo.yaml] [--window 20]
        [--stride 5] [--layer N] [--max-proteins N] [--out results/benchmarks/detect_cost.json]

Both modes start from sequences (no stored states), use the same embedder settings, the same
CAV, minimum span length and merge gap, and run after a warm-up. One-pass uses the registry
threshold (as `esm-tcav detect`); sliding-window scores sit on another scale, so that mode gets
its own threshold, the same method calibrated on the sliding-window scores of training proteins
(as `esm-tcav detect --set detect.mode=sliding-window` does; not timed). Reported:

- wall time of each mode, their ratio, and the tokens each pushes through the model;
- agreement: Pearson r of the per-residue scores, residue-level F1 between the two span sets,
  and the share of spans of one mode matched (IoU ≥ 0.5) by a span of the other;
- the same windows scored from one-pass states (`one-pass, windowed`): the arithmetic of the
  sliding-window method on one forward pass, so what remains between it and the sliding-window
  mode is only the context each residue saw (whole protein vs a 20-residue window);
- F1 / mean IoU against the annotated spans for each mode, when there are annotations.

Trains the concept first when the run has no stored CAV (`esm-tcav train` reuses a stored one).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _windowed(raw: np.ndarray, window: int, stride: int) -> np.ndarray:
    """The sliding-window arithmetic on one-pass scores: window means, then per-residue means."""
    from esm_tcav.localize.detect import window_starts

    total, count = np.zeros(len(raw)), np.zeros(len(raw))
    for s in window_starts(len(raw), window, stride):
        seg = raw[s : s + window]
        total[s : s + len(seg)] += seg.mean()
        count[s : s + len(seg)] += 1
    return (total / count).astype(np.float32)


def _span_agreement(a: dict, b: dict, lengths: dict) -> dict:
    from esm_tcav.localize.spans import add_counts, prf_from_counts, residue_counts, span_iou

    counts: dict = {}
    matched_a = matched_b = n_a = n_b = 0
    for pid, length in lengths.items():
        counts = add_counts(counts, residue_counts(b[pid], a[pid], length))
        n_a += len(a[pid])
        n_b += len(b[pid])
        matched_a += sum(any(span_iou(x, y) >= 0.5 for y in b[pid]) for x in a[pid])
        matched_b += sum(any(span_iou(y, x) >= 0.5 for x in a[pid]) for y in b[pid])
    prf = prf_from_counts(counts)
    return {
        "residue_f1": prf["f1"],
        "spans_a": n_a,
        "spans_b": n_b,
        "a_matched_in_b": matched_a / n_a if n_a else None,
        "b_matched_in_a": matched_b / n_b if n_b else None,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--stride", type=int, default=5)
    ap.add_argument("--layer", type=int, default=None, help="default: detect.layer of the config")
    ap.add_argument(
        "--max-proteins", type=int, default=None, help="default: every held-out test protein"
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per mode, interleaved; the fastest counts (shared machines)",
    )
    ap.add_argument(
        "--calibration-proteins",
        type=int,
        default=30,
        help="training positives (and as many negatives) to calibrate the "
        "sliding-window threshold on",
    )
    ap.add_argument(
        "--published-proteins",
        type=int,
        default=6,
        help="proteins timed in the published style (one forward pass per window)",
    )
    ap.add_argument("--out", default=None, help="default: <output_dir>/benchmarks/detect_cost.json")
    args = ap.parse_args(argv)

    from esm_tcav.concepts.artifacts import latest_version
    from esm_tcav.config import load_config
    from esm_tcav.engine.embed import make_engine
    from esm_tcav.localize.detect import (
        calibrate_thresholds,
        calibration_set,
        iter_one_pass_scores,
        iter_sliding_window_scores,
        load_layer_concept,
        resolve_layer,
        smooth,
    )
    from esm_tcav.localize.spans import evaluate_spans, scores_to_spans
    from esm_tcav.run.context import RunContext

    overrides = {"detect.layer": args.layer} if args.layer is not None else {}
    ctx = RunContext(load_config(args.config, overrides))
    cfg, dc = ctx.cfg, ctx.cfg.detect
    if latest_version(ctx.out, ctx.model_name) is None:
        from esm_tcav.concepts.train import run_train

        print("no trained CAV in this run: training first", file=sys.stderr)
        run_train(ctx)
    layer = resolve_layer(ctx)
    concept = load_layer_concept(ctx, layer)
    cavs = {layer: concept.cav}
    pos, neg = ctx.dataset.part("test")
    proteins = pos + neg
    if args.max_proteins:
        proteins = pos[: args.max_proteins // 2] + neg[: args.max_proteins - args.max_proteins // 2]
    lengths = {p.id: len(p.sequence) for p in proteins}
    truth = {p.id: list(p.spans) for p in proteins if p.spans}
    negatives = [p.id for p in proteins if p in neg]
    embedder = make_engine(cfg, ctx.loaded, [layer])

    def spans_of(scores: dict, threshold: float = concept.threshold) -> dict:
        return {
            pid: scores_to_spans(s, threshold, dc.min_span_length, dc.merge_gap)
            for pid, s in scores.items()
        }

    calib, labels = calibration_set(ctx, args.calibration_proteins)
    t0 = time.perf_counter()
    thr_sliding = calibrate_thresholds(
        ctx, iter_sliding_window_scores(embedder, calib, cavs, args.window, args.stride), labels
    )[layer]
    t_calib = time.perf_counter() - t0
    thr_windowed = calibrate_thresholds(
        ctx,
        (
            (p, {layer: _windowed(s[layer], args.window, args.stride)})
            for p, s in iter_one_pass_scores(embedder, calib, cavs)
        ),
        labels,
    )[layer]

    # warm-up (allocator, kernels, first-call overheads) on a few proteins, both modes
    list(iter_one_pass_scores(embedder, proteins[:4], cavs))
    list(iter_sliding_window_scores(embedder, proteins[:2], cavs, args.window, args.stride))

    def run_one_pass():
        raw = {p.id: s[layer] for p, s in iter_one_pass_scores(embedder, proteins, cavs)}
        one = {pid: smooth(s, dc.smoothing_window) for pid, s in raw.items()}
        return raw, one, spans_of(one)

    def run_sliding():
        sliding = {
            p.id: s[layer]
            for p, s in iter_sliding_window_scores(
                embedder, proteins, cavs, args.window, args.stride
            )
        }
        return sliding, spans_of(sliding, thr_sliding)

    times: dict[str, list[float]] = {"one_pass": [], "sliding_window": []}
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        raw, one, one_spans = run_one_pass()
        times["one_pass"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sliding, sliding_spans = run_sliding()
        times["sliding_window"].append(time.perf_counter() - t0)
    t_one, t_sliding = min(times["one_pass"]), min(times["sliding_window"])

    # The published tool embeds every window in a forward pass of its own (batch size 1):
    # timed on a few proteins against one-pass on the same proteins.
    from esm_tcav.engine.forward import ForwardEngine

    subset = proteins[: args.published_proteins]
    one_by_one = ForwardEngine(
        ctx.loaded, [layer], toks_per_batch=1, window=max(args.window, 8), tile_overlap=0
    )
    t0 = time.perf_counter()
    list(iter_sliding_window_scores(one_by_one, subset, cavs, args.window, args.stride))
    t_published = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(iter_one_pass_scores(embedder, subset, cavs))
    t_one_subset = time.perf_counter() - t0

    windowed = {pid: _windowed(s, args.window, args.stride) for pid, s in raw.items()}
    windowed_spans = spans_of(windowed, thr_windowed)

    from esm_tcav.localize.detect import window_starts

    tok_one = sum(n + 2 for n in lengths.values())
    tok_sliding = sum(
        min(args.window, n) + 2
        for n in lengths.values()
        for _ in window_starts(n, args.window, args.stride)
    )

    def cat(d: dict) -> np.ndarray:
        return np.concatenate([d[p.id] for p in proteins])

    def quality(spans: dict) -> dict | None:
        if not truth:
            return None
        m = evaluate_spans(spans, truth, lengths, negatives)
        return {
            "residue_f1": m["residue"]["f1"],
            "mean_iou": m["mean_iou"],
            "hit_rate_iou50": m["hit_rate_iou50"],
            "false_spans_per_kres": m["false_spans_per_kres"],
        }

    result = {
        "config": str(args.config),
        "model": ctx.model_name,
        "layer": layer,
        "device": str(ctx.loaded.device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "proteins": len(proteins),
        "residues": sum(lengths.values()),
        "window": args.window,
        "stride": args.stride,
        "threshold_method": cfg.thresholds.method,
        "thresholds": {
            "one_pass": concept.threshold,
            "sliding_window": thr_sliding,
            "one_pass_windowed": thr_windowed,
            "calibration_proteins": len(calib),
            "calibration_seconds_sliding": round(t_calib, 3),
        },
        "smoothing_window": dc.smoothing_window,
        "min_span_length": dc.min_span_length,
        "merge_gap": dc.merge_gap,
        "seconds": {"one_pass": round(t_one, 3), "sliding_window": round(t_sliding, 3)},
        "all_runs_seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "speedup": round(t_sliding / t_one, 2),
        "published_style": {
            "what": "sliding window with one forward pass per window (batch size 1), as the "
            "published method",
            "proteins": len(subset),
            "seconds": round(t_published, 3),
            "one_pass_seconds": round(t_one_subset, 3),
            "speedup": round(t_published / t_one_subset, 2),
        },
        "tokens": {
            "one_pass": tok_one,
            "sliding_window": tok_sliding,
            "ratio": round(tok_sliding / tok_one, 2),
        },
        "agreement": {
            "pearson_one_pass_vs_sliding": float(np.corrcoef(cat(one), cat(sliding))[0, 1]),
            "pearson_windowed_vs_sliding": float(np.corrcoef(cat(windowed), cat(sliding))[0, 1]),
            "spans_one_pass_vs_sliding": _span_agreement(one_spans, sliding_spans, lengths),
            "spans_windowed_vs_sliding": _span_agreement(windowed_spans, sliding_spans, lengths),
        },
        "vs_annotation": {
            "one_pass": quality(one_spans),
            "sliding_window": quality(sliding_spans),
            "one_pass_windowed": quality(windowed_spans),
        },
    }
    out = Path(args.out) if args.out else ctx.out / "benchmarks" / "detect_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(
        f"one-pass vs batched sliding windows: {result['speedup']}x faster "
        f"(token ratio {result['tokens']['ratio']}); vs one forward pass per window "
        f"(published style, {len(subset)} proteins): "
        f"{result['published_style']['speedup']}x faster"
    )
    return result


if __name__ == "__main__":
    main()
