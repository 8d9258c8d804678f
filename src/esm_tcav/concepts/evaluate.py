"""The `evaluate` stage: held-out quality of the trained CAVs, with intervals and figures.

Reads the newest trained version (hashes, model fingerprint and hidden size verified), rebuilds
the held-out examples from the split recorded in the artifact, and scores the concept CAV and
every random CAV on them. AUROC and AUPRC get percentile bootstrap intervals that resample
whole proteins (a protein's residues are not independent, so resampling residues would give
intervals far too narrow). Nothing is retrained. Writes `evaluations/<model>/`:
`projection_eval.json` (every number), `roc_pr_curves.png`, `auroc_by_layer.png` and
`L{n}_random_comparison.png`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from esm_tcav.concepts.artifacts import load_concept, load_summary
from esm_tcav.concepts.stats import (
    RankedScores,
    add_qvalues,
    bootstrap_ci,
    layer_statistics,
    summary_fields,
)
from esm_tcav.concepts.train import (
    Examples,
    all_residue_examples,
    matches_inputs,
    needs_projections,
    plan_examples,
    project_residues,
)
from esm_tcav.engine.context import StageContext
from esm_tcav.errors import ArtifactError
from esm_tcav.io.files import atomic_write_json
from esm_tcav.io.plots import plot_auroc_by_layer, plot_random_comparison, plot_roc_pr
from esm_tcav.ui import iter_progress

log = logging.getLogger("esm_tcav.concepts.evaluate")

CURVE_POINTS = 300


def _thin(*arrays: np.ndarray, n: int = CURVE_POINTS) -> list[list[float]]:
    """Keep at most n points of a curve (evenly spaced along it, ends kept)."""
    size = len(arrays[0])
    idx = np.unique(np.linspace(0, size - 1, min(n, size)).round().astype(int))
    return [np.asarray(a, dtype=float)[idx].round(5).tolist() for a in arrays]


def curves(scores: np.ndarray, labels: np.ndarray) -> dict:
    y = np.asarray(labels).astype(int)
    fpr, tpr, _ = roc_curve(y, scores)
    precision, recall, _ = precision_recall_curve(y, scores)
    fpr, tpr = _thin(fpr, tpr)
    precision, recall = _thin(precision, recall)
    return {
        "fpr": fpr,
        "tpr": tpr,
        "precision": precision,
        "recall": recall,
        "prevalence": float(y.mean()),
    }


def measure(examples: Examples, scores: np.ndarray, n_boot: int, alpha: float, seed: int) -> dict:
    """AUROC, AUPRC and their protein-bootstrap intervals for one score vector."""
    ranked = RankedScores(scores, examples.y)
    auroc, auprc = ranked.metrics()
    out = {
        "unit": examples.kind,
        "examples": len(examples),
        "positive": int(examples.y.sum()),
        "proteins": len(examples.proteins),
        "auroc": auroc,
        "auprc": auprc,
    }
    out.update(bootstrap_ci(ranked, examples.prot, examples.protein_is_pos, n_boot, alpha, seed))
    return out


def _test_proteins(ctx: StageContext, split: dict, where: Path):
    by_id = {p.id: p for p in ctx.dataset.proteins}
    parts = []
    for key in ("positives", "negatives"):
        ids = split.get("test", {}).get(key, [])
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ArtifactError(
                f"{where}: held-out protein {missing[0]!r} of the trained split is not in the "
                f"current data ({len(missing)} missing); evaluate with the data it was trained "
                "on, or retrain with `esm-tcav train`"
            )
        parts.append([by_id[i] for i in ids])
    return parts[0], parts[1]


def run_evaluate(ctx: StageContext) -> dict:
    """Evaluate the newest trained version of every layer; returns a JSON-able summary."""
    cfg = ctx.cfg
    ev = cfg.evaluate
    model = ctx.model_name
    summary = load_summary(ctx.out, model)
    version = summary["version"]
    layers = sorted(int(k) for k in summary["layers"])
    arts = {
        layer: load_concept(
            ctx.out, model, layer, version, ctx.loaded.fingerprint, ctx.loaded.spec.hidden_size
        )
        for layer in layers
    }
    first = arts[layers[0]]
    granularity = first.provenance["granularity"]
    seed = int(first.provenance["seeds"]["seed"])
    test_pos, test_neg = _test_proteins(ctx, first.split, first.path / "split.json")
    ctx.ensure_embeddings(test_pos + test_neg)
    test_ex = plan_examples(granularity, test_pos, test_neg, cfg.train.residue_cap, seed, test=True)
    residue_ex = None
    if granularity != "residue" and any(p.spans for p in test_pos):
        residue_ex = all_residue_examples(test_pos, test_neg)
    inputs_match = matches_inputs(
        ctx, version, "evaluate", "evaluating it on its own recorded held-out proteins"
    )

    # every layer's concept CAV and random CAVs, the directions the held-out residues are scored on
    directions = {
        n: np.stack([c.direction for c in [art.cav, *art.randoms]]) for n, art in arts.items()
    }
    source = ctx.store
    per_residue = test_ex.kind != "protein" or residue_ex is not None
    if per_residue and needs_projections(ctx, test_pos + test_neg):  # a training-sample store
        source = project_residues(ctx, [(test_pos + test_neg, directions)])
    out_dir = ctx.out / "evaluations" / model
    per_layer: dict[int, dict] = {}
    curve_data: dict[int, dict] = {}
    for layer in iter_progress(layers, "evaluate", "layers"):
        art = arts[layer]
        cavs = [art.cav, *art.randoms]
        D = directions[layer]
        b = np.array([c.bias for c in cavs])
        S = test_ex.score(source, layer, D, b)
        heldout = measure(test_ex, S[:, 0], ev.bootstrap, ev.alpha, seed)
        rand = [RankedScores(S[:, j], test_ex.y).metrics() for j in range(1, len(cavs))]
        r_auroc = [a for a, _ in rand]
        entry = {
            "layer": layer,
            "cav_path": str(art.path),
            "heldout": heldout,
            "randoms": {
                "n": len(art.randoms),
                "mode": art.metrics.get("randoms", {}).get("mode"),
                "aurocs": r_auroc,
                "auprcs": [p for _, p in rand],
            },
            "cv": art.metrics.get("cv", {}),
            "thresholds": art.thresholds,
        }
        if residue_ex is not None:
            rs = residue_ex.score(source, layer, D[:1], b[:1])[:, 0]
            entry["residue"] = measure(residue_ex, rs, ev.bootstrap, ev.alpha, seed)
        stats = layer_statistics(heldout["auroc"], entry["cv"].get("fold_aurocs", []), r_auroc)
        stats["auroc"] = heldout["auroc"]
        entry["stats"] = stats
        trained = art.metrics.get("heldout", {}).get("auroc")
        entry["matches_training"] = trained is not None and abs(trained - heldout["auroc"]) < 1e-4
        per_layer[layer] = entry
        curve_data[layer] = {
            **curves(S[:, 0], test_ex.y),
            "auroc": heldout["auroc"],
            "auprc": heldout["auprc"],
        }
        entry["curves"] = curve_data[layer]

    add_qvalues({k: v["stats"] for k, v in per_layer.items()}, ev.alpha)
    concept = summary.get("concept", "concept")
    files = [
        plot_roc_pr(
            curve_data, out_dir / "roc_pr_curves.png", f"{concept} — {model}, CAV v{version}"
        )
    ]
    files.append(
        plot_auroc_by_layer(
            layers,
            [per_layer[n]["heldout"]["auroc"] for n in layers],
            [per_layer[n]["heldout"]["auroc_ci"] for n in layers],
            [per_layer[n]["randoms"]["aurocs"] for n in layers],
            [per_layer[n]["stats"]["significant"] for n in layers],
            out_dir / "auroc_by_layer.png",
            f"{concept} — {model}",
        )
    )
    for n in layers:
        files.append(
            plot_random_comparison(
                n,
                per_layer[n]["heldout"]["auroc"],
                per_layer[n]["randoms"]["aurocs"],
                per_layer[n]["stats"],
                out_dir / f"L{n}_random_comparison.png",
            )
        )
    doc = {
        "concept": concept,
        "model": model,
        "fingerprint": ctx.loaded.fingerprint,
        "cav_version": version,
        "granularity": granularity,
        "inputs_match": inputs_match,
        "bootstrap": {
            "n": ev.bootstrap,
            "level": 1 - ev.alpha,
            "resampled": "proteins with replacement, positives and negatives apart",
        },
        "alpha": ev.alpha,
        # chosen at train time on the training proteins; evaluate only reports
        "best_layer": summary.get("best_layer"),
        "best_layer_chosen_by": summary.get("best_layer_chosen_by"),
        "sets": {
            "heldout, residue, randoms, stats": "held-out test proteins (reported only)",
            "thresholds, cv": "training proteins (out-of-fold), as stored at train time",
        },
        "layers": {str(n): v for n, v in per_layer.items()},
        "figures": [str(f) for f in files],
    }
    atomic_write_json(out_dir / "projection_eval.json", doc)

    result_layers = {}
    for n, v in per_layer.items():
        h, st = v["heldout"], v["stats"]
        method = v["thresholds"].get("default_method", cfg.thresholds.method)
        result_layers[str(n)] = {
            "auroc": h["auroc"],
            "auroc_ci": h["auroc_ci"],
            "auprc": h["auprc"],
            "auprc_ci": h["auprc_ci"],
            **summary_fields(st),
            "threshold": {
                "method": method,
                **{
                    k: v["thresholds"]["methods"][method][k]
                    for k in ("value", "precision", "recall", "f1", "fpr")
                },
            },
        }
        if "residue" in v:
            result_layers[str(n)]["residue_auroc"] = v["residue"]["auroc"]
            result_layers[str(n)]["residue_auroc_ci"] = v["residue"]["auroc_ci"]
    return {
        "concept": concept,
        "model": model,
        "cav_version": version,
        "granularity": granularity,
        "best_layer": doc["best_layer"],
        "inputs_match": inputs_match,
        "layers": result_layers,
        "evaluation": str(out_dir / "projection_eval.json"),
        "figures": doc["figures"],
    }
