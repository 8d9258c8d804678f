"""Pool per-residue states (row i-1 = residue i) into one vector per protein or span."""

from __future__ import annotations

import numpy as np


def mean_pool(states: np.ndarray) -> np.ndarray:
    return np.asarray(states, dtype=np.float32).mean(axis=0)


def span_pool(states: np.ndarray, start: int, end: int) -> np.ndarray:
    """Mean over residues start..end, 1-based inclusive (UniProt coordinates)."""
    return np.asarray(states[start - 1 : end], dtype=np.float32).mean(axis=0)


def moving_average(scores: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average; equals scoring the mean-pooled window for a linear CAV."""
    if window <= 1 or len(scores) == 0:
        return np.asarray(scores, dtype=np.float32)
    window = min(window, len(scores))
    csum = np.concatenate([[0.0], np.cumsum(scores, dtype=np.float64)])
    half = window // 2
    idx = np.arange(len(scores))
    lo = np.clip(idx - half, 0, len(scores))
    hi = np.clip(lo + window, 0, len(scores))
    lo = np.clip(hi - window, 0, len(scores))
    return ((csum[hi] - csum[lo]) / (hi - lo)).astype(np.float32)
