"""Wall time of `esm-tcav --help` and `esm-tcav models`: the CLI must start in under a second.

Why: every verb pays the start-up; before issue 13, `import esm_tcav` loaded torch, transformers
and scikit-learn (several seconds) even to print the help. Now those load only in the verbs
that need them.

    python benchmarks/cli_startup.py                       # this tree (src/ next to this file)
    python benchmarks/cli_startup.py --before /tmp/base/src  # and a tree to compare with

Prints the median and the best of ``--repeats`` runs per command and tree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = (["--help"], ["models"], ["--version"])


def wall_times(src: Path, args: list[str], repeats: int) -> list[float]:
    """Seconds per run of ``python -m esm_tcav ARGS`` with ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "esm_tcav", *args], env=env, check=True, capture_output=True
        )
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="src/ folder of the tree to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    trees = [("after", SRC)] + ([("before", opts.before)] if opts.before else [])
    print(f"{'tree':8s} {'command':12s} {'median s':>9s} {'best s':>7s}")
    for label, src in trees:
        for args in COMMANDS:
            if label == "before" and args == ["--version"]:
                continue  # the old CLI had no --version
            times = wall_times(src, args, opts.repeats)
            median, best = statistics.median(times), min(times)
            print(f"{label:8s} {' '.join(args):12s} {median:9.2f} {best:7.2f}")


if __name__ == "__main__":
    main()
