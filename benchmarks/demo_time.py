"""Wall time of the whole demo (`esm-tcav run configs/demo.yaml`), cold and then warm.

The cold run starts from an empty results folder; the warm run repeats it on the same folder,
where embeddings and trained artifacts are reused (content-addressed), so the ratio shows what
reuse saves. Prints seconds per step from the run manifest.

    .venv/bin/python benchmarks/demo_time.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "esm_tcav",
            "run",
            str(ROOT / "configs" / "demo.yaml"),
            "--set",
            f"output_dir={out}",
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t0
    steps = json.loads((out / "run_manifest.json").read_text())["steps"]
    return seconds, {k: v["seconds"] for k, v in steps.items()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        cold, cold_steps = run(out)
        warm, warm_steps = run(out)
    print(f"{'step':10s} {'cold s':>8s} {'warm s':>8s}")
    for step in cold_steps:
        print(f"{step:10s} {cold_steps[step]:8.1f} {warm_steps.get(step, 0):8.1f}")
    print(f"{'total':10s} {cold:8.1f} {warm:8.1f}   (process wall time, model load included)")
    print(
        f"cold run under 2 minutes: {'yes' if cold < 120 else 'NO'}; warm/cold = {warm / cold:.2f}"
    )


if __name__ == "__main__":
    main()
