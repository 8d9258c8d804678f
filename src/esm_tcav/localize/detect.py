"""`esm-tcav detect`: where along each protein the concept sits, residue by residue.

One-pass mode (default): one forward pass per protein (tiles for long ones) gives every residue's
state at the tapped layer; projecting it on the CAV gives a per-residue score, and a centered
moving average of width `smoothing_window` equals scoring the mean-pooled window of
full-context states (the CAV is linear), so window pooling costs no extra forward pass.
Sliding-window mode (the published method) re-embeds every window (`detect.window`,
`detect.stride`) as its own sequence, mean-pools it, scores it, and gives each residue the mean
score of the windows that cover it; it is kept to compare (see benchmarks/detect_cost.py).

Spans come from the threshold registry (`thresholds.method`) with the concept's span decoding
(smoothing window, minimum span length, merge gap: chosen per concept at train time on
out-of-fold training scores, see concepts/decoding.py); `detect.*` values override it.
Thresholds are calibrated on unsmoothed per-residue scores; a moving average keeps the scale,
so the same threshold applies to smoothed scores. Sliding-window scores are on another scale (a
20-residue window embedded alone is far from the full-context states the CAV
was fitted on; on the demo they sit about 3 units lower), so that mode calibrates its own
threshold, with the same method, on the sliding-window scores of training proteins (at most
`CALIBRATION_PROTEINS` positives with spans and as many negatives, a seeded draw).

Outputs, under ``<output_dir>/detections/<model>/<set>/L<layer>[-sliding]/`` where ``<set>`` is
``test`` (the held-out proteins of the dataset) or the ``--input`` file's name up to its first
dot (``input_test`` for a file called ``test.*``):

- ``spans.gff3``  GFF3, 1-based inclusive, one feature per span (score = mean span score)
- ``spans.tsv``   the same spans as a table
- ``spans.interproscan.tsv`` the same spans in InterProScan's TSV layout (no header; analysis
  ``esm-tcav``, signature = the concept), for pipelines that read InterProScan output
- ``scores.npy``  float32 per-residue scores (the smoothed scores spans were called on), all
  proteins concatenated; ``scores_index.json`` maps protein ID → [offset, length], so
  ``np.load(..., mmap_mode="r")[off:off + length]`` reads one protein without loading the rest
- ``proteins.tsv`` one row per protein (spans, domains, IoU, F1, max score)
- ``summary.json`` counts, parameters, metrics of the chosen layer and of every layer with a CAV
- ``heatmaps/*.png`` top/bottom proteins by IoU and a few random ones (when spans are annotated)

Everything is written into a temporary folder renamed into place at the end, so a failure leaves
the previous result (or nothing), never a half-written one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from esm_tcav.concepts.cav import CAV
from esm_tcav.concepts.concept import Concept
from esm_tcav.concepts.decoding import smooth
from esm_tcav.engine.context import StageContext
from esm_tcav.engine.embed import make_engine
from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.errors import ArtifactError, ConfigError, InputError
from esm_tcav.io.files import atomic_write_lines, atomic_write_text, replace_dir, sha256_file
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import read_proteins
from esm_tcav.io.writers import (
    gff3_lines,
    interproscan_tsv_lines,
    span_tsv_lines,
    write_table,
)
from esm_tcav.localize.spans import ScoredSpan, evaluate_spans, scores_to_spans

log = logging.getLogger("esm_tcav.localize.detect")

CALIBRATION_PROTEINS = 30
PROTEIN_COLUMNS = (
    "protein_id",
    "length",
    "role",
    "predicted_spans",
    "annotated_spans",
    "mean_iou",
    "residue_f1",
    "max_score",
)


# ---------------------------------------------------------------------- scoring engines


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """0-based window starts every `stride` residues; the last window ends at the last residue."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def iter_one_pass_scores(
    embedder: ForwardEngine,
    proteins: Iterable[Protein],
    cavs: dict[int, CAV],
    precision: str | None = None,
) -> Iterator[tuple[Protein, dict[int, np.ndarray]]]:
    """Raw per-residue scores from one forward pass per protein, for every layer's CAV.

    `precision` (the store's `embed.residue_dtype`) rounds the states as the store would first,
    so a protein's scores and spans do not depend on whether it was stored, and match the
    stored training scores its threshold and decoding were set on."""
    for prot, states in embedder.iter_residue_states(proteins):
        if precision is not None:
            states = {n: st.astype(precision) for n, st in states.items()}
        yield prot, {layer: cav.score_residues(states[layer]) for layer, cav in cavs.items()}


