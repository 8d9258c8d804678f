"""Scan throughput on a GPU for an ESM-2 650M-sized model, and bfloat16 vs float32 agreement.

Written to run where a GPU is lent (it was NOT run when it was written: no GPU was available).
Without --model-path the model has ESM-2 650M's shapes (33 layers, hidden 1280, 20 heads,
intermediate 5120) with random weights: throughput does not depend on the weight values, and
nothing is downloaded. With --model-path (a Hugging Face folder or fair-esm .pt of
esm2_t33_650M_UR50D) the real weights are used.

Same proteins for every variant (synthetic, UniProt-like lengths: log-normal around 350
residues, some longer than the 1,022-residue window so tiling is exercised), 10 concepts on
layers 11/22/33 (one product on the device, only [tokens, 10] scores come back):

- padded float32 (reference, HF modules, SDPA with mask) on a subset
- padded bfloat16 (HF modules, length-sorted token-budget batches)
- packed bfloat16 (no padding, varlen flash attention, fused q/k/v)
- packed bfloat16 + torch.compile
- embedding alone, padded bfloat16 (`ForwardEngine` with layers: 3 layers' states to the host)
- gradient TCAV (never run on a GPU before): the packed pass in bfloat16 (varlen attention
  forward and backward; with a token-0 target also the last layer for token 0 alone) against
  the padded float32 pass on `--tcav-proteins` proteins, with two readout targets (the random
  model has no head): residues/s, gradient cosine and directional-derivative sign agreement

Reports tokens/s and residues/s, padding, peak GPU memory, and for bfloat16 vs float32 on the
subset: max |score difference| / score SD per concept and the fraction of residue calls
(score >= the concept's 90th-percentile threshold) that differ.

    python benchmarks/gpu_scan.py [--proteins 3000] [--toks-per-batch 16384,65536] \
        [--model-path DIR] [--out $OUT/gpu_scan.json]

One call (a few minutes on an H100/H200, compilation included) measures everything and writes
`benchmarks/results/gpu_scan.json` (or --out): every variant, the measured bf16 GEMM peak, MFU
per variant (forward FLOPs of the tapped blocks / time / measured peak), and a `summary` with
`device`, `model`, `residues_per_s` (best packed variant), `baseline_residues_per_s` (best padded
Hugging Face variant), `ratio`, `mfu` and the `commit`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from esm_tcav.concepts.cav import CAV  # noqa: E402
from esm_tcav.engine.forward import ForwardEngine, Projection, describe_device  # noqa: E402
from esm_tcav.io.proteins import Protein  # noqa: E402
from esm_tcav.models.esm2 import Esm2, esm2_config  # noqa: E402
from esm_tcav.models.loading import load_model  # noqa: E402
from esm_tcav.models.registry import get_spec  # noqa: E402

SHAPES = {  # registry entry, hidden, layers, heads, intermediate, concept layers
    "650M": ("esm2_t33_650M_UR50D", 1280, 33, 20, 5120, [11, 22, 33]),
    "8M": ("esm2_t6_8M_UR50D", 320, 6, 20, 1280, [2, 4, 6]),  # for a quick smoke run
}
AMINO = "ACDEFGHIKLMNPQRSTVWY"
LAYERS: list[int] = SHAPES["650M"][5]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def random_model(shape: str, device: str) -> Esm2:
    from transformers import EsmModel

    name, hidden, layers, heads, inter, _ = SHAPES[shape]
    spec = get_spec(name)
    cfg = esm2_config(len(spec.vocab), hidden, layers, heads, inter, 1026)
    torch.manual_seed(0)
    model = EsmModel(cfg, add_pooling_layer=False).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return Esm2(model, spec, spec.vocab, f"random-{shape}", f"random weights, {name} shapes")


def get_model(args) -> Esm2:
    if args.model_path:
        return load_model(
            SHAPES[args.shape][0], args.model_path, device=args.device, dtype="float32"
        )
    return random_model(args.shape, args.device)


def proteins(n: int, seed: int = 0) -> list[Protein]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(350), 0.6, n), 30, 2500).astype(int)
    return [
        Protein(f"p{i}", "".join(rng.choice(list(AMINO), int(length))))
        for i, length in enumerate(lengths)
    ]


def concepts(hidden: int, n: int = 10) -> list[CAV]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        d = rng.normal(size=hidden).astype(np.float32)
        out.append(CAV(f"c{i}", LAYERS[i % 3], d / np.linalg.norm(d), 0.0))
    return out


def timed(fn) -> tuple[float, object]:
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - t0, result


def run_engine(loaded, proj, prots, mode, tpb, compile_=False) -> dict:
    engine = ForwardEngine(loaded, projection=proj, toks_per_batch=tpb, mode=mode)
    if compile_:
        engine.packed = loaded.packed_encoder(compile=True)
    list(engine.score(prots[:16]))  # warm-up (and compilation)
    engine.stats = {"batches": 0, "token_slots": 0, "tokens": 0}
    secs, scores = timed(lambda: dict(engine.score(prots)))
    st = engine.stats
    return {
        "seconds": secs,
        "scores": scores,
        "tokens": st["tokens"],
        "padding_fraction": 1 - st["tokens"] / st["token_slots"],
        "batches": st["batches"],
        "peak_gpu_gib": peak_gib(),
    }


def matmul_peak_tflops(device: str, dtype=torch.bfloat16, n: int = 8192) -> float:
    """The measured dense-GEMM peak of this device (the MFU denominator), best of 5."""
    if not device.startswith("cuda"):
        n = 1024
        dtype = torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        secs, _ = timed(lambda: a @ b)
        best = min(best, secs)
    return 2 * n**3 / best / 1e12


def flops_per_protein(length: int, hidden: int, inter: int, layers: int) -> float:
    """Forward FLOPs of `layers` ESM-2 blocks on one protein of `length` residues (+BOS/EOS):
    q/k/v/out projections 8·H², MLP 4·H·I per token, attention scores and mixing 4·T·H."""
    t = length + 2
    return layers * t * (8 * hidden * hidden + 4 * hidden * inter + 4 * t * hidden)


def agreement(ref: dict, got: dict) -> dict:
    diffs, flips, total = [], 0, 0
    ref_all = np.concatenate([ref[i] for i in sorted(ref)])
    got_all = np.concatenate([got[i] for i in sorted(ref)])
    sd = ref_all.std(axis=0) + 1e-9
    thr = np.quantile(ref_all, 0.9, axis=0)
    diffs = (np.abs(got_all - ref_all).max(axis=0) / sd).tolist()
    flips = int(((got_all >= thr) != (ref_all >= thr)).sum())
    total = ref_all.size
    return {
        "max_abs_diff_over_sd_per_concept": [round(d, 4) for d in diffs],
        "call_flips": flips,
        "calls": total,
        "call_flip_fraction": flips / total,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proteins", type=int, default=3000)
    ap.add_argument("--check-proteins", type=int, default=200)
    ap.add_argument("--toks-per-batch", default="16384,65536")
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="650M")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--tcav-proteins", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(
            "no CUDA device: this benchmark measures the GPU path; run it on a GPU machine "
            "(--device cpu --shape 8M --proteins 20 only checks that the script runs)"
        )
    global LAYERS
    LAYERS = SHAPES[args.shape][5]
    loaded = get_model(args)
    prots = proteins(args.proteins)
    check = prots[: args.check_proteins]
    residues = sum(len(p.sequence) for p in prots)
    cavs = concepts(loaded.spec.hidden_size)
    proj = Projection.from_cavs(cavs, loaded.spec.hidden_size)
    _, hidden, _, _, inter, _ = SHAPES[args.shape]
    work = sum(
        flops_per_protein(min(len(p.sequence), 1022), hidden, inter, max(LAYERS)) for p in prots
    )
    peak = matmul_peak_tflops(args.device)
    report: dict = {
        "device": describe_device(args.device),
        "matmul_peak_tflops": round(peak, 1),
        "torch": torch.__version__,
        "model": loaded.source,
        "proteins": len(prots),
        "residues": residues,
        "concepts": len(cavs),
        "layers": LAYERS,
        "variants": {},
    }

    tcav_ref = tcav_gradients(loaded, prots[: args.tcav_proteins], "padded")  # float32
    ref = run_engine(loaded, proj, check, "padded", 16384)  # float32 reference (subset)
    report["variants"]["padded float32 (subset)"] = {
        "tokens_per_s": round(ref["tokens"] / ref["seconds"]),
        "proteins": len(check),
        "peak_gpu_gib": round(ref["peak_gpu_gib"], 2),
    }
    loaded.to(dtype=torch.bfloat16)
    for tpb in [int(x) for x in args.toks_per_batch.split(",")]:
        variants = [("padded bf16", "padded", False), ("packed bf16 varlen", "packed", False)]
        if not args.no_compile:
            variants.append(("packed bf16 varlen + compile", "packed", True))
        for name, mode, comp in variants:
            key = f"{name}, {tpb} tokens/batch"
            try:
                res = run_engine(loaded, proj, prots, mode, tpb, comp)
            except Exception as exc:  # report and go on: one failing variant is a result too
                report["variants"][key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                print(key, "failed:", exc, flush=True)
                continue
            sub = {i: res["scores"][i] for i in range(len(check))}
            report["variants"][key] = {
                "seconds": round(res["seconds"], 2),
                "tokens_per_s": round(res["tokens"] / res["seconds"]),
                "residues_per_s": round(residues / res["seconds"]),
                "proteins_per_s": round(len(prots) / res["seconds"], 1),
                "padding_fraction": round(res["padding_fraction"], 4),
                "batches": res["batches"],
                "peak_gpu_gib": round(res["peak_gpu_gib"], 2),
                "mfu": round(work / res["seconds"] / 1e12 / peak, 4),
                "bf16_vs_fp32": agreement(ref["scores"], sub),
            }
            print(key, json.dumps(report["variants"][key]), flush=True)
        emb = ForwardEngine(loaded, LAYERS, toks_per_batch=tpb)
        secs, _ = timed(lambda e=emb: sum(1 for _ in e.iter_residue_states(prots)))
        report["variants"][f"embedding alone bf16 (3 layers to host), {tpb} tokens/batch"] = {
            "seconds": round(secs, 2),
            "residues_per_s": round(residues / secs),
            "peak_gpu_gib": round(peak_gib(), 2),
        }
    report["tcav"] = tcav_check(loaded, prots[: args.tcav_proteins], tcav_ref)
    print("tcav", json.dumps(report["tcav"]), flush=True)
    report["summary"] = summarize(report)
    text = json.dumps(report, indent=1)
    print(text)
    out = Path(args.out or ROOT / "benchmarks" / "results" / "gpu_scan.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    s = report["summary"]
    print(
        f"{s['device']}: {s['residues_per_s']:,} residues/s ({s['best_variant']}), baseline "
        f"{s['baseline_residues_per_s']:,} (padded HF bf16): {s['ratio']:.2f}x, MFU {s['mfu']}"
    )


def _targets(hidden: int, device) -> dict:
    """Two TCAV targets on a headless model: a fixed random readout averaged over residues
    (every token's final state matters) and one of token 0 alone (as a classification head
    reads it: the packed pass then runs the last layer for token 0 only, queries fewer than
    keys in varlen attention)."""
    w = torch.from_numpy(np.random.default_rng(2).normal(size=hidden).astype(np.float32))
    w = w.to(device)

    def mean_readout(final, tokens, residues):
        r = residues.to(final.dtype)
        return ((final.float() @ w) * r).sum(1) / r.sum(1).clamp_min(1)

    def token0_readout(final, tokens, residues):
        return final[:, 0].float() @ w

    return {"mean over residues": (mean_readout, False), "token 0": (token0_readout, True)}


def tcav_gradients(loaded, prots: list[Protein], path: str) -> dict:
    """Summed gradients at every tapped layer for both targets ({target: {layer: [P, H]}}),
    through the padded pass or the packed one (what `esm-tcav tcav` runs), with seconds."""
    from esm_tcav.concepts.tcav import layer_gradients

    seqs = [p.sequence[: loaded.max_residues] for p in prots]
    cls = type(loaded)
    saved = cls.__dict__["head_reads_first_token"]
    out = {}
    for name, (target, first) in _targets(loaded.spec.hidden_size, loaded.device).items():
        # the headless random model: say whether the target reads token 0 alone, as a head would
        cls.head_reads_first_token = property(lambda self, f=first: f)
        try:
            packed = loaded.packed_encoder() if path == "packed" else None

            def grads(t=target, p=packed):
                return layer_gradients(loaded, seqs, LAYERS, t, p)

            secs, result = timed(grads)
            out[name] = {"grads": result, "seconds": secs, "residues": sum(map(len, seqs))}
        except Exception as exc:  # a failing path is a result too
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            cls.head_reads_first_token = saved
    return out


def tcav_check(loaded, prots: list[Protein], ref: dict) -> dict:
    """Gradient TCAV on the packed pass in the model's current dtype (bf16 on the GPU: varlen
    flash attention forward and backward) against the padded float32 pass: residues/s, and
    per layer the cosine of the summed gradients and the share of (protein, direction) pairs
    whose directional-derivative sign (what a TCAV score counts) agrees, over 50 random CAVs."""
    got = tcav_gradients(loaded, prots, "packed")
    dirs = np.random.default_rng(3).normal(size=(50, loaded.spec.hidden_size))
    out = {}
    for name, res in got.items():
        if "error" in res or "error" in ref[name]:
            out[name] = {"error": res.get("error") or ref[name]["error"]}
            continue
        row = {"residues_per_s": round(res["residues"] / res["seconds"]), "layers": {}}
        row["reference_residues_per_s"] = round(res["residues"] / ref[name]["seconds"])
        for layer in LAYERS:
            a, b = ref[name]["grads"][layer], res["grads"][layer]
            if not np.any(a):
                row["layers"][str(layer)] = {"zero_in_reference": True, "zero": not np.any(b)}
                continue
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
            signs = np.mean(np.sign(a @ dirs.T) == np.sign(b @ dirs.T))
            row["layers"][str(layer)] = {
                "min_cosine": round(float(cos.min()), 5),
                "sign_agreement": round(float(signs), 4),
            }
        out[name] = row
    return out


def summarize(report: dict) -> dict:
    """The headline: best packed variant vs the best padded Hugging Face variant."""
    import subprocess

    ok = {k: v for k, v in report["variants"].items() if "residues_per_s" in v and "mfu" in v}
    packed = {k: v for k, v in ok.items() if k.startswith("packed")}
    padded = {k: v for k, v in ok.items() if k.startswith("padded bf16")}
    best = max(packed, key=lambda k: packed[k]["residues_per_s"]) if packed else None
    base = max(padded, key=lambda k: padded[k]["residues_per_s"]) if padded else None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = None
    rps = packed[best]["residues_per_s"] if best else 0
    base_rps = padded[base]["residues_per_s"] if base else 0
    return {
        "device": report["device"],
        "model": report["model"],
        "residues_per_s": rps,
        "baseline_residues_per_s": base_rps,
        "ratio": rps / base_rps if base_rps else 0.0,
        "mfu": packed[best]["mfu"] if best else None,
        "best_variant": best,
        "commit": commit,
    }


if __name__ == "__main__":
    main()
