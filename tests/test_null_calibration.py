"""Calibration of the verdict's statistics: null concepts must be significant at most at α.

A null concept is random spans in real proteins (the demo's Swiss-Prot negatives, embedded by
the tiny random ESM-2 of conftest.py): spans of 12-30 residues placed uniformly around each
protein (a span that runs past the C-terminus continues at the N-terminus, so every residue is
equally likely to be labelled: no position signal). Each null concept is trained exactly as
`train` does (same planner, CV, random CAVs, held-out test, BH over layers); it counts as a false
positive when any layer is significant at α = 0.05. The measured rate is printed (`-s`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from esm_tcav.concepts.stats import add_qvalues
from esm_tcav.concepts.train import all_residue_examples, plan_examples, train_layer
from esm_tcav.config import config_from_dict
from esm_tcav.io.proteins import Protein, Span
from esm_tcav.io.readers import read_proteins
from esm_tcav.run.context import RunContext

ROOT = Path(__file__).resolve().parents[1]
N_NULL = 60
ALPHA = 0.05


def null_spans(rng: np.random.Generator, length: int) -> tuple[Span, ...]:
    """1-2 random spans of 12-30 residues, uniform coverage (wrapping past the C-terminus)."""
    mask = np.zeros(length, bool)
    for _ in range(int(rng.integers(1, 3))):
        n = int(rng.integers(12, 31))
        start = int(rng.integers(0, length))
        mask[(start + np.arange(n)) % length] = True
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return tuple(
        Span(int(a) + 1, int(b), "null") for a, b in zip(edges[::2], edges[1::2], strict=True)
    )


def run_null_concepts(ctx: RunContext, proteins: list[Protein], n: int, seed: int = 0) -> dict:
    """Train `n` null concepts on `proteins`; returns the false-positive rate and the p-values."""
    cfg = ctx.cfg
    hits, ps, ps_emp = 0, [], []
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        order = rng.permutation(len(proteins))
        half = len(order) // 2
        pos = [
            Protein(proteins[i].id, proteins[i].sequence, null_spans(rng, proteins[i].length))
            for i in order[:half]
        ]
        neg = [proteins[i] for i in order[half:]]
        n_tr_p, n_tr_n = int(0.7 * len(pos)), int(0.7 * len(neg))
        tr = plan_examples("residue", pos[:n_tr_p], neg[:n_tr_n], cfg.train.residue_cap, k)
        te = plan_examples("residue", pos[n_tr_p:], neg[n_tr_n:], 0, k, test=True)
        thr = all_residue_examples(pos[:n_tr_p], neg[:n_tr_n])
        per_layer = {}
        for layer in ctx.layers:
            res = train_layer(ctx.store, layer, tr, te, te, cfg, "null", "residue", thr)
            per_layer[layer] = res.stats
            ps.append(res.stats["p"])
            ps_emp.append(res.stats["p_empirical"])
        add_qvalues(per_layer, ALPHA)
        hits += any(s["significant"] for s in per_layer.values())
    return {"n": n, "fpr": hits / n, "p": ps, "p_empirical": ps_emp}


@pytest.fixture(scope="module")
def null_ctx(tmp_path_factory, tiny_hf_folder, tiny_registry):
    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path_factory.mktemp("null")),
            "model": {
                "name": "tiny_esm2",
                "path": str(tiny_hf_folder),
                "registry_file": str(tiny_registry),
                "layers": [1, 3],
            },
            "data": {"positives": "x", "negatives": "y"},
            "store": {"residue_states": "all"},  # no dataset to size the store by: keep all
            "train": {"pca_components": 16, "folds": 3, "residue_cap": 3000},
        }
    )
    ctx = RunContext(cfg)
    proteins = [
        p for p in read_proteins(ROOT / "data" / "demo" / "negatives.fasta") if p.length <= 400
    ][:60]
    ctx.ensure_embeddings(proteins)
    return ctx, proteins


def test_null_concepts_are_significant_at_most_at_alpha(null_ctx):
    ctx, proteins = null_ctx
    out = run_null_concepts(ctx, proteins, N_NULL)
    p = np.asarray(out["p"])
    print(
        f"\nnull concepts: {out['n']}, false-positive rate at alpha {ALPHA} (any layer, BH): "
        f"{out['fpr']:.3f}; per-layer t-test p < 0.05: {np.mean(p < 0.05):.3f}; "
        f"empirical p < 0.05: {np.mean(np.asarray(out['p_empirical']) < 0.05):.3f}"
    )
    assert out["n"] >= 50
    assert out["fpr"] <= ALPHA