def iter_sliding_window_scores(
    embedder: ForwardEngine,
    proteins: Iterable[Protein],
    cavs: dict[int, CAV],
    window: int,
    stride: int,
    group: int = 64,
) -> Iterator[tuple[Protein, dict[int, np.ndarray]]]:
    """The published method: each window embedded as its own sequence, mean-pooled, scored.

    A residue's score is the mean score of the windows covering it. Proteins are processed
    `group` at a time so memory stays bounded however many windows there are.
    """
    proteins = iter(proteins)
    while True:
        chunk = [p for _, p in zip(range(group), proteins, strict=False)]
        if not chunk:
            return
        windows: list[Protein] = []
        where: dict[str, tuple[int, int, int]] = {}
        for k, prot in enumerate(chunk):
            for s in window_starts(len(prot.sequence), window, stride):
                wid = f"{k}:{s}"
                piece = prot.sequence[s : s + window]
                windows.append(Protein(wid, piece))
                where[wid] = (k, s, len(piece))
        sums = {
            k: {layer: np.zeros(len(p.sequence), np.float64) for layer in cavs}
            for k, p in enumerate(chunk)
        }
        counts = {k: np.zeros(len(p.sequence), np.float64) for k, p in enumerate(chunk)}
        for wprot, states in embedder.iter_residue_states(windows):
            k, s, n = where[wprot.id]
            counts[k][s : s + n] += 1
            for layer, cav in cavs.items():
                pooled = states[layer].mean(axis=0, dtype=np.float64)
                sums[k][layer][s : s + n] += float(cav.score_residues(pooled))
        for k, prot in enumerate(chunk):
            yield prot, {layer: (sums[k][layer] / counts[k]).astype(np.float32) for layer in cavs}


# ---------------------------------------------------------------------- inputs


def resolve_layer(ctx: StageContext) -> int:
    """`detect.layer`, or the best layer of the stored concept when it says 'best'."""
    wanted = ctx.cfg.detect.layer
    if wanted == "best":
        from esm_tcav.concepts.artifacts import best_layer

        return int(best_layer(ctx.out, ctx.model_name))
    layer = int(wanted)
    if not 0 <= layer <= ctx.loaded.num_layers:
        raise ConfigError(
            f"detect.layer {layer} is out of range 0..{ctx.loaded.num_layers} for "
            f"model {ctx.model_name}"
        )
    if layer not in ctx.layers:
        from esm_tcav.concepts.artifacts import latest_version

        if latest_version(ctx.out, ctx.model_name, layer) is None:
            raise ConfigError(
                f"detect.layer {layer} is not a tapped layer (model.layers: {ctx.layers}), so "
                f"no concept was trained there; use one of {ctx.layers} or best, or add {layer} "
                "to model.layers and train"
            )
    return layer


def load_layer_concept(ctx: StageContext, layer: int) -> Concept:
    """The stored concept of `layer` for this model, checked, with the config's decision rule
    (the threshold of `thresholds.method`, the span settings of `detect`)."""
    from esm_tcav.concepts.artifacts import load_concept

    hidden = ctx.loaded.spec.hidden_size
    art = load_concept(
        ctx.out, ctx.model_name, layer, fingerprint=ctx.loaded.fingerprint, hidden_size=hidden
    )
    if art.cav.hidden_size != hidden:
        raise ArtifactError(
            f"{art.path}: CAV of layer {layer} has hidden size {art.cav.hidden_size} but model "
            f"{ctx.model_name} has {hidden}; it was trained on another model; retrain with "
            "`esm-tcav train`"
        )
    method, dc = ctx.cfg.thresholds.method, ctx.cfg.detect
    concept = art.with_rule(method, dc.smoothing_window, dc.min_span_length, dc.merge_gap)
    stored = (art.thresholds.get("methods") or {}).get(method) or {}
    wanted = {
        "precision_at_recall": ctx.cfg.thresholds.precision_at_recall,
        "fpr": ctx.cfg.thresholds.fpr,
    }.get(method)
    if (
        wanted is not None
        and stored.get("target") is not None
        and abs(float(stored["target"]) - wanted) > 1e-9
    ):
        log.warning(
            "threshold %s of layer %d was calibrated for target %s, the config asks %s; "
            "retrain to recalibrate",
            method,
            layer,
            stored["target"],
            wanted,
        )
    return concept


