"""Choosing proteins: length-matched negatives from a background population, and a train/test
split that keeps near-duplicate proteins on one side (k-mer clusters).

Why length-matched: a CAV must not learn "long protein" when the positives are long; drawing each
negative to the length of a positive takes length out of the contrast. Why clusters: two
near-identical proteins on both sides of a split let a CAV score well by memory; grouping them
first makes the held-out number a held-out number.

The clustering is single linkage on shared k-mers (pure numpy/Python, no external tool): two
proteins are linked when at least ``min_shared`` of the shorter protein's distinct k-mers (k=5 by
default) also occur in the other. With k=5 over 20 amino acids, unrelated proteins share almost
no 5-mers; pairs above about 50% identity over most of their length share a large fraction. It is
a cheap stand-in for MMseqs2 clustering, not an identity threshold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from esm_tcav.io.proteins import Protein


def length_matched(
    pool: Sequence[Protein], targets: Sequence[Protein], n: int, seed: int
) -> list[Protein]:
    """`n` proteins of `pool`, each drawn to the length of a target (cycling through them).

    For every target (in a seeded order) the unused pool protein of nearest length is taken
    (ties broken by the seeded order), so the negatives' length distribution follows the
    positives'. Returned in pool order; fewer than `n` when the pool is smaller.
    """
    if n <= 0 or not pool or not targets:
        return []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    lengths = np.array([len(pool[i].sequence) for i in order], dtype=float)
    used = np.zeros(len(pool), dtype=bool)
    want = [len(targets[i].sequence) for i in rng.permutation(len(targets))]
    chosen: list[int] = []
    for k in range(min(n, len(pool))):
        gap = np.abs(lengths - want[k % len(want)])
        gap[used] = np.inf
        j = int(np.argmin(gap))
        used[j] = True
        chosen.append(int(order[j]))
    return [pool[i] for i in sorted(chosen)]


def kmer_clusters(proteins: Sequence[Protein], k: int = 5, min_shared: float = 0.5) -> list[int]:
    """Cluster label per protein: single linkage on the shared fraction of distinct k-mers."""
    kmers = [
        {p.sequence[i : i + k] for i in range(max(0, len(p.sequence) - k + 1))} for p in proteins
    ]
    index: dict[str, list[int]] = defaultdict(list)
    for i, ks in enumerate(kmers):
        for km in ks:
            index[km].append(i)
    parent = list(range(len(proteins)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, ks in enumerate(kmers):
        shared: dict[int, int] = defaultdict(int)
        for km in ks:
            for j in index[km]:
                if j > i:
                    shared[j] += 1
        for j, count in shared.items():
            if count >= min_shared * max(1, min(len(ks), len(kmers[j]))):
                parent[root(j)] = root(i)
    roots = [root(i) for i in range(len(proteins))]
    relabel = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return [relabel[r] for r in roots]


def group_split(ids: Sequence[str], groups: Sequence[int], fraction: float, seed: int) -> set[str]:
    """Held-out IDs: whole groups in a seeded order until `fraction` of the proteins is reached.

    Groups are ordered by their smallest ID first, so the result does not depend on input order.
    """
    members: dict[int, list[str]] = defaultdict(list)
    for pid, g in zip(ids, groups, strict=True):
        members[g].append(pid)
    keys = sorted(members, key=lambda g: min(members[g]))
    target = max(1, round(len(ids) * fraction)) if len(ids) > 1 else 0
    test: set[str] = set()
    for g in np.random.default_rng(seed).permutation(len(keys)):
        if len(test) >= target:
            break
        if len(test) + len(members[keys[g]]) > max(target, 1) * 1.5 and test:
            continue  # a huge cluster would overshoot; try the next one
        test.update(members[keys[g]])
    return test
