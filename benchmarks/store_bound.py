"""Store size and stage times of a concept run on 200 vs 2,000 proteins: every residue state
kept (`store.residue_states: all`, the baseline) vs the training sample only (`sample`).

    .venv/bin/python benchmarks/store_bound.py [--small 200] [--large 2000] [--out DIR]

The concept is the demo's (100 zinc-finger proteins with finger spans, configs/demo.yaml);
the negatives are the demo's 100 and then distinct real proteins of data/benchmark (bindPredict,
then InterProScan 6 sequences) up to N proteins in all. Each (N, mode) runs
`esm-tcav run --steps embed,train,evaluate,detect` into a fresh folder with its own store.
Prints, per N: store MiB, seconds per stage, the run's peak RSS and the ratios sample / all;
and checks the two modes agree: every layer's held-out AUROC, CV AUROC and threshold within
1e-5 and the detected spans identical. Writes `store_bound.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from esm_tcav.io.files import atomic_write_json  # noqa: E402
from esm_tcav.io.proteins import Protein  # noqa: E402
from esm_tcav.io.readers import read_fasta, read_proteins  # noqa: E402
from esm_tcav.io.writers import write_fasta  # noqa: E402

STEPS = "embed,train,evaluate,detect"
MODES = ("all", "sample")


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _negatives(n: int) -> list[Protein]:
    demo = read_fasta(ROOT / "data" / "demo" / "negatives.fasta")
    bench = ROOT / "data" / "benchmark"
    seen = {p.sequence for p in demo}
    out = list(demo)
    for p in read_fasta(bench / "bindpredict.fasta") + read_fasta(bench / "interproscan.faa"):
        if len(out) >= n:
            break
        if p.sequence not in seen and "X" not in p.sequence:
            seen.add(p.sequence)
            out.append(Protein(p.id, p.sequence))
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct negatives available; ask for fewer")
    return out


def _positives() -> list[Protein]:
    return read_proteins(ROOT / "data" / "demo" / "zinc_fingers.jsonl")


def _run(out: Path, negatives: Path, mode: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "run.yaml"
    demo = (ROOT / "configs" / "demo.yaml").read_text()
    cfg.write_text(
        demo.replace("output_dir: ../results/demo", f"output_dir: {out / 'run'}")
        .replace("../data/demo/zinc_fingers.jsonl", str(ROOT / "data/demo/zinc_fingers.jsonl"))
        .replace("../data/demo/negatives.fasta", str(negatives))
    )
    cmd = [str(Path(sys.executable).parent / "esm-tcav"), "run", str(cfg), "--steps", STEPS]
    cmd += ["--set", f"store.residue_states={mode}", "--set", "detect.heatmaps_top=0"]
    cmd += ["--set", "detect.heatmaps_random=0", "--json"]
    t0 = time.perf_counter()
    with (out / "stdout.txt").open("w") as so, (out / "stderr.txt").open("w") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se)
        _, status, usage = os.wait4(proc.pid, 0)  # this run's own peak RSS
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(out / 'stderr.txt').read_text()[-2000:]}")
    result = json.loads((out / "stdout.txt").read_text())
    run = out / "run"
    summary = json.loads(next((run / "cavs").rglob("summary_v*.json")).read_text())
    return {
        "wall_s": round(wall, 1),
        "stage_s": {k: round(v, 1) for k, v in result["steps"].items()},
        "store_bytes": _bytes(run / "embeddings"),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "layers": {
            k: {"auroc": v["auroc"], "cv": v["cv_auroc_mean"], "thr": v["thresholds"]["f1_max"]}
            for k, v in summary["layers"].items()
        },
        "spans": sorted(p.read_text() for p in (run / "detections").rglob("spans.tsv")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/esm-tcav-store-bound"))
    args = ap.parse_args()
    out = args.out.resolve()
    rows = []
    for n in (args.small, args.large):
        negs = _negatives(n - 100)
        folder = out / str(n)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_fasta(folder / "negatives.fasta", negs)
        res = {mode: _run(folder / mode, folder / "negatives.fasta", mode) for mode in MODES}
        a, s = res["all"], res["sample"]
        worst = max(
            abs(a["layers"][k][m] - s["layers"][k][m]) for k in a["layers"] for m in ("auroc", "cv")
        )
        thr = max(
            abs(a["layers"][k]["thr"] - s["layers"][k]["thr"]) / max(1, abs(a["layers"][k]["thr"]))
            for k in a["layers"]
        )
        row = {
            "proteins": n,
            "residues": sum(len(p.sequence) for p in negs + _positives()),
            "all": {k: v for k, v in a.items() if k != "spans"},
            "sample": {k: v for k, v in s.items() if k != "spans"},
            "store_ratio": round(s["store_bytes"] / a["store_bytes"], 4),
            "wall_ratio": round(s["wall_s"] / a["wall_s"], 2),
            "largest_auroc_difference": worst,
            "largest_threshold_difference": thr,
            "spans_identical": a["spans"] == s["spans"],
        }
        rows.append(row)
        stages = ", ".join(f"{k} {a['stage_s'][k]:.1f}/{s['stage_s'][k]:.1f}" for k in a["stage_s"])
        print(
            f"{n} proteins: store {a['store_bytes'] / 2**20:.1f} MiB (all) vs "
            f"{s['store_bytes'] / 2**20:.1f} MiB (sample), x{row['store_ratio']:.3f}; wall "
            f"{a['wall_s']:.1f} s vs {s['wall_s']:.1f} s (x{row['wall_ratio']:.2f}; peak RSS "
            f"{a['peak_rss_mib']:.0f} vs {s['peak_rss_mib']:.0f} MiB; seconds "
            f"all/sample: {stages}); AUROC/CV within {worst:.1e}, thresholds within {thr:.1e}, "
            f"spans identical: {row['spans_identical']}",
            flush=True,
        )
    small, large = rows
    print(
        f"{args.large} vs {args.small} proteins: store x"
        f"{large['all']['store_bytes'] / small['all']['store_bytes']:.2f} (all) vs x"
        f"{large['sample']['store_bytes'] / small['sample']['store_bytes']:.2f} (sample)"
    )
    atomic_write_json(out / "store_bound.json", {"rows": rows})


if __name__ == "__main__":
    main()
