"""Store size and detect time for `detect --input` of 200 vs 2,000 proteins.

    .venv/bin/python benchmarks/store_growth.py [--small 200] [--large 2000] [--out DIR]

One trained demo concept (configs/demo.yaml: embed + train once, into `--out`), then four
`detect --input` calls, interleaved, each against a copy of the run's store as it was after
training:
- default (`store.keep_inputs: false`): input proteins are scored from the forward pass, nothing
  is stored;
- baseline (`store.keep_inputs: true`, what detect did before): their per-residue states go into
  the store first, then are read back.

Inputs: the first N distinct sequences of data/benchmark (bindPredict, then InterProScan 6
proteins), so the large input holds real proteins of realistic lengths. Prints, per N: store
bytes after the call, the growth over the trained store, detect seconds, and the ratios; the
spans of the two modes must be identical (checked, printed). Writes `store_growth.json`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from esm_tcav.config import load_config  # noqa: E402
from esm_tcav.io.files import atomic_write_json  # noqa: E402
from esm_tcav.io.proteins import Protein  # noqa: E402
from esm_tcav.io.readers import read_fasta  # noqa: E402
from esm_tcav.io.writers import write_fasta  # noqa: E402
from esm_tcav.localize.detect import run_detect  # noqa: E402
from esm_tcav.run.context import RunContext  # noqa: E402


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _inputs(n: int) -> list[Protein]:
    data = ROOT / "data" / "benchmark"
    seen, out = set(), []
    for p in read_fasta(data / "bindpredict.fasta") + read_fasta(data / "interproscan.faa"):
        if p.sequence not in seen:
            seen.add(p.sequence)
            out.append(Protein(p.id, p.sequence))
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct proteins in data/benchmark; ask for fewer")
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/esm-tcav-store-growth"))
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = ROOT / "configs" / "demo.yaml"
    base = {"output_dir": str(out / "run"), "store.path": str(out / "trained_store")}
    ctx = RunContext(load_config(cfg_file, base))
    if not (out / "run" / "cavs").is_dir():
        from esm_tcav.concepts.train import run_train

        run_train(ctx)  # embeds the dataset into the store, then trains
    trained = _bytes(out / "trained_store")
    print(f"trained store (the demo's {len(ctx.dataset.proteins)} proteins, layers "
          f"{ctx.layers}): {trained / 2**20:.1f} MiB")  # fmt: skip

    rows = []
    for n in (args.small, args.large):
        fasta = out / f"input_{n}.fasta"
        prots = _inputs(n)
        write_fasta(fasta, prots)
        residues = sum(len(p.sequence) for p in prots)
        row = {"proteins": n, "residues": residues}
        spans = {}
        for mode, keep in (("default", False), ("keep_inputs", True)):
            store = out / f"store_{mode}_{n}"
            shutil.rmtree(store, ignore_errors=True)
            shutil.copytree(out / "trained_store", store)
            over = {**base, "store.path": str(store), "store.keep_inputs": keep,
                    "detect.heatmaps_top": 0, "detect.heatmaps_random": 0}  # fmt: skip
            t0 = time.perf_counter()
            summary = run_detect(RunContext(load_config(cfg_file, over)), input_path=fasta)
            row[f"{mode}_s"] = round(time.perf_counter() - t0, 2)
            row[f"{mode}_store_bytes"] = _bytes(store)
            row[f"{mode}_growth_bytes"] = _bytes(store) - trained
            row[f"{mode}_states_from"] = summary["states_from"]
            spans[mode] = (Path(summary["output"]) / "spans.tsv").read_text()
            shutil.rmtree(store)
        a, b = (
            {tuple(r.split("\t")[:3]) for r in spans[m].splitlines()[1:]}  # protein, start, end
            for m in ("default", "keep_inputs")
        )
        row["spans_identical"] = a == b
        row["span_rows"] = len(b)
        row["span_rows_differing"] = len(a ^ b)
        row["time_ratio_default_vs_keep"] = round(row["default_s"] / row["keep_inputs_s"], 3)
        rows.append(row)
        print(
            f"{n} proteins ({residues:,} residues): store growth default "
            f"{row['default_growth_bytes'] / 2**20:.2f} MiB vs keep_inputs "
            f"{row['keep_inputs_growth_bytes'] / 2**20:.1f} MiB; detect {row['default_s']:.1f} s "
            f"vs {row['keep_inputs_s']:.1f} s (ratio {row['time_ratio_default_vs_keep']:.2f}); "
            f"spans identical: {row['spans_identical']} ({row['span_rows_differing']} of "
            f"{row['span_rows']} rows differ)",
            flush=True,
        )
    small, large = rows
    growth = {
        m: large[f"{m}_growth_bytes"] / max(small[f"{m}_growth_bytes"], 1)
        for m in ("default", "keep_inputs")
    }
    print(
        f"{args.large} vs {args.small} proteins: store growth x{growth['default']:.2f} (default) "
        f"vs x{growth['keep_inputs']:.2f} (keep_inputs); trained store {trained / 2**20:.1f} MiB"
    )
    atomic_write_json(out / "store_growth.json", {"trained_store_bytes": trained, "rows": rows})


if __name__ == "__main__":
    main()