def calibration_set(
    ctx: StageContext, cap: int = CALIBRATION_PROTEINS
) -> tuple[list[Protein], dict]:
    """A seeded draw of training proteins (positives with spans, negatives) and their labels."""
    pos, neg = ctx.dataset.part("train")
    pos = [p for p in pos if p.spans]
    if not pos or not neg:
        raise ConfigError(
            "sliding-window mode calibrates its threshold on training proteins with concept "
            "spans and negatives, and this dataset has none with spans; use detect.mode: one-pass"
        )
    rng = np.random.default_rng([ctx.cfg.seed, 7])
    pick = [
        sorted(rng.choice(len(group), min(cap, len(group)), replace=False).tolist())
        for group in (pos, neg)
    ]
    proteins = [pos[i] for i in pick[0]] + [neg[i] for i in pick[1]]
    labels = {
        p.id: p.residue_mask() if p in pos else np.zeros(len(p.sequence), bool) for p in proteins
    }
    return proteins, labels


def calibrate_thresholds(
    ctx, scored: Iterable[tuple[Protein, dict[int, np.ndarray]]], labels: dict
) -> dict[int, float]:
    """`thresholds.method` computed on the given per-residue scores of labelled proteins."""
    from esm_tcav.concepts.thresholds import compute_methods

    by_layer: dict[int, list[np.ndarray]] = {}
    y: list[np.ndarray] = []
    for prot, per_layer in scored:
        y.append(labels[prot.id])
        for n, s in per_layer.items():
            by_layer.setdefault(n, []).append(s)
    t = ctx.cfg.thresholds
    y_all = np.concatenate(y)
    return {
        n: float(
            compute_methods(np.concatenate(s), y_all, t.precision_at_recall, t.fpr)[t.method][
                "value"
            ]
        )
        for n, s in by_layer.items()
    }


def _concept_spans(ctx: StageContext, prot: Protein) -> list:
    names = ctx.cfg.data.span_names
    return [s for s in prot.spans if s.selected_by(names)]


def _gather(
    ctx: StageContext, input_path: Path | None
) -> tuple[list[Protein], dict, list[str], str]:
    """Proteins to scan, their ground-truth spans, the known negatives and the set's name."""
    if input_path is None:
        positives, negatives = ctx.dataset.part("test")
        proteins = positives + negatives
        truth = {p.id: list(p.spans) for p in positives if p.spans}
        return proteins, truth, [p.id for p in negatives], "test"
    input_path = Path(input_path)
    if not input_path.is_file():
        raise InputError(
            f"{input_path}: input file not found; give a FASTA, JSONL, TMbed or "
            "UniProt file with --input"
        )
    proteins = read_proteins(input_path)  # refuses duplicate IDs, naming both lines
    for p in proteins:  # a residue the model has no token for fails here, before any output
        ctx.loaded.check_sequence(p.sequence, f"{input_path}: record {p.id!r}")
    truth = {p.id: _concept_spans(ctx, p) for p in proteins}
    truth = {k: v for k, v in truth.items() if v}
    # Proteins without annotations count as negatives only when the file annotates some.
    negatives = [p.id for p in proteins if p.id not in truth] if truth else []
    return proteins, truth, negatives, input_set_name(input_path)


def _refuse_other_content(final: Path, sha: str) -> None:
    """Never replace the results of another input (the folder name carries a short hash; the
    summary the full one)."""
    try:
        have = json.loads((final / "summary.json").read_text()).get("input", {}).get("sha256")
    except (OSError, ValueError, AttributeError):
        return
    if have and have != sha:
        raise ArtifactError(
            f"{final}: holds the results of another input (sha256 {have[:12]}…, this one "
            f"{sha[:12]}…); rename the input file or move the old results away"
        )


