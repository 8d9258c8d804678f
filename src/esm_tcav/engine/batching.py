"""Grouping proteins into forward passes: token-budget batches, tiles for long proteins, stitching.

Why sorting by length: every row of a padded batch is within a few residues of the longest, so
padding stays small; packed batches waste nothing on padding and sorting still balances the work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tile_starts(length: int, window: int, overlap: int) -> list[int]:
    """0-based starts of overlapping tiles covering `length` residues; the last ends at length."""
    if length <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def stitch(length: int, tiles: dict[int, np.ndarray], window: int) -> np.ndarray:
    """Each residue takes its state from the tile where it is farthest from an edge."""
    starts = sorted(tiles)
    first = tiles[starts[0]]
    out = np.empty((length, first.shape[1]), dtype=first.dtype)
    pos = np.arange(length)
    best = np.full(length, -1)
    margin_best = np.full(length, -1)
    for s in starts:
        seg = pos[s : s + window]
        margin = np.minimum(seg - s, s + len(tiles[s]) - 1 - seg)
        better = margin > margin_best[seg]
        margin_best[seg[better]] = margin[better]
        best[seg[better]] = s
    for s in starts:
        rows = np.nonzero(best == s)[0]
        out[rows] = tiles[s][rows - s]
    return out


def release_heap() -> None:
    """Give freed heap pages back to the OS after a chunk (glibc only; a no-op elsewhere).

    Every batch allocates activations of a slightly different size; without a trim the heap's
    free fragments accumulate over a long scan and the peak RSS creeps up with the number of
    proteins even though nothing is kept.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


def padded_batches(lengths: Sequence[int], toks_per_batch: int) -> list[list[int]]:
    """Indices grouped longest first so that width x rows stays under the token budget.

    Sorting by length is what keeps padding small: every row of a batch is within a few
    residues of the longest one. Used by the forward engine and by TCAV's gradient batches.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in order:
        width = (lengths[batch[0]] if batch else lengths[i]) + 2
        if batch and width * (len(batch) + 1) > toks_per_batch:
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


def packed_batches(lengths: Sequence[int], toks_per_batch: int) -> list[list[int]]:
    """Indices grouped so that the summed tokens (residues + BOS + EOS) fill the budget.

    Packing wastes nothing on padding; sorting still helps the varlen kernel balance its work.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    batch: list[int] = []
    used = 0
    for i in order:
        need = lengths[i] + 2
        if batch and used + need > toks_per_batch:
            batches.append(batch)
            batch, used = [], 0
        batch.append(i)
        used += need
    if batch:
        batches.append(batch)
    return batches


def pack_rows(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int], np.ndarray]:
    """One packed row from the token ids of several pieces: the ids end to end, the cumulative
    bounds [0, n1, n1 + n2, ...] and each token's position within its own piece (rotary
    positions restart at every protein)."""
    lengths = np.array([len(r) for r in rows])
    cu_host = [0, *np.cumsum(lengths).tolist()]
    flat = np.concatenate(rows)
    positions = np.arange(len(flat)) - np.repeat(cu_host[:-1], lengths)
    return flat, cu_host, positions


def padding_fraction(lengths: Sequence[int], batches: list[list[int]], packed: bool) -> float:
    """Share of computed token slots that are padding (0 for packed batches)."""
    real = sum(lengths[i] + 2 for b in batches for i in b)
    if packed:
        return 0.0
    slots = sum((max(lengths[i] for i in b) + 2) * len(b) for b in batches)
    return 1.0 - real / slots if slots else 0.0
