"""Shared by the benchmarks: the demo proteins and a peak-RSS reader."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from esm_tcav.io.proteins import Protein  # noqa: E402
from esm_tcav.io.readers import read_proteins  # noqa: E402

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def demo_proteins() -> list[Protein]:
    demo = ROOT / "data" / "demo"
    return read_proteins(demo / "zinc_fingers.jsonl") + read_proteins(demo / "negatives.fasta")


def synthetic_proteins(n: int, seed: int = 0) -> list[Protein]:
    """Random sequences with the demo set's length distribution (for memory scaling)."""
    lengths = [len(p.sequence) for p in demo_proteins()]
    rng = np.random.default_rng(seed)
    return [
        Protein(f"syn{i}", "".join(rng.choice(list(AMINO), size=int(rng.choice(lengths)))))
        for i in range(n)
    ]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
