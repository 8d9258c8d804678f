"""Time `train` on the demo: 20 random CAVs x 3 layers, against a naive baseline, same run.

    .venv/bin/python benchmarks/train_speed.py [--config configs/demo.yaml] [--randoms 20]

Fast path (what `esm-tcav train` does): per layer, standardization + PCA fitted once (they see
no labels) and shared by the CV folds, the concept CAV and every random CAV; random CAVs get one
fit each, no CV. Naive baseline: every random CAV trained like the concept, i.e. its own
standardization + PCA fit and its own k-fold CV. Both use the same classifier, the same data
and the same BLAS thread policy, so the ratio is the algorithmic saving. Embeddings come from
the demo's store (computed first if missing, not timed); artifacts go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from esm_tcav.concepts.artifacts import latest_version
from esm_tcav.concepts.cav import make_classifier
from esm_tcav.concepts.train import (
    _CV,
    _RANDOM,
    cross_validate,
    plan_examples,
    random_labels,
    resolve_granularity,
    run_train,
    train_layer,
)
from esm_tcav.config import load_config
from esm_tcav.run.context import RunContext

ROOT = Path(__file__).resolve().parents[1]


def naive_layer(ctx, layer: int, train_ex, n_random: int) -> None:
    """Each random CAV refits scaler + PCA and runs its own CV, as a first implementation would."""
    tc, seed = ctx.cfg.train, ctx.cfg.seed
    X = train_ex.materialize(ctx.store, layer)
    y = train_ex.y.astype(np.int64)

    def factory():
        return make_classifier(tc.classifier, pca_components=tc.pca_components, C=tc.C, seed=seed)

    def fit(rows, labels):
        return factory().fit(X[rows], labels)

    def decide(c, rows):
        return c.decision_function(X[rows])

    with threadpool_limits(1, user_api="blas"):
        cross_validate(fit, decide, y, train_ex.prot, tc.folds, seed + _CV)
        fit(np.arange(y.size), y)
        for i in range(n_random):
            rows, labels = random_labels(
                tc.random_mode, y, np.random.default_rng([seed, _RANDOM, layer, i])
            )
            cross_validate(fit, decide, labels, train_ex.prot[rows], tc.folds, seed + _CV)
            fit(rows, labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--randoms", type=int, default=20)
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()

    cfg = load_config(args.config, {"train.n_random": args.randoms})
    demo = RunContext(cfg)
    demo.ensure_embeddings(demo.dataset.proteins)  # not timed
    ds, layers = demo.dataset, demo.layers
    gran = resolve_granularity(cfg.train.granularity, ds.has_spans)
    print(
        f"CPU cores: {os.cpu_count()}, layers {layers}, {args.randoms} random CAVs/layer, "
        f"granularity {gran}, {len(ds.proteins)} proteins"
    )

    # 1. the core training (examples -> CV -> concept -> randoms -> held-out scores)
    t = time.perf_counter()
    train_ex = plan_examples(gran, *ds.part("train"), cfg.train.residue_cap, cfg.seed)
    test_ex = plan_examples(gran, *ds.part("test"), cfg.train.residue_cap, cfg.seed, test=True)
    per_layer = {}
    for layer in layers:
        t1 = time.perf_counter()
        train_layer(
            demo.store,
            layer,
            train_ex,
            test_ex,
            test_ex if gran == "residue" else None,
            cfg,
            ds.concept,
            gran,
        )
        per_layer[layer] = round(time.perf_counter() - t1, 2)
    fast = time.perf_counter() - t
    print(f"fast path, train only:        {fast:6.2f} s  (per layer {per_layer})")

    # 2. the whole `train` stage, artifacts included, into a temporary folder: with today's
    # defaults, and (same run, same load on the CPU) with the work issue 11 added switched off
    # (no controls, no span-decoding grid, no Platt fit): the ratio is what those cost
    def stage_seconds(extra: dict, lean: bool = False) -> float:
        import esm_tcav.concepts.train as train_module

        saved = train_module.choose_decoding, train_module.fit_platt
        if lean:
            train_module.choose_decoding = lambda *a, **k: {}
            train_module.fit_platt = lambda *a, **k: {}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                over = {"train.n_random": args.randoms, "output_dir": tmp, **extra}
                tctx = RunContext(load_config(args.config, over))
                tctx.use_model(demo.loaded)
                tctx.use_store(demo.store)  # the demo's embeddings, not recomputed
                t = time.perf_counter()
                run_train(tctx, force=True)
                took = time.perf_counter() - t
                assert latest_version(Path(tmp), tctx.model_name) == 1
        finally:
            train_module.choose_decoding, train_module.fit_platt = saved
        return took

    stage = stage_seconds({})
    lean = stage_seconds({"train.controls": False}, lean=True)
    print(f"`train` stage with artifacts: {stage:6.2f} s  (target < 20 s)")
    print(
        f"same without controls, decoding grid and calibration: {lean:6.2f} s "
        f"(ratio {stage / lean:.2f}x)"
    )

    result = {
        "cpu_cores": os.cpu_count(),
        "layers": layers,
        "n_random": args.randoms,
        "fast_train_s": round(fast, 2),
        "train_stage_s": round(stage, 2),
        "train_stage_without_issue11_additions_s": round(lean, 2),
        "ratio_vs_without": round(stage / lean, 2),
        "target_s": 20,
        "under_target": stage < 20,
    }
    if not args.skip_naive:
        t = time.perf_counter()
        for layer in layers:
            naive_layer(demo, layer, train_ex, args.randoms)
        naive = time.perf_counter() - t
        print(
            f"naive baseline:               {naive:6.2f} s  (scaler+PCA refit and "
            f"{cfg.train.folds}-fold CV per random CAV)"
        )
        print(f"speed-up: {naive / fast:.1f}x")
        result.update(naive_s=round(naive, 2), speedup=round(naive / fast, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