def input_set_name(path: Path) -> str:
    """The results folder name of an input file: a readable name plus the first 12 hex digits
    of the sha256 of its content, so two inputs never share a folder (a/stop.fasta and
    b/stop.fasta differ) and rerunning the same content finds its own folder again."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).name.split(".")[0]).strip("._")
    return f"{readable or 'input'}-{sha256_file(Path(path))[:12]}"


# ---------------------------------------------------------------------- the stage


def run_detect(ctx: StageContext, input_path: Path | None = None) -> dict:
    """Per-residue scores, spans, files and metrics for the chosen layer (metrics for all)."""
    cfg = ctx.cfg
    dc = cfg.detect
    mode = dc.mode
    # 1. everything that can fail on bad input fails here, before anything is written
    layer = resolve_layer(ctx)
    chosen = load_layer_concept(ctx, layer)
    from esm_tcav.concepts.train import matches_inputs

    matches_inputs(ctx, chosen.version, "detect", f"detecting with its layer {layer} as stored")
    concepts = {layer: chosen}
    skipped: dict[int, str] = {}
    for other in ctx.layers:
        if other == layer:
            continue
        try:
            concepts[other] = load_layer_concept(ctx, other)
        except ArtifactError as exc:
            from esm_tcav.concepts.artifacts import latest_version

            if latest_version(ctx.out, ctx.model_name, other) is not None:
                raise  # a stored CAV that does not verify (tampered, other model): refuse
            skipped[other] = str(exc)
            log.warning("layer %d left out of the per-layer metrics: %s", other, exc)
    concepts = dict(sorted(concepts.items()))
    cavs = {n: c.cav for n, c in concepts.items()}
    proteins, truth, negatives, set_name = _gather(ctx, input_path)
    if not proteins:
        raise InputError(f"{input_path or 'test set'}: no proteins to scan")

    # 2. where the states come from: the store (the held-out set, embedded into it if missing;
    # an --input file only when all of it is stored or store.keep_inputs) or the forward pass
    # (a store keeping only a training sample, store.residue_states, unless it holds every
    # state of these proteins already)
    taps = mode == "one-pass" and cfg.embed.per_residue and all(n in ctx.layers for n in cavs)
    keep_inputs = input_path is not None and cfg.store.keep_inputs
    if keep_inputs or (input_path is None and ctx.residue_keep is True):
        from_store = taps
    else:  # proteins that are not the concept's data, or a sampled store: never stored now
        from_store = taps and not ctx.store.missing(proteins, sorted(cavs), residues=True)
    embedded_now = 0  # stored now (a forward-pass detect stores nothing)
    if from_store:
        # every residue state is read (store.keep_inputs: the inputs', whatever the store
        # keeps of the concept's own proteins)
        embedded_now = ctx.ensure_embeddings(proteins, keep=True)
        log.info(
            "detect: %d of %d proteins read from the store, %d embedded now",
            len(proteins) - embedded_now,
            len(proteins),
            embedded_now,
        )
        store = ctx.store

        def scored() -> Iterator[tuple[Protein, dict[int, np.ndarray]]]:
            for p in proteins:
                yield (
                    p,
                    {
                        n: cav.score_residues(store.residues(p.seq_hash, n))
                        for n, cav in cavs.items()
                    },
                )
    elif mode == "one-pass" and input_path is None and not isinstance(ctx.residue_keep, bool):
        # the held-out set of a store keeping a training sample: the projections train made in
        # this process when it has them (one forward pass otherwise)
        from esm_tcav.concepts.train import project_residues

        directions = {n: cav.direction[None] for n, cav in cavs.items()}
        projected = project_residues(ctx, [(proteins, directions)])

        def scored() -> Iterator[tuple[Protein, dict[int, np.ndarray]]]:
            for p in proteins:
                yield (
                    p,
                    {
                        n: projected.project(p.seq_hash, n, d)[:, 0] + np.float32(cavs[n].bias)
                        for n, d in directions.items()
                    },
                )
    else:
        embedder = make_engine(cfg, ctx.loaded, sorted(cavs))

        def scored() -> Iterator[tuple[Protein, dict[int, np.ndarray]]]:
            if mode == "one-pass":
                return iter_one_pass_scores(embedder, proteins, cavs, cfg.embed.residue_dtype)
            return iter_sliding_window_scores(embedder, proteins, cavs, dc.window, dc.stride)

    # span decoding: the concept's own (chosen on out-of-fold training scores), unless the
    # config sets a value; sliding-window scores are already window means
    if mode == "sliding-window":
        for c in concepts.values():
            c.smoothing_window = 1
    smoothing = concepts[layer].smoothing_window
    threshold_source = "registry (calibrated at train time on per-residue scores)"
    if mode == "sliding-window":
        calib, labels = calibration_set(ctx)
        found = calibrate_thresholds(
            ctx, iter_sliding_window_scores(embedder, calib, cavs, dc.window, dc.stride), labels
        )
        for n, value in found.items():
            log.info(
                "sliding-window threshold of layer %d: %.4g (registry, one-pass: %.4g)",
                n,
                value,
                concepts[n].threshold,
            )
            concepts[n].threshold = value
        threshold_source = (
            f"calibrated on the sliding-window scores of {len(calib)} training proteins"
        )

    final = (
        ctx.out
        / "detections"
        / ctx.model_name
        / set_name
        / (f"L{layer}" + ("-sliding" if mode == "sliding-window" else ""))
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        summary = _detect_into(
            ctx,
            tmp,
            proteins,
            truth,
            negatives,
            concepts,
            layer,
            scored,
            smoothing,
            set_name,
            mode,
            from_store,
        )
        summary["embedded_now"] = embedded_now
        summary["skipped_layers"] = {str(k): v for k, v in skipped.items()}
        summary["threshold_source"] = threshold_source
        summary["output"] = str(final)
        if input_path is not None:
            summary["input"] = {"path": str(input_path), "sha256": sha256_file(Path(input_path))}
            _refuse_other_content(final, summary["input"]["sha256"])
        atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=1))
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "detect: %d spans on %d proteins (layer %d) → %s",
        summary["spans"],
        summary["proteins"],
        layer,
        final,
    )
    return {k: v for k, v in summary.items() if k != "per_layer_detail"}


def _detect_into(
    ctx,
    tmp: Path,
    proteins: list[Protein],
    truth: dict,
    negatives: list[str],
    concepts: dict[int, Concept],
    layer: int,
    scored,
    smoothing: int,
    set_name: str,
    mode: str,
    from_store: bool,
) -> dict:
    cfg, dc = ctx.cfg, ctx.cfg.detect
    concept = cfg.data.concept
    chosen = concepts[layer]
    offsets, total = {}, 0
    for p in proteins:
        offsets[p.id] = (total, len(p.sequence))
        total += len(p.sequence)
    # filled in place, protein by protein (never held whole): it lives in the temporary folder
    # that replace_dir moves into place only when everything is written
    scores_mm = np.lib.format.open_memmap(
        tmp / "scores.npy", mode="w+", dtype=np.float32, shape=(total,)
    )
    predicted: dict[int, dict[str, list[ScoredSpan]]] = {n: {} for n in concepts}
    max_score: dict[str, float] = {}
    from esm_tcav.ui import progress_bar

    t0 = time.perf_counter()
    with progress_bar(len(proteins), f"detect ({mode})") as advance:
        for prot, by_layer in scored():
            for n, raw in by_layer.items():
                c = concepts[n]
                s = smooth(raw, c.smoothing_window)
                predicted[n][prot.id] = scores_to_spans(
                    s, c.threshold, c.min_span_length, c.merge_gap
                )
                if n == layer:
                    off, length = offsets[prot.id]
                    scores_mm[off : off + length] = s
                    max_score[prot.id] = float(s.max())
            advance(1, len(prot.sequence))
    elapsed = time.perf_counter() - t0
    scores_mm.flush()
    del scores_mm

    lengths = {p.id: len(p.sequence) for p in proteins}
    per_layer = {}
    if truth:
        for n in concepts:
            m = evaluate_spans(predicted[n], truth, lengths, negatives)
            per_layer[str(n)] = {k: v for k, v in m.items() if k != "per_protein"}
            per_layer[str(n)]["threshold"] = concepts[n].threshold
            if n == layer:
                metrics = m
    else:
        metrics = None

    spans = predicted[layer]
    rows = [(p.id, s) for p in proteins for s in spans[p.id]]
    method = cfg.thresholds.method
    threshold = chosen.threshold
    atomic_write_lines(
        tmp / "spans.gff3",
        gff3_lines(
            rows,
            concept,
            layer,
            threshold,
            method,
            mode,
            lengths=lengths,
            grade=chosen.grade,
            probability=chosen.probability
            if chosen.calibration is not None and mode == "one-pass"
            else None,
        ),
    )
    atomic_write_lines(
        tmp / "spans.tsv",
        span_tsv_lines(rows, concept, layer, threshold, method, grade=chosen.grade),
    )
    atomic_write_lines(
        tmp / "spans.interproscan.tsv",
        interproscan_tsv_lines(
            rows, {p.id: p.sequence for p in proteins}, concept, layer, time.strftime("%d-%m-%Y")
        ),
    )
    per_protein = metrics["per_protein"] if metrics else {}
    role = {**{pid: "negative" for pid in negatives}, **{pid: "positive" for pid in truth}}
    write_table(
        tmp / "proteins.tsv",
        PROTEIN_COLUMNS,
        (
            [
                p.id,
                len(p.sequence),
                role.get(p.id, "unannotated"),
                len(spans[p.id]),
                len(truth.get(p.id, [])),
                per_protein.get(p.id, {}).get("mean_iou"),
                per_protein.get(p.id, {}).get("f1"),
                max_score[p.id],
            ]
            for p in proteins
        ),
    )
    atomic_write_text(
        tmp / "scores_index.json",
        json.dumps(
            {
                "dtype": "float32",
                "layer": layer,
                "smoothing_window": smoothing,
                "mode": mode,
                "threshold": chosen.threshold,
                "method": method,
                "total_residues": total,
                "proteins": {pid: [off, length] for pid, (off, length) in offsets.items()},
            }
        ),
    )

    heatmaps: list[str] = []
    if metrics and (dc.heatmaps_top or dc.heatmaps_random):
        from esm_tcav.localize.heatmaps import select_proteins, write_heatmaps

        ious = {pid: row["mean_iou"] for pid, row in per_protein.items()}
        selection = select_proteins(ious, dc.heatmaps_top, dc.heatmaps_random, cfg.seed)
        mm = np.load(tmp / "scores.npy", mmap_mode="r")
        track = {pid: np.asarray(mm[offsets[pid][0] : sum(offsets[pid])]) for pid, _ in selection}
        heatmaps = write_heatmaps(
            tmp / "heatmaps",
            selection,
            track,
            chosen.threshold,
            spans,
            truth,
            ious,
            label=f"layer {layer}",
        )
        del mm

    n_res = total
    summary = {
        "model": ctx.model_name,
        "fingerprint": ctx.loaded.fingerprint,
        "concept": concept,
        "set": set_name,
        "mode": mode,
        "layer": layer,
        "cav_version": chosen.version,
        "threshold": chosen.threshold,
        "threshold_method": method,
        "smoothing_window": smoothing,
        "min_span_length": chosen.min_span_length,
        "merge_gap": chosen.merge_gap,
        "decoding_from": (
            "config (detect.*)"
            if any(
                getattr(dc, k) is not None
                for k in ("smoothing_window", "min_span_length", "merge_gap")
            )
            else "the concept (chosen on out-of-fold training scores)"
        ),
        "grade": chosen.grade,
        **({"window": dc.window, "stride": dc.stride} if mode == "sliding-window" else {}),
        "states_from": "store" if from_store else "forward pass",
        "proteins": len(proteins),
        "residues": n_res,
        "spans": len(rows),
        "proteins_with_spans": sum(1 for v in spans.values() if v),
        "seconds": round(elapsed, 3),
        "residues_per_second": round(n_res / elapsed, 1) if elapsed > 0 else None,
        "metrics": {k: v for k, v in metrics.items() if k != "per_protein"} if metrics else None,
        "per_layer": per_layer,
        "heatmaps": [f"heatmaps/{h}" for h in heatmaps],
        "files": [
            "spans.gff3",
            "spans.tsv",
            "spans.interproscan.tsv",
            "scores.npy",
            "scores_index.json",
            "proteins.tsv",
            "summary.json",
        ],
    }
    return summary
